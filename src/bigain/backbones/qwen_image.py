"""Qwen-Image (`QwenImageTransformer2DModel`): a flat list of dual-stream `QwenImageTransformerBlock`s
on one patch grid.

Each block keeps the image and the text in their own streams (own modulation, norms and
feed-forwards) and joins them only in its attention `attn` (role "attn"), which takes the image
tokens as `hidden_states` and the text as `encoder_hidden_states`, projects each with its own
weights and attends over [text, image] (text first) inside `QwenDoubleStreamAttnProcessor2_0`,
returning (image, text). The image feed-forward `img_mlp` is role "ff"; the text stream is never
touched. Token methods reduce the image tokens the attention gets; KV methods swap the image input
of `to_k` / `to_v` (the text keeps `add_k_proj` / `add_v_proj`).

Grid: the model takes packed (B, S, C) tokens (2x2 latent patches) and is told their grid by
`img_shapes`, a Python list of (frames, rows, columns) per sample, read without touching a device.
Calls with more than one image per sample (Qwen-Image-Edit: the target then its condition images in
one stream) or more than one frame (the layered model) are refused with a message. Timestep: the
pipelines pass t / 1000 (a sigma in [0, 1]), read as t = 1000 * sigma.

Rotary embedding: the model passes `image_rotary_emb` = (image rows, text rows), complex64 tables
of shape (S, head_dim / 2), and the processor multiplies queries and keys, viewed as complex pairs
of adjacent channels in float32, after the q/k norms on the (B, S, heads, head_dim) layout. When a
method changes the tokens the attention sees, bigain takes the tables out of the call and applies
them itself with the processor's arithmetic, using the rows of the tokens actually present (the text
rows to the text queries and keys, unchanged).

KV downsampling (ToDo, BiGain-TD) with a text padding mask (`encoder_hidden_states_mask`, passed by
the pipelines only when a prompt is padded) is refused at the call: the processor builds the joint
mask from the number of image queries, which no longer equals the number of image keys.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (blocks 3-12 and 15-25 of
Qwen-Image's 60 blocks: block j when floor(28 j / 60) is in {1-5, 7-11}).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement

KV_MASK_REFUSAL = (
    "the call passes encoder_hidden_states_mask (a padded prompt): Qwen-Image's attention processor "
    "builds the joint mask from the number of image queries, which differs from the number of "
    "downsampled image keys; pass unpadded prompts (the pipeline drops an all-ones mask) or use a token method"
)


def _image_shape(img_shapes: Any) -> tuple[int, int, int]:
    """The one (frames, rows, columns) of a call's `img_shapes` (as `QwenEmbedRope` reads them)."""
    if img_shapes is None:
        raise ValueError("bigain: the Qwen-Image transformer needs img_shapes (the token grid)")
    shapes = img_shapes
    if isinstance(shapes, list):
        first = shapes[0]
        if any(s != first for s in shapes):
            raise ValueError("bigain: Qwen-Image img_shapes differ between samples; the model itself uses the first")
        shapes = first
    if not isinstance(shapes, list):
        shapes = [shapes]
    if len(shapes) != 1:
        raise ValueError(
            f"bigain: the Qwen-Image call has {len(shapes)} images per sample in img_shapes (Qwen-Image-Edit: the "
            "target and its condition images in one stream); bigain supports one image per sample"
        )
    f, h, w = (int(v) for v in shapes[0])
    if f != 1:
        raise ValueError(f"bigain: the Qwen-Image call has {f} frames per sample in img_shapes; bigain supports one")
    return f, h, w


class QwenImageBackbone(Backbone):
    name = "qwen-image"
    classes = ("QwenImageTransformer2DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 3-12 and 15-25 of Qwen-Image's 60); image tokens only"
    )
    rope_kwarg = "image_rotary_emb"  # the block calls its attention by keywords only

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn, "ff": b.img_mlp}, joint=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 3:
            raise ValueError("bigain: the Qwen-Image transformer input must be packed (B, S, C) tokens")
        _, h, w = _image_shape(call_arg(args, kwargs, 4, "img_shapes"))
        t = call_arg(args, kwargs, 3, "timestep")
        dev, host = as_timesteps(t, x.shape[0], x.device, scale=1000.0)
        extra = {}
        if call_arg(args, kwargs, 2, "encoder_hidden_states_mask") is not None:
            extra["kv_refused"] = KV_MASK_REFUSAL
        return ForwardInfo(ops.Grid.image(h, w), dev, host, extra)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        img, txt = tables
        rows = torch.cat([txt, img], dim=0)  # [text; image], the joint order
        return rows.real, rows.imag

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        return ops.rope_complex(x, cos, sin)  # `apply_rotary_emb_qwen(x, freqs, use_real=False)`
