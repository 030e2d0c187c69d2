"""Denoisers built on Wan's block (`WanTransformerBlock` or a copy of it): the Wan adapter (`wan.py`)
with their own class names and the few points where they differ. Each is a subclass, not a
`BackboneSpec` record, because Wan's rotary layout ((cos, sin) tables of shape (1, S, 1, D) in
float64, rotated per head) and its reading of a (B, C, F, H, W) latent are code.

What they share with Wan: a flat list `blocks` of blocks on one video token grid, each with a
self-attention `attn1` over the video tokens (role "attn"), a cross-attention `attn2` to the text
(and the image context on I2V checkpoints; role "cross") and a feed-forward `ffn` (role "ff"); the
adaLN modulation applied by the block around its sub-layers at full length. Grid: the latent over
`config.patch_size` (p_t, p_h, p_w), tokens frame-major then row-major (`Conv3d` patch embedding).
Timestep: the forward's second argument on the 0-1000 scale. Rotary embedding: `rotary_emb` passed
to `attn1` as its fourth argument and applied after the q/k norms; when a method changes the tokens
`attn1` sees, bigain rotates the q/k norm outputs itself with the rows of the tokens present (kept
tokens, or each downsampled key's nearest-exact sample). bigain takes the rows from the tables the
model passes, whatever positions they hold, so a model with its own position rule is followed too.

SkyReels-V2 (`SkyReelsV2Transformer3DModel`, T2V, I2V and the diffusion-forcing models): Wan's block
with an attention mask argument. With `num_frame_per_block > 1` the model passes a block-causal
(1, 1, S, S) mask over the video tokens to every `attn1`; which video tokens may see which depends
on their frames, and merged tokens can join tokens of several frames, so such models are refused,
at `apply` and at every forward (the diffusion-forcing pipelines set it per call from their
`causal_block_size` argument). With `num_frame_per_block = 1` (the default) the mask is None and
the block is Wan's.
Diffusion forcing (`enable_diffusion_forcing=True`) passes per-frame timesteps (B, F); as Wan 2.2's
per-token timesteps, they are read per row as the largest, the step of the row's noisiest frames.

Wan VACE (`WanVACETransformer3DModel`): Wan's blocks plus `vace_blocks`, a control branch that runs
once before the main blocks on the control tokens and yields a hint per entry of
`config.vace_layers`; the forward adds each hint to the output of main block `vace_layers[i]`. The
compression sites are the main blocks only: bigain expands every reduced sub-layer output back to
the full token count inside the block, so the block's output has every token in its place and each
hint is added to the tokens it was made for. The VACE blocks are not sites (their block input is the
main hidden states, not the control tokens their attention sees) and run exactly as without bigain.

ChronoEdit (`ChronoEditTransformer3DModel`): Wan's block and forward (per-token timesteps included)
with its own rotary position rule: for a two-frame latent the temporal rows are those of positions
0 and `rope_temporal_skip_len - 1`, not 0 and 1. Only the table contents differ, which bigain does
not depend on.

Default placement: the DiT-XL/2 placement mapped by relative depth over the (main) blocks, as Wan.
"""

from __future__ import annotations

from torch import nn

from .base import Block, ForwardInfo
from .wan import WanBackbone


class SkyReelsV2Backbone(WanBackbone):
    name = "skyreels-v2"
    classes = ("SkyReelsV2Transformer3DModel",)
    placement = (
        "the DiT-XL/2 placement mapped by relative depth, as Wan (blocks 2-6 and 8-12 of the 1.3B models' 30); "
        "windows within a frame"
    )

    def blocks(self, model: nn.Module) -> list[Block]:
        self._check_causal(model)
        return super().blocks(model)

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        self._check_causal(model)  # the diffusion-forcing pipelines may set it per call (causal_block_size)
        return super().read_forward(model, args, kwargs, cache)

    @staticmethod
    def _check_causal(model: nn.Module) -> None:
        per_block = int(getattr(model.config, "num_frame_per_block", 1) or 1)
        if per_block > 1:
            raise ValueError(
                f"bigain: SkyReels-V2 with num_frame_per_block={per_block} passes a block-causal attention mask "
                "over the video tokens, which depends on each token's frame; merged tokens and downsampled keys "
                "would not keep it, so bigain does not support these models (nor causal_block_size > 1)"
            )


class WanVACEBackbone(WanBackbone):
    name = "wan-vace"
    classes = ("WanVACETransformer3DModel",)
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the main blocks (the VACE control blocks are "
        "left whole); windows within a frame"
    )


class ChronoEditBackbone(WanBackbone):
    name = "chronoedit"
    classes = ("ChronoEditTransformer3DModel",)
    placement = (
        "the DiT-XL/2 placement mapped by relative depth, as Wan (blocks 2-8 and 10-17 of ChronoEdit-14B's 40); "
        "windows within a frame"
    )
