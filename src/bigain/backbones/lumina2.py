"""Lumina-Image 2.0 (`Lumina2Transformer2DModel`): context-refiner blocks over the caption alone,
noise-refiner blocks over the image alone, then the main blocks over one joint sequence per sample.
All are `Lumina2TransformerBlock`s: an attention `attn` (role "attn") and a feed-forward
`feed_forward` (role "ff"), with the modulation and gates applied by the block at full length.

Sites: the noise-refiner blocks (image tokens only, no mask) and the main blocks; the context
refiner sees no image token and is not a site. Grid: the (B, C, H, W) latent over
`config.patch_size` (row-major patches). Timestep: Lumina2Pipeline passes 1 - t / 1000 (0 is pure
noise, 1 the clean image), read as t = 1000 * (1 - timestep).

Joint sequence of the main blocks: row i is [its L_i caption tokens; the N image tokens; padding],
where L_i is the caption's unpadded length (the sum of `encoder_attention_mask`), padded to
max(L) + N. When every row has the same L, the image sits at one offset after the caption and
the model passes no mask: the [text; image] prefix layout the hooks read directly. When the
lengths differ, the image starts at another position in each row and the model passes a (B, S)
key mask that masks each row's padding. bigain then reorders each row of a patched main block to
[caption; padding; image] around the whole block: the block input, its mask and its rotary rows
are gathered into that order before the block (on the device, from the mask; no host read), and
the block output is put back after it. Every row then has its image at offset max(L), the
padding sits inside the untouched text prefix and stays masked, and the method's hooks see the
prefix layout. The block is per-token apart from its attention, and attention does not depend on
the order of its tokens when their rotary rows and mask entries go with them, so the reordering
changes nothing but the summation order; it costs two gathers of the block's tokens per call, and
only when the lengths differ (the pipeline's batches of one prompt never do).

Mask: the reordered mask is given to the attention as (B, 1, 1, S); when a method shortens the
image keys (merged/pruned tokens, downsampled keys), bigain cuts that many entries off the end,
the image part, which is all kept (mask layout "pairs" with one query row).

Attention call: the block passes the same tensor as `hidden_states` and `encoder_hidden_states`,
and `Lumina2AttnProcessor2_0` projects keys and values from `encoder_hidden_states` (it has no
fallback to `hidden_states`). Around the method's hooks bigain takes `encoder_hidden_states` out of
the call when it is the attention's input, and puts the attention's input back afterwards when the
method left none: token methods then project keys from the reduced tokens, KV methods give the
noise refiner's self-attention its downsampled keys as `encoder_hidden_states` and swap the image
input of `to_k`/`to_v` in the main blocks ([text; downsampled image]).

Rotary embedding: `image_rotary_emb` is a complex table of (B, S, head_dim / 2) rows per sample
(the caption axis holds each row's L_i, also on its image rows), made by the model in float64
(complex128) and multiplied into queries and keys, viewed as complex pairs of adjacent channels
in float32, after the q/k norms on the (B, S, heads, head_dim) layout (`apply_rotary_emb(...,
use_real=False)`); keys have fewer heads (grouped-query attention), which the rows broadcast over.
When a method changes the tokens the attention sees, bigain takes the table out of the call and
applies it itself with the same arithmetic, using each sample's rows of the tokens actually
present (the caption rows to the caption tokens, unchanged).

Why code and not a `BackboneSpec`: the reversed timestep, the per-sample rotary layout, the
attention call with `encoder_hidden_states` equal to its input, and the reordering of rows whose
captions differ in length.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over the noise-refiner
then the main blocks (Lumina-Image 2.0's 2 + 26 = 28 blocks take exactly the paper's 1-5 and 7-11:
noise_refiner.1, layers.0-3 and layers.5-9).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement, with_call_arg


def joint_order(mask: torch.Tensor, num_image: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, inverse), each (B, S): `order` lists, for each row of the main blocks' joint sequence
    [caption (L_i); image (N); padding] (the model's (B, S) mask keeps the first L_i + N entries),
    the tokens of [caption; padding; image], and `inverse` puts them back (x.gather(order).gather(inverse)
    is x). Made on the mask's device without reading it."""
    s = mask.shape[1]
    t = s - num_image  # the longest caption: where every row's image starts once reordered
    length = mask.to(torch.int64).sum(dim=1, keepdim=True) - num_image  # (B, 1) caption lengths
    p = torch.arange(s, device=mask.device)[None]
    order = torch.where(p < length, p, torch.where(p < t, p + num_image, p - t + length))
    inverse = torch.where(p < length, p, torch.where(p < length + num_image, p - length + t, p - num_image))
    return order, inverse


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.take_along_dim(x, index.reshape(*index.shape, *([1] * (x.dim() - 2))), dim=1)


