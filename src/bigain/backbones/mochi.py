"""Mochi 1 (`MochiTransformer3DModel`, text-to-video): a flat list of `MochiTransformerBlock`s on one
video token grid, each an asymmetric joint attention (`attn1`) over the video and the text.

The video and the text are two streams of different widths (3072 and 1536 channels on Mochi 1):
each block modulates, attends and runs a feed-forward on them apart (`ff` on the video, `ff_context`
on the text). The attention takes the video as `hidden_states` and the text as
`encoder_hidden_states`, projects each with its own weights to the same heads, and its processor
(`MochiAttnProcessor2_0`) attends per sample over [video; the sample's unpadded text], then returns
the two streams apart. Roles: "attn" (`attn1`, a joint block: bigain reduces only the video part)
and "ff" (`ff`, video only). The text keeps every token; the last block (`context_pre_only`) still
attends jointly and is compressed alike. The adaLN modulation and the tanh gates are applied by the
block around its sub-layers at full length, so they never see reduced tokens.

Text mask: the model passes the prompt's (B, text) mask to every attention as `attention_mask`,
and the processor keeps the unpadded text entries by it; it covers the text only, so shortening
the video tokens leaves it as it is (no mask layout to cut).

Grid: the (B, C, F, H, W) latent over `config.patch_size` in space (the patch embedding is 2-D,
applied per frame: no temporal patch), tokens frame-major then row-major. Timestep: Mochi runs
its timesteps reversed (the pipeline's scheduler inverts the sigmas, so the model gets
t = 1000 * (1 - sigma): near 0 at pure noise, 1000 at the clean video; MochiPipeline reports
1000 - t as its current timestep); bigain reads the 0-1000 noise scale as 1000 - t.

Rotary embedding: the model makes (cos, sin) tables of shape (tokens, heads, head_dim / 2) in float32
from its learned per-head frequencies (`pos_frequencies`, three axes: frame, row, column) and passes
them to `attn1` as `image_rotary_emb` (keyword only); the processor rotates the video queries and
keys after norm_q / norm_k on (B, S, heads, D): pairs of adjacent channels, the two halves of the
rotation each computed in fp32 and rounded to the input's dtype before they are interleaved. The
text is not rotated. bigain reads the tables as (tokens, heads * head_dim / 2) rows (`rope_rows`);
when a method changes the video tokens `attn1` sees, it takes the tables out of the call and
rotates the q/k norm outputs itself with Mochi's arithmetic (`rope`), using the rows of the tokens
actually present (kept tokens for merged or pruned queries and keys, each nearest-exact sample for
downsampled keys).

Why code rather than a `BackboneSpec` record: the grid is 3-D (a spec reads an image grid), the
timestep is reversed (a spec only scales it), and the rotary tables are per head, not Flux's layout.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-10 and 12-20 of Mochi 1's 48. Windows stay within a
frame (st=1), as Wan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement


class MochiBackbone(Backbone):
    name = "mochi"
    classes = ("MochiTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 2-10 and 12-20 of Mochi 1's 48); "
        "windows within a frame"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = None  # MochiAttention.forward takes it among **kwargs: keyword only

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn1, "ff": b.ff}, joint=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the Mochi transformer input must be a (B, C, F, H, W) latent")
        dev, host = as_timesteps(call_arg(args, kwargs, 2, "timestep"), x.shape[0], x.device)
        if dev is not None:  # reversed: t = 1000 * (1 - sigma)
            dev = 1000.0 - dev
        if host is not None:
            host = tuple(1000.0 - v for v in host)
        p = int(model.config.patch_size)
        f, h, w = (int(s) for s in x.shape[-3:])
        return ForwardInfo(ops.Grid(f, h // p, w // p), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = tables  # (S, heads, D / 2) each
        return cos.flatten(-2), sin.flatten(-2)

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: (B, S, heads, D) after norm_q / norm_k; rows (S, heads * D / 2) or (B, S, heads * D / 2)
        heads = x.shape[-2]
        cos, sin = cos.unflatten(-1, (heads, -1)).to(x.device), sin.unflatten(-1, (heads, -1)).to(x.device)
        even, odd = x[..., 0::2].float(), x[..., 1::2].float()
        first = (even * cos - odd * sin).to(x.dtype)
        second = (even * sin + odd * cos).to(x.dtype)
        return torch.stack([first, second], dim=-1).flatten(-2)
