"""LTX-Video (`LTXVideoTransformer3DModel`, text-to-video and image-to-video): a flat list of
`LTXVideoTransformerBlock`s on one video token grid.

Each block has a self-attention `attn1` over the video tokens (role "attn"), a cross-attention
`attn2` to the text (role "cross") and a feed-forward `ff` (role "ff"). The adaLN modulation and
the gates are applied by the block around its sub-layers, at full length, so they never see reduced
tokens (also with the per-token modulation of image-to-video).

Grid: the model takes packed (B, S, C) tokens and is told the token grid by its `num_frames`,
`height` and `width` arguments (the pipelines pass the latent frames, rows and columns; the tokens
are packed frame-major then row-major, and the model's rotary tables have exactly F*H*W rows, so
these are the token grid whatever `patch_size` / `patch_size_t` say). A call that gives positions
only as `video_coords` (LTXConditionPipeline, the long multi-prompt pipeline) has no grid bigain
can read without a device read and is refused. Timestep: on the 0-1000 scale as passed (the
flow-matching scheduler's timesteps); image-to-video's per-token timesteps (B, S) (the conditioning
frame's tokens at 0) are reduced to one per row, the largest: the denoising step of the row's noisy
tokens.

Rotary embedding: the model passes `image_rotary_emb` = (cos, sin), each (B, S, inner) in float32
with the same rows for every sample (the grid repeated over the batch), to `attn1` by keyword, and
the processor rotates queries and keys after the q/k norms on the (B, S, inner) layout, before the
head split: pairs of adjacent channels across all heads. When a method changes the tokens `attn1`
sees, bigain takes the tables out of the call and rotates the q/k norm outputs itself with LTX's
arithmetic (fp32, rounded to the input's dtype), using the rows of the tokens actually present.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): LTX-Video 2B's 28 blocks take exactly the paper's blocks
1-5 and 7-11; 13B's 48 take blocks 2-10 and 12-20. Windows stay within a frame (st=1), as Wan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement


class LTXBackbone(Backbone):
    name = "ltx"
    classes = ("LTXVideoTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (the paper's blocks 1-5 and 7-11 on LTX-Video 2B's 28); "
        "windows within a frame"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = 3  # LTXAttention.forward(hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn1, "cross": b.attn2, "ff": b.ff})
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 3:
            raise ValueError("bigain: the LTX-Video transformer input must be packed (B, S, C) tokens")
        if call_arg(args, kwargs, 8, "video_coords") is not None:
            raise ValueError(
                "bigain: the LTX-Video transformer was called with video_coords (LTXConditionPipeline, "
                "the long multi-prompt pipeline): its token grid is not given as num_frames, height and "
                "width, and bigain supports only calls that give it so (LTXPipeline, LTXImageToVideoPipeline)"
            )
        dims = [call_arg(args, kwargs, i, n) for i, n in ((4, "num_frames"), (5, "height"), (6, "width"))]
        if any(d is None for d in dims):
            raise ValueError("bigain: the LTX-Video transformer needs num_frames, height and width (the token grid)")
        t = call_arg(args, kwargs, 2, "timestep")
        if isinstance(t, torch.Tensor) and t.dim() == 2:
            t = t.amax(dim=1)  # (B, 1), or per-token (image-to-video): the row's denoising step
        dev, host = as_timesteps(t, x.shape[0], x.device)
        return ForwardInfo(ops.Grid(*(int(d) for d in dims)), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = tables
        return cos[0], sin[0]  # every sample has the grid's rows (video_coords are refused)

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # LTX rotates (B, S, inner) before the head split: one "head" spanning every channel
        return ops.rope_pairs(x[:, :, None], cos, sin)[:, :, 0]
