"""Qwen-Image 2.1 (`QwenImage21Transformer2DModel`): a flat list of single-stream
`QwenImage21TransformerBlock`s over one joint sequence. Not Qwen-Image's dual-stream block: text and
image share every projection, norm and feed-forward.

Layout: the model builds one sequence [prefix; target image]. The prefix is the prompt as the
vision-language encoder laid it out, with the latent tokens of any condition images (editing)
substituted into its image slots; the target image's h * w tokens are appended last. Each block
modulates the whole sequence, then calls its attention `attn` (role "attn") on it, then the SwiGLU
feed-forward `img_mlp` (role "ff", reduced only with merge_mlp) on it. bigain treats the prefix as
text (Block.text_prefix): methods reduce the target image only; text and condition images keep every
token. Attention is block-causal: the default processor (`QwenImage21AttnProcessor`) lets each prefix
segment attend to the keys before its end only, and the target image attend to every key. So the
prefix never sees the target's keys and is untouched by a method; the target's queries attend to
[prefix; reduced image] (token methods) or [prefix; downsampled image] keys (KV methods, which give
`to_k`/`to_v` the prefix and the downsampled image in place of the attention's input).

Grid: `img_shapes`, a Python list per sample of (frames, rows, columns), condition images first and
the target last; the target's (rows, columns) is the grid (read on the host, no device read). The
samples must share a layout (the model reads the first); a target with more than one frame is refused.
Timestep: the pipeline passes t / 1000 (the model multiplies by 1000 itself), read as t = 1000 * sigma.

Rotary embedding: one complex64 table `rotary_emb` of shape (S, head_dim / 2) over the joint
sequence (prefix rows, then the target's), applied by the processor to queries and keys after the
q/k norms on the (B, S, heads, head_dim) layout with Qwen-Image's arithmetic (adjacent channel pairs as
complex numbers, float32). When a method changes the tokens the attention sees, bigain takes the
table out of the call and rotates the q/k norm outputs itself with Qwen-Image's arithmetic, using
the prefix rows unchanged and the rows of the image tokens actually present. The split of the table
into its real and imaginary parts is made once per forward (the hooks' per-forward record).

Prefix key/value cache (the pipeline's default): on the first step (`kv_cache_mode="extract"`) the
processor stores the prefix keys and values; on the later steps ("cached") the blocks see the target
tokens only, with the target's rotary rows and a (B, 1, 1, prefix + target) key mask, and attend to
[cached prefix; target] keys. Both modes work with every method: only the target is reduced.

Masks: a padded prompt (`encoder_hidden_states_mask`) reaches the attention as `key_valid`, a
(B, prefix + target) key mask (prefill), or `attention_mask`, (B, 1, 1, prefix + target) (cached
steps); the image entries are all kept, so when a method shortens the image keys bigain cuts as many
entries off the end (`mask_layout = "tail"`). The flex-attention processor's prefill `BlockMask` is
made for the model's own sequence and cannot be cut: a method that changes the image keys refuses it
at the call with a message (use the default processor).

Why code and not a `BackboneSpec`: the grid is read from `img_shapes` (the target image, last), the
rotary table is complex (Qwen-Image's `rope`, inherited from `QwenImageBackbone`), and two mask
keywords are cut. One difference from the processor's arithmetic order: the processor casts the q/k
norm outputs to the value dtype before rotating; bigain rotates the norm output, then the processor
casts (the same in float32, and when the norm keeps the input dtype).

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-6 and 8-13 of the default config's 32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Block, ForwardInfo, as_timesteps, call_arg
from .qwen_image import QwenImageBackbone


def _target_shape(img_shapes: Any) -> tuple[int, int]:
    """(rows, columns) of the target image, the last entry of a sample's `img_shapes`."""
    if img_shapes is None:
        raise ValueError("bigain: the Qwen-Image 2.1 transformer needs img_shapes (the token grid)")
    if not isinstance(img_shapes, (list, tuple)) or not img_shapes or not isinstance(img_shapes[0], (list, tuple)):
        raise ValueError(
            "bigain: Qwen-Image 2.1 img_shapes must be a list per sample of (frames, rows, columns), the target last"
        )
    first = img_shapes[0]
    if any(s != first for s in img_shapes):
        raise ValueError("bigain: Qwen-Image 2.1 img_shapes differ between samples; the model itself uses the first")
    f, h, w = (int(v) for v in first[-1])
    if f != 1:
        raise ValueError(f"bigain: the Qwen-Image 2.1 target image has {f} frames in img_shapes; bigain supports one")
    return h, w


class QwenImage21Backbone(QwenImageBackbone):
    name = "qwen-image-2.1"
    classes = ("QwenImage21Transformer2DModel",)
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 2-6 and 8-13 of the default 32); "
        "the target image only, the prompt and condition images untouched"
    )
    rope_kwarg = "rotary_emb"  # the block calls its attention by keywords only
    # prefill: `key_valid` (B, keys); cached steps: `attention_mask` (B, 1, 1, keys); image keys last
    mask_kwarg = ("key_valid", "attention_mask")
    mask_layout = "tail"

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn, "ff": b.img_mlp}, text_prefix=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        # forward(hidden_states, encoder_hidden_states, timestep, img_shapes, img_mask, encoder_hidden_states_mask, ...)
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 3:
            raise ValueError("bigain: the Qwen-Image 2.1 transformer input must be packed (B, S, C) tokens")
        h, w = _target_shape(call_arg(args, kwargs, 3, "img_shapes"))
        if x.shape[1] < h * w:
            raise ValueError(f"bigain: img_shapes give a {h}x{w} target image but there are {x.shape[1]} image tokens")
        dev, host = as_timesteps(call_arg(args, kwargs, 2, "timestep"), x.shape[0], x.device, scale=1000.0)
        return ForwardInfo(ops.Grid.image(h, w), dev, host)

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(tables, torch.Tensor) or not tables.is_complex():
            raise ValueError("bigain: Qwen-Image 2.1's rotary_emb must be one complex (S, head_dim / 2) table")
        return tables.real, tables.imag
