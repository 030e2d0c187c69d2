"""HunyuanDiT (`HunyuanDiT2DModel`: Hunyuan-DiT v1.0-v1.2 text-to-image): a flat list of
`HunyuanDiTBlock`s on one patch grid, U-ViT-like.

Each block has a self-attention `attn1` over the image tokens (role "attn"), a cross-attention
`attn2` from the image tokens to the text (role "cross": the CLIP-like and the T5 embeddings joined
by the model, padding replaced by a learned embedding, no attention mask) and a feed-forward `ff`
(role "ff"). The blocks of the second half (index > depth // 2) first fuse a long skip from the
first half: `skip_linear(skip_norm([x; skip]))` on the full token sequence. bigain reduces tokens
only inside the sub-layers it hooks (their inputs reduced, their outputs expanded back) and KV
methods change only the keys and values of `attn1`, so every block returns its full sequence and the
skips, stored between blocks, line up with the tokens they meet. (The "block" metric reads the
block's input before the skip is fused; the default metric is the attention input.)

Grid: the (B, C, H, W) latent over `config.patch_size` (row-major patches). Timestep: on the 0-1000
scale as passed (the pipeline's DDPM-family scheduler timesteps).

Rotary embedding: the pipeline passes `image_rotary_emb` = (cos, sin), each (S, D) with one row per
image token in the patch order (`get_2d_rotary_pos_embed`: the first half of the channels encodes
one grid axis, the second half the other, each repeated per adjacent channel pair). The processor
(`HunyuanAttnProcessor2_0`) rotates after the q/k norms on the (B, heads, S, D) layout, adjacent
channel pairs in fp32 (`apply_rotary_emb(..., use_real_unbind_dim=-1)`, Flux's arithmetic on the
heads-first layout). The block passes the same tables to `attn2`, whose processor rotates the
queries only (the keys are text). So the spec's `rope_kwarg` moves the rows with the tokens of
`attn1` (kept tokens' rows for merged queries and keys, the nearest-exact sample's row for
downsampled keys), and `cross_rope` does the same for the queries of `attn2` when `merge_crossattn`
reduces them. Code beyond the record: `rope` (the heads-first layout) and `cross_rope`.
A call without tables (the model called directly) has no rotary embedding at all.

KV methods give `attn1` the downsampled image tokens as `encoder_hidden_states` (it takes none of
its own); `fuse_qkv_projections` leaves it without `to_k`/`to_v` for them, as on DiT.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-8 and 10-17 of Hunyuan-DiT's 40, all in the first
half, whose outputs also feed the long skips.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .. import ops
from .spec import BackboneSpec, SpecBackbone, Stack

HUNYUAN_DIT = BackboneSpec(
    name="hunyuan-dit",
    classes=("HunyuanDiT2DModel",),
    stacks=(Stack("blocks", {"attn": "attn1", "cross": "attn2", "ff": "ff"}),),
    timestep="timestep",
    placement="relative",
    placement_text=(
        "the DiT-XL/2 placement mapped by relative depth (blocks 2-8 and 10-17 of Hunyuan-DiT's 40); "
        "the long skips stay at full length"
    ),
    rope_kwarg="image_rotary_emb",
)


class HunyuanDiTBackbone(SpecBackbone):
    spec = HUNYUAN_DIT
    cross_rope: ClassVar[bool] = True

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: a (B, heads, S, D) q/k norm output; Flux's fp32 pairs on the (B, S, heads, D) view
        return ops.rope_pairs(x.transpose(1, 2), cos, sin).transpose(1, 2)
