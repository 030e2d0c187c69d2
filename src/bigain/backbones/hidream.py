"""HiDream-I1 (`HiDreamImageTransformer2DModel`): double-stream blocks (`double_stream_blocks`) then
single-stream blocks (`single_stream_blocks`), each a `HiDreamBlock` wrapper around the real block
(`.block`), whose attention is `attn1` and whose image feed-forward is `ff_i` (a mixture of experts on
the published model: a shared SwiGLU plus the top-2 of 4 routed ones, chosen per token).

Text: the model projects the T5 states and one Llama layer per block to the model width. A
double-stream block gets [T5; last Llama layer; its own Llama layer] as `encoder_hidden_states`; its
attention projects the image and the text with their own weights and attends over [image; text]
(image first). Before the single-stream blocks the model appends the text to the image, and each
single-stream block appends its own Llama layer: their attention's `hidden_states` are
[image; text], one sequence with one set of projections. The text is never touched.

Grid and padding: the model patchifies the (B, C, H, W) latent itself (p x p patches, row-major,
`config.patch_size`), so the grid is (H / p, W / p). A non-square latent is padded to
`max_resolution[0] * max_resolution[1] / p^2` tokens: [image; padding] in every block, with a
(B, tokens) `hidden_states_masks` (1 on the image, 0 on the padding; single-stream blocks: then 1 on
the text) that the processor multiplies into the keys, so the padded keys score 0 (they are not
excluded: they keep a share of the softmax, as in the model). The image is thus always first in the
attention's input, followed by padding and, in single-stream blocks, text (`Block.image_first`):
methods act on the first H/p * W/p tokens and keep the rest whole; when they shorten the image keys
the hooks drop as many entries from the front of the mask (`mask_layout = "tokens"`), whose image
entries are all 1. The pre-patchified call (3-D `hidden_states` with `hidden_states_masks`,
`img_ids`, `img_sizes`) is refused: its grid and padding are the caller's. Timestep: `timesteps`, on
the 0-1000 scale as the pipeline passes it.

Rotary embedding: the model makes one table for [image (+ padding); text] from `img_ids` (row,
column) and all-zero text ids, (B, S, 1, D / 2, 2, 2) 2 x 2 rotation matrices, and passes it to every
attention as `image_rotary_emb`; the processor rotates adjacent channel pairs of the (B, S, heads,
head_dim) queries and keys in fp32 after the q/k RMS norms (the whole head when head_dim = D, its
first half when head_dim = 2D). When a method changes the tokens an attention sees, bigain takes the
table out of the call, rotates the outputs of `q_rms_norm` / `k_rms_norm` (and the text's
`q_rms_norm_t` / `k_rms_norm_t`) itself with the rows of the tokens present (kept tokens for merged
queries and keys, nearest-exact samples for downsampled keys, the padding's and text's own rows
after them), with the processor's arithmetic, and gives the processor an identity rotation in the
table's place (it always rotates). The rows are sample 0's: the model builds the same ids for
every sample of a 4-D latent.

Mixture of experts: the router is a per-token function (top-k of a softmax over the token's own
logits, no capacity limit or cross-token balancing at inference), so a merged token (with
`merge_mlp`) is routed like any token; nothing is refused for it. The experts' dispatch
(`moe_infer`) reads expert counts on the host in every forward: that is the model's own sync, not
bigain's.

Why code and not a `BackboneSpec`: the [image; padding; text] input with a key mask, the rotary
table's layout and the stand-in table the processor needs are not what a record can say.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in
forward order (double then single): on the published 16 + 32 blocks, double-stream 2-10 and 12-15
and single-stream 0-4.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, relative_placement

PATCHIFIED_REFUSAL = (
    "bigain reads HiDream's token grid from the (B, C, H, W) latent the pipeline passes; the "
    "pre-patchified call (3-D hidden_states with hidden_states_masks, img_ids and img_sizes) is not supported"
)


class HiDreamBackbone(Backbone):
    name = "hidream"
    classes = ("HiDreamImageTransformer2DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the double- then single-stream blocks "
        "(double 2-10, 12-15 and single 0-4 of the published 16 + 32); image tokens only"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = 3  # HiDreamAttention.forward(hidden_states, masks, encoder_hidden_states, image_rotary_emb)
    rope_norms = ("q_rms_norm", "k_rms_norm", "q_rms_norm_t", "k_rms_norm_t")
    mask_kwarg = "hidden_states_masks"
    mask_position = 1
    mask_layout = "tokens"

    def blocks(self, model: nn.Module) -> list[Block]:
        out = []
        for i, b in enumerate(model.double_stream_blocks):
            roles = {"attn": b.block.attn1, "ff": b.block.ff_i}
            out.append(Block(len(out), f"double_stream_blocks.{i}", b, 1, roles, joint=True, image_first=True))
        for i, b in enumerate(model.single_stream_blocks):
            roles = {"attn": b.block.attn1, "ff": b.block.ff_i}
            out.append(Block(len(out), f"single_stream_blocks.{i}", b, 1, roles, image_first=True))
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        # forward(hidden_states, timesteps, encoder_hidden_states_t5, encoder_hidden_states_llama3,
        #         pooled_embeds, img_ids, img_sizes, hidden_states_masks, ...)
        x = args[0] if args else kwargs.get("hidden_states")
        masks = args[7] if len(args) > 7 else kwargs.get("hidden_states_masks")
        if x is None or x.dim() != 4 or masks is not None:
            raise ValueError(f"bigain: {PATCHIFIED_REFUSAL}")
        t = args[1] if len(args) > 1 else kwargs.get("timesteps")
        dev, host = as_timesteps(t, x.shape[0], x.device)
        p = int(model.config.patch_size)
        return ForwardInfo(ops.Grid.image(int(x.shape[-2]) // p, int(x.shape[-1]) // p), dev, host)

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(tables, torch.Tensor) or tables.dim() != 6 or tuple(tables.shape[-2:]) != (2, 2):
            raise ValueError(
                "bigain: HiDream's image_rotary_emb must be the model's (B, S, 1, D/2, 2, 2) rotation table"
            )
        # each 2 x 2 block is [[cos, -sin], [sin, cos]]: (S, D/2) rows of sample 0
        return tables[0, :, 0, :, 0, 0], tables[0, :, 0, :, 1, 0]

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: a (B, S, heads * head_dim) q/k RMS-norm output; the processor's arithmetic on the
        # (B, S, heads, head_dim) view, in fp32: (x0, x1) -> (cos x0 + (-sin) x1, sin x0 + cos x1)
        b, s, inner = x.shape
        heads = int(attn.heads)
        head_dim = inner // heads
        half = cos.shape[-1]
        rot = 2 * half
        if head_dim not in (rot, 2 * rot):
            raise ValueError(f"bigain: HiDream rotary tables of {rot} channels do not fit heads of {head_dim}")
        xh = x.reshape(b, s, heads, head_dim)
        part = xh[..., :rot]
        pairs = part.float().reshape(b, s, heads, half, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        c = cos[:, None] if cos.dim() == 2 else cos[:, :, None]  # over the heads
        n = sin[:, None] if sin.dim() == 2 else sin[:, :, None]
        c, n = c.to(x.device), n.to(x.device)
        rotated = torch.stack([c * x0 + (-n) * x1, n * x0 + c * x1], dim=-1).reshape(part.shape).type_as(x)
        if rot != head_dim:
            rotated = torch.cat([rotated, xh[..., rot:]], dim=-1)
        return rotated.reshape(b, s, inner)

    def rope_stand_in(self, tables: Any) -> torch.Tensor:
        # The processor always rotates: identity matrices, one row broadcast over every token
        eye = torch.eye(2, dtype=tables.dtype, device=tables.device)
        return eye.expand(1, 1, 1, tables.shape[-3], 2, 2)
