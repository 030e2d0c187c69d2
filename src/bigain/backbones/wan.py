"""Wan 2.1 / 2.2 (`WanTransformer3DModel`, text-to-video and image-to-video): a flat list of
`WanTransformerBlock`s on one video token grid.

Each block has a self-attention `attn1` over the video tokens (role "attn"), a cross-attention
`attn2` to the text (and, for I2V, to the image context; role "cross") and a feed-forward `ffn`
(role "ff"). The adaLN modulation is applied by the block around its sub-layers, at full length, so
it never sees reduced tokens (also with Wan 2.2's per-token modulation).

Grid: the (B, C, F, H, W) latent over `config.patch_size` (p_t, p_h, p_w), flattened frame-major
then row-major by the `Conv3d` patch embedding. Timestep: on the 0-1000 scale as passed; Wan 2.2's
per-token timesteps (B, S) (TI2V, where the conditioning frame's tokens are at 0) are reduced to one
per row, the largest: the denoising step of the row's noisy tokens.

Rotary embedding: the model passes `rotary_emb` = (cos, sin), each (1, S, 1, D) in float64, to
`attn1` as its fourth argument, and the processor rotates queries and keys after the q/k norms.
When a method changes the tokens `attn1` sees, bigain takes the tables out of the call and rotates
the q/k norm outputs itself, with Wan's arithmetic, using the rows of the tokens actually present
(the kept tokens for merged queries and keys, each nearest-exact sample for downsampled keys).

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-6 and 8-12 of Wan 2.1-1.3B's 30, blocks 2-8 and
10-17 of the 14B models' 40. Windows stay within a frame (st=1), see `bigain.ops.partition`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, relative_placement


class WanBackbone(Backbone):
    name = "wan"
    classes = ("WanTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 2-6 and 8-12 of Wan 2.1-1.3B's 30); "
        "windows within a frame"
    )
    rope_kwarg = "rotary_emb"
    rope_position = 3  # WanAttention.forward(hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"blocks.{i}", b, 1, {"attn": b.attn1, "cross": b.attn2, "ff": b.ffn})
            for i, b in enumerate(model.blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = args[0] if args else kwargs.get("hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the Wan transformer input must be a (B, C, F, H, W) latent")
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        if isinstance(t, torch.Tensor) and t.dim() == 2:
            t = t.amax(dim=1)  # per-token timesteps (Wan 2.2 TI2V): the row's denoising step
        dev, host = as_timesteps(t, x.shape[0], x.device)
        p_t, p_h, p_w = model.config.patch_size
        f, h, w = (int(s) for s in x.shape[-3:])
        return ForwardInfo(ops.Grid(f // p_t, h // p_h, w // p_w), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = tables
        return cos[0, :, 0], sin[0, :, 0]

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        rotated = ops.rope_pairs_promoted(x.unflatten(-1, (attn.heads, -1)), cos, sin)
        return rotated.flatten(-2)
