"""CogView4 (`CogView4Transformer2DModel`: CogView4-6B text-to-image): a flat list of
`CogView4TransformerBlock`s on one image token grid.

Each block has one attention `attn1` (role "attn") that takes the image tokens as `hidden_states`
and the text as `encoder_hidden_states`; its processor (`CogView4AttnProcessor`) joins [text; image]
before the q/k/v projections, attends over the joined sequence and returns (image, text) apart. The
feed-forward `ff` is one module called twice, on the image and then on the text, so it is not a role
(`merge_mlp` reduces nothing there). The adaLN modulation and gates are applied by the block at full
length. Token methods reduce the image tokens the attention receives; the text keeps every token.
KV methods give `to_k`/`to_v` [text; downsampled image] in place of the joined sequence (queries
keep every token).

Grid: the (B, C, H, W) latent over `config.patch_size` (row-major patches). Timestep: on the 0-1000
scale as passed (the pipeline's flow-matching scheduler timesteps).

Rotary embedding: (cos, sin), each (S_image, D) image rows only, passed as `image_rotary_emb` or,
when the caller passes none (the pipeline), computed by the model on the host. The processor rotates
the image part of queries and keys, (B, heads, S, D) after the q/k norms, channel i with channel
i + D/2 in fp32 (`apply_rotary_emb(..., use_real_unbind_dim=-2)`). When a method changes the tokens
`attn1` sees, bigain takes the tables out of the call (moved to the tokens' device once per forward)
and rotates the image rows of the q/k norm outputs itself with the same arithmetic, using the rows
of the tokens actually present; the text rows are left as they are.

Attention mask: a (B, text) padded-text mask (`attention_mask`) from which the processor builds a
square [text; image] mask over as many image tokens as there are queries. Token methods keep queries
and keys equal, so the mask stays consistent; KV methods shorten the keys only and are refused for
such a call. The pipeline passes no mask.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-6 and 8-12 of CogView4-6B's 30.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, patch_grid_forward, relative_placement

KV_MASK_REFUSAL = (
    "the call passes attention_mask (a padded prompt): CogView4's attention processor builds the "
    "[text; image] mask from the number of image queries, which differs from the number of "
    "downsampled image keys; pass unpadded prompts (the pipeline passes no mask) or use a token method"
)


class CogView4Backbone(Backbone):
    name = "cogview4"
    classes = ("CogView4Transformer2DModel",)
    default_metric = "attn"
    placement = "the DiT-XL/2 placement mapped by relative depth (blocks 2-6 and 8-12 of CogView4-6B's 30); image tokens only"
    rope_kwarg = "image_rotary_emb"  # the block calls its attention by keywords only
    # The processor joins [text; image] before to_k/to_v: KV methods give them [text; downsampled image].
    kv_text_join_processors = ("CogView4AttnProcessor",)

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn1}, joint=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        info = patch_grid_forward(model, args, kwargs, 2)
        # forward(hidden_states, encoder_hidden_states, timestep, original_size, target_size,
        #         crop_coords, attention_kwargs, return_dict, attention_mask, image_rotary_emb)
        mask = args[8] if len(args) > 8 else kwargs.get("attention_mask")
        if mask is not None:
            info.extra["kv_refused"] = KV_MASK_REFUSAL
        return info

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: a (B, heads, T + N, D) q/k norm output of [text; image]; rotate the N image rows
        return ops.rope_after_text(ops.rope_halves, x, cos, sin)

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not (
            isinstance(tables, (tuple, list))
            and len(tables) == 2
            and all(isinstance(t, torch.Tensor) for t in tables)
        ):
            raise ValueError(  # the training processor's per-sample list of pairs
                "bigain: CogView4's image_rotary_emb must be one (cos, sin) pair of (S, D) image rows "
                "when a method changes the tokens the attention sees"
            )
        return tables[0], tables[1]