class _Lumina2Hooks:
    """The adapter's hooks on one patched block (bound methods, so a deep copy of a patched model
    rebinds them to its own copy)."""

    def __init__(self, patch: Any) -> None:
        self.patch = patch
        self.key = ("lumina2-inverse", patch.block.index)

    # -- the attention call: encoder_hidden_states is the attention's input ---------------------
    def drop_context(self, module: nn.Module, args: tuple, kwargs: dict):
        x = call_arg(args, kwargs, 0, "hidden_states")
        if call_arg(args, kwargs, 1, "encoder_hidden_states") is not x:
            return None
        return with_call_arg(args, kwargs, 1, "encoder_hidden_states", None)

    def restore_context(self, module: nn.Module, args: tuple, kwargs: dict):
        if call_arg(args, kwargs, 1, "encoder_hidden_states") is not None:
            return None  # a KV method's downsampled keys and values
        return with_call_arg(args, kwargs, 1, "encoder_hidden_states", call_arg(args, kwargs, 0, "hidden_states"))

    # -- main blocks whose captions differ in length: [caption; padding; image] inside the block --
    def reorder(self, module: nn.Module, args: tuple, kwargs: dict):
        mask = call_arg(args, kwargs, 1, "attention_mask")
        if mask is None:  # every caption the same length: the image already at one offset
            return None
        fwd = self.patch.state.current()
        x = call_arg(args, kwargs, 0, "hidden_states")
        rotary = call_arg(args, kwargs, 2, "image_rotary_emb")
        seen = fwd.cache.setdefault("lumina2-order", [])
        # the model passes the same mask and table to every main block: reordered once per forward
        made = next((done for m, r, done in seen if m is mask and r is rotary), None)
        if made is None:
            if mask.dim() != 2 or mask.shape != x.shape[:2]:
                raise ValueError(
                    f"bigain: {self.patch.block.name} got an attention mask {tuple(mask.shape)}, not the model's "
                    f"(B, S) = {tuple(x.shape[:2])} key mask over [caption; image; padding]"
                )
            order, inverse = joint_order(mask, fwd.grid.tokens)
            made = (
                order,
                inverse,
                _gather_rows(mask, order)[:, None, None, :],
                None if rotary is None else _gather_rows(rotary, order),
            )
            seen.append((mask, rotary, made))
        order, inverse, mask4, rotary_rows = made
        fwd.cache[self.key] = inverse
        args, kwargs = with_call_arg(args, kwargs, 0, "hidden_states", _gather_rows(x, order))
        args, kwargs = with_call_arg(args, kwargs, 1, "attention_mask", mask4)
        if rotary is not None:
            args, kwargs = with_call_arg(args, kwargs, 2, "image_rotary_emb", rotary_rows)
        return args, kwargs

    def put_back(self, module: nn.Module, output: Any):
        inverse = self.patch.state.current().cache.pop(self.key, None)
        if inverse is None:
            return None
        return _gather_rows(output, inverse)


class Lumina2Backbone(Backbone):
    name = "lumina2"
    classes = ("Lumina2Transformer2DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the noise-refiner then the main blocks "
        "(Lumina-Image 2.0's 28: noise_refiner.1, layers.0-3 and 5-9); image tokens only"
    )
    rope_kwarg = "image_rotary_emb"  # the block calls its attention by keywords only
    mask_kwarg = "attention_mask"
    mask_layout = "pairs"  # (B, 1, 1, S) over [text; image] once reordered: image keys cut off the end

    def blocks(self, model: nn.Module) -> list[Block]:
        out: list[Block] = []
        for i, b in enumerate(model.noise_refiner):
            out.append(Block(len(out), f"noise_refiner.{i}", b, 1, {"attn": b.attn, "ff": b.feed_forward}))
        for i, b in enumerate(model.layers):
            roles = {"attn": b.attn, "ff": b.feed_forward}
            out.append(Block(len(out), f"layers.{i}", b, 1, roles, text_prefix=True))
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        # forward(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, ...)
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 4:
            raise ValueError("bigain: the Lumina2 transformer input must be a (B, C, H, W) latent")
        p = int(model.config.patch_size)
        dev, host = as_timesteps(call_arg(args, kwargs, 1, "timestep"), x.shape[0], x.device)
        if dev is not None:  # Lumina's 0 is noise: t = 1000 * (1 - timestep)
            dev = (1.0 - dev) * 1000.0
        if host is not None:
            host = tuple((1.0 - v) * 1000.0 for v in host)
        return ForwardInfo(ops.Grid.image(int(x.shape[-2]) // p, int(x.shape[-1]) // p), dev, host)

    def install_around(self, patch: Any, hooks: Any, after: bool) -> None:
        own = _Lumina2Hooks(patch)  # no state of its own: one object before, another after
        attn = patch.block.roles["attn"]
        if not after:
            if patch.block.text_prefix:
                hooks.pre(patch.block.module, own.reorder)
            hooks.pre(attn, own.drop_context)
        else:
            hooks.pre(attn, own.restore_context)
            if patch.block.text_prefix:
                hooks.post(patch.block.module, own.put_back)

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(tables, torch.Tensor) or not tables.is_complex() or tables.dim() != 3:
            raise ValueError(
                "bigain: Lumina2's image_rotary_emb must be the model's complex (B, S, head_dim / 2) table "
                "when a method changes the tokens the attention sees"
            )
        return tables.real, tables.imag

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        return ops.rope_complex(x, cos, sin)  # `apply_rotary_emb(x, freqs, use_real=False)`
