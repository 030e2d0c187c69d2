"""HunyuanVideo (`HunyuanVideoTransformer3DModel`, text-to-video and image-to-video by latent
concatenation): dual-stream blocks (`transformer_blocks`: joint attention, the video and the text
with their own projections, as Flux's double blocks) followed by single-stream blocks
(`single_transformer_blocks`: one attention over [video; text]).

Both kinds call their attention with the video as `hidden_states` and the text as
`encoder_hidden_states`; the processor joins [video; text] after the projections (dual-stream) or
before them (single-stream: the block is a `text_suffix` block, and KV methods give to_k/to_v
[downsampled video; text] in place of the joined sequence). The token refiner that embeds the
prompt (`context_embedder`) sees only text and is not a compression site.

Attention mask: the model builds a (B, 1, 1, video + text) boolean key mask over [video; text] that
masks only the padded text (every video entry is True), and passes it to every block. When a method
shortens the video keys (merged/pruned tokens, downsampled keys), bigain cuts the same number of
entries off the front of the mask, so the text's padding stays masked; a mask of another shape is
refused with a message.

Grid: the latent (B, C, F, H, W) over the patch sizes (`patch_size_t`, `patch_size`, `patch_size`),
tokens frame-major then row-major (the `Conv3d` patch embedding and `flatten(2)`). Timestep: as
passed (the flow-matching scheduler's 0-1000 timesteps).

Rotary embedding: the model passes (cos, sin), each (video tokens, head dim) in float32, to every
attention as `image_rotary_emb` (keyword only); the processor rotates the video queries and keys
after norm_q / norm_k, pairs of adjacent channels (Flux's arithmetic), and never the text. When a
method changes the video tokens an attention sees, bigain takes the tables out of the call and
rotates the video part of the q/k norm outputs with the rows of the tokens present.

Image-to-video by token replacement (`image_condition_type="token_replace"`, HunyuanVideo-I2V)
modulates the first frame's tokens apart inside its blocks; it is not supported yet and is refused.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in
forward order (dual- then single-stream, as Flux): on the published 20 + 40 blocks, dual-stream
blocks 3-12 and 15-19 and single-stream blocks 0-5. Windows stay within a frame (st=1), as Wan.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, double_single_blocks, relative_placement

PROCESSORS = ("HunyuanVideoAttnProcessor2_0",)


class HunyuanVideoBackbone(Backbone):
    name = "hunyuan"
    classes = ("HunyuanVideoTransformer3DModel",)
    label = "HunyuanVideo"  # the family in messages
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the dual- then single-stream blocks "
        "(dual 3-12, 15-19 and single 0-5 of the published 20 + 40); windows within a frame"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = None  # Attention.forward takes it among **cross_attention_kwargs: keyword only
    mask_kwarg = "attention_mask"
    mask_position = 2  # Attention.forward(hidden_states, encoder_hidden_states, attention_mask, ...)
    kv_suffix_join_processors = PROCESSORS

    def blocks(self, model: nn.Module) -> list[Block]:
        if getattr(model.config, "image_condition_type", None) == "token_replace":
            raise ValueError(
                "bigain: HunyuanVideo with image_condition_type='token_replace' (HunyuanVideo-I2V) modulates "
                "the first frame's tokens apart inside its blocks; bigain does not support it yet"
            )
        return double_single_blocks(model, single="text_suffix")

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = args[0] if args else kwargs.get("hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError(f"bigain: the {self.label} transformer input must be a (B, C, F, H, W) latent")
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        dev, host = as_timesteps(t, x.shape[0], x.device)
        p, p_t = int(model.config.patch_size), int(model.config.patch_size_t)
        f, h, w = (int(s) for s in x.shape[-3:])
        return ForwardInfo(ops.Grid(f // p_t, h // p, w // p), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        return ops.rope_pairs(x, cos, sin)  # diffusers' apply_rotary_emb(use_real=True), sequence_dim=1
