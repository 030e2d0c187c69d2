"""Kandinsky 5 (`Kandinsky5Transformer3DModel`: Kandinsky 5.0 Video Lite / Pro T2V and I2V, and the
image models): text blocks (`text_transformer_blocks`, self-attention over the prompt alone, run
once before the visual blocks), then visual blocks (`visual_transformer_blocks`), each a
self-attention over the video tokens (`self_attention`, role "attn"), a cross-attention to the text
the text blocks made (`cross_attention`, role "cross") and a feed-forward (`feed_forward`, role
"ff"). Only the visual blocks are compression sites; the text blocks, and so the text, are never
touched. The modulation (shift, scale, gate per sub-layer) is applied by the block at full length.

Grid: the latent is channels-last, (B, F, H, W, C) (image-to-video adds its conditioning frame and
mask as channels), over `config.patch_size` (p_t, p_h, p_w); the visual embedding keeps the
(F, H, W) layout and the model flattens it frame-major then row-major. Timestep: as the pipelines
pass it, the flow-matching scheduler's 0-1000 timesteps.

Rotary embedding: the model passes `rotary_emb`, a (B, S, 1, D/2, 2, 2) tensor of 2 x 2 rotation
matrices (the same rows for every sample), to `self_attention` by keyword; the processor multiplies
adjacent channel pairs of the (B, S, heads, D) q/k norm outputs by them in fp32 and rounds the result
to bfloat16. When a method changes the tokens the self-attention sees, bigain takes the tensor out of
the call and rotates the q/k norm outputs itself with the same arithmetic (the matrices rebuilt from
their cos and sin entries, which is exact), using the rows of the tokens actually present.

Sparse "nabla" attention (`attention_type="nabla"`, Kandinsky 5.0 Pro): the pipeline reorders the
video tokens into 8 x 8 tiles (`to_fractal`) and the processor builds a flex-attention block mask
from queries and keys pooled over blocks of 64 tokens and a mask made for the full grid; fewer
queries or keys break both (and the reordered tokens are not the frame-major grid), so every method
is refused on such a model or call.

This is code, not a `BackboneSpec`: the grid is a video grid from a channels-last latent, and the
rotary layout (rotation matrices, bfloat16 rounding) is Kandinsky's own.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over the visual blocks
(block j when floor(28 j / depth) is in {1-5, 7-11}): blocks 2-6 and 8-13 of Video Lite's 32.
Windows stay within a frame (st=1), as Wan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement

_NABLA = (
    "Kandinsky 5's sparse nabla attention (attention_type='nabla', sparse_params) reorders the video "
    "tokens into 8x8 tiles and builds its block mask from queries and keys pooled over blocks of 64 "
    "tokens and a mask made for the full grid, so it cannot take fewer queries or keys; use "
    "attention_type='regular'"
)


class Kandinsky5Backbone(Backbone):
    name = "kandinsky5"
    classes = ("Kandinsky5Transformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the visual blocks (blocks 2-6 and 8-13 of "
        "Kandinsky 5.0 Video Lite's 32); windows within a frame"
    )
    rope_kwarg = "rotary_emb"
    rope_position = 3  # Kandinsky5Attention.forward(hidden_states, encoder_hidden_states, sparse_params, rotary_emb)
    rope_norms = ("query_norm", "key_norm", "", "")

    def blocks(self, model: nn.Module) -> list[Block]:
        if getattr(model.config, "attention_type", "regular") == "nabla":
            raise ValueError(f"bigain: {_NABLA}")
        return [
            Block(
                i,
                f"visual_transformer_blocks.{i}",
                b,
                1,
                {"attn": b.self_attention, "cross": b.cross_attention, "ff": b.feed_forward},
            )
            for i, b in enumerate(model.visual_transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the Kandinsky 5 transformer input must be a (B, F, H, W, C) latent")
        if call_arg(args, kwargs, 7, "sparse_params") is not None:
            raise ValueError(f"bigain: {_NABLA}")
        dev, host = as_timesteps(call_arg(args, kwargs, 2, "timestep"), x.shape[0], x.device)
        p_t, p_h, p_w = (int(p) for p in model.config.patch_size)
        f, h, w = (int(s) for s in x.shape[1:4])
        return ForwardInfo(ops.Grid(f // p_t, h // p_h, w // p_w), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(tables, torch.Tensor) or tables.dim() != 6 or tuple(tables.shape[-2:]) != (2, 2):
            raise ValueError(
                "bigain: Kandinsky 5's rotary_emb must be the model's (B, S, 1, D/2, 2, 2) rotation matrices "
                "when a method changes the tokens the attention sees"
            )
        rows = tables[0, :, 0]  # (S, D/2, 2, 2): every sample has the grid's rows
        return rows[..., 0, 0], rows[..., 1, 0]  # [[cos, -sin], [sin, cos]]

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: a (B, S, heads, D) q/k norm output in fp32, which the processor casts to the queries'
        # dtype before rotating; rows (S, D/2) or per sample (B, S, D/2). The processor's arithmetic:
        # the rotation matrices times adjacent pairs in fp32, summed, rounded to bfloat16.
        rot = torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2)).unsqueeze(-4)
        if rot.dim() == 5:
            rot = rot[None]
        dtype = attn.to_query.weight.dtype
        pairs = x.to(dtype).reshape(*x.shape[:-1], -1, 1, 2).to(torch.float32)
        out = (rot.to(device=x.device) * pairs).sum(dim=-1)
        return out.reshape(x.shape).to(torch.bfloat16).to(x.dtype)
