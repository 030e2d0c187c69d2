"""Chroma (`ChromaTransformer2DModel`): Flux's layout without the pooled projection and guidance
(the modulation comes from a separate approximator, not a compression site): double-stream blocks
(joint attention, image and text with their own projections) followed by single-stream blocks (one
attention over [text; image]), with Flux's attention (`FluxAttention`, `FluxAttnProcessor`). Tokens
are packed latent patches; the grid comes from `img_ids` (row, column per token); the timestep
arrives as a sigma in [0, 1] and is read as t = 1000 * sigma. Everything but the two points below
is the Flux adapter's (rotary rows that follow merged tokens and downsampled keys included).

Forward signature: forward(hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids,
attention_mask, ...), so the timestep and `img_ids` sit one position earlier than in Flux. The
single-stream blocks take no `encoder_hidden_states`: their input is already [text; image].

Attention mask: ChromaPipeline passes a (B, text + image) mask over [text; image] that masks the
padded text (all but the first padding token) and keeps every image token; each block turns it into
a (B, 1, text + image, text + image) mask (query entry times key entry) for its attention. When a
method shortens the image keys (merged/pruned tokens, downsampled keys), bigain cuts that many image
keys off the end of the mask, and as many image queries when the queries are shortened too, so the
padded text stays masked. The image entries of the mask must all be kept (as the pipeline makes it);
a mask of another shape is refused with a message.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in
forward order (double then single), as Flux.
"""

from __future__ import annotations

from torch import nn

from .base import Block, double_single_blocks
from .flux import FluxBackbone


class ChromaBackbone(FluxBackbone):
    name = "chroma"
    classes = ("ChromaTransformer2DModel",)
    label = "Chroma"
    timestep_position = 2  # forward(hidden_states, encoder_hidden_states, timestep, img_ids, ...)
    img_ids_position = 3
    mask_kwarg = "attention_mask"
    mask_position = 2  # FluxAttention.forward(hidden_states, encoder_hidden_states, attention_mask, ...)
    mask_layout = "pairs"

    def blocks(self, model: nn.Module) -> list[Block]:
        # Flux's stack without Flux's version check: Chroma's single blocks take no
        # encoder_hidden_states (their input is already [text; image])
        return double_single_blocks(model)
