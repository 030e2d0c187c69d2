"""EasyAnimate (`EasyAnimateTransformer3DModel`: EasyAnimate V5 / V5.1 text-to-video, inpainting
(image-to-video) and control): a flat list of `EasyAnimateTransformerBlock`s on one video token grid.

Each block calls its attention `attn1` (role "attn") with the video tokens as `hidden_states` and the
text as `encoder_hidden_states`. In an MMDiT block (the first `mmdit_layers` blocks: every block of
the published configs) the text has its own projections and q/k norms, the processor joins
[text; video] after the projections (as SD3's joint attention), and the feed-forward `ff` runs on the
video alone (the text has `txt_ff`), so it is a role. In a block past `mmdit_layers` the processor
joins [text; video] before the shared projections and one `ff` module runs twice (video, then text),
so it is not a role there. Token methods reduce the video tokens the attention receives in both
kinds; the text keeps every token. KV methods give an MMDiT block's `to_k`/`to_v` the downsampled
video (the text keys come from `add_k_proj`); on a model with blocks past `mmdit_layers` they are
refused at the call (their projections see text and video as one tensor). The adaLN modulation and
gates are applied by the block at full length.

Grid: the (B, C, F, H, W) latent (inpainting and control latents join as channels), F frames (no
temporal patch) of H x W over `config.patch_size`, flattened frame-major then row-major. Timestep: on
the 0-1000 scale as passed (the pipelines' flow-matching timesteps).

Rotary embedding: the model makes `image_rotary_emb` = (cos, sin), each (S_video, D) video rows only,
on the host each forward, and passes them to `attn1` by keyword; the processor rotates the video
part of queries and keys, (B, heads, S, D) after the q/k norms, pairs of adjacent channels in fp32
(`diffusers.models.embeddings.apply_rotary_emb`, CogVideoX's arithmetic). When a method changes the
tokens the attention sees, bigain takes the tables out of the call, moves them to the device once
per forward, and rotates the video rows of the q/k norm outputs itself with the rows of the tokens
actually present; the text rows are left as they are.

This is code, not a `BackboneSpec`: the grid is a video grid, the rotary layout is CogVideoX's
(video rows of a [text; video] norm output), and the feed-forward is a role only on MMDiT blocks.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-10 and 12-20 of V5.1-12B's 48. Windows stay within a
frame (st=1), as Wan.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement
from .cogvideox import CogVideoXBackbone

SHARED_PROJECTIONS = (
    "this EasyAnimate model has blocks past mmdit_layers, whose attention processor joins text and video "
    "before the key/value projections, so the video keys and values cannot be downsampled apart from the text"
)


def _mmdit(block: nn.Module) -> bool:
    return getattr(block.attn1, "add_q_proj", None) is not None


class EasyAnimateBackbone(Backbone):
    name = "easyanimate"
    classes = ("EasyAnimateTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 2-10 and 12-20 of EasyAnimate V5.1-12B's 48); "
        "windows within a frame"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = None  # Attention.forward takes it among **cross_attention_kwargs: keyword only

    def blocks(self, model: nn.Module) -> list[Block]:
        out = []
        for i, b in enumerate(model.transformer_blocks):
            roles = {"attn": b.attn1, "ff": b.ff} if _mmdit(b) else {"attn": b.attn1}
            out.append(Block(i, f"transformer_blocks.{i}", b, 1, roles, joint=True))
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the EasyAnimate transformer input must be a (B, C, F, H, W) latent")
        dev, host = as_timesteps(call_arg(args, kwargs, 1, "timestep"), x.shape[0], x.device)
        p = int(model.config.patch_size)
        f, h, w = (int(s) for s in x.shape[-3:])
        info = ForwardInfo(ops.Grid(f, h // p, w // p), dev, host)
        shared = cache.get("shared-projections")
        if shared is None:
            shared = cache["shared-projections"] = not all(_mmdit(b) for b in model.transformer_blocks)
        if shared:
            info.extra["kv_refused"] = SHARED_PROJECTIONS
        return info

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the pipelines choose the size; sample_width/height are not the latent's

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: a (B, heads, T + N, D) q/k norm output ([text; video] past mmdit_layers, the video alone
        # in MMDiT blocks): the N video rows are rotated as CogVideoX's
        return CogVideoXBackbone.rope(self, x, cos, sin, attn)
