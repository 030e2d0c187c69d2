"""Denoisers built on Flux's blocks (a copy of `FluxTransformerBlock`, `FluxSingleTransformerBlock`
and `FluxAttention` with its processor): the Flux adapter (`flux.py`) with their own class names,
forward positions, timestep scale and position ids. Each is a subclass, not a `BackboneSpec`
record, because Flux's grid reading from `img_ids` (one host read per ids tensor, remembered) is code.

What they share with Flux: double-stream blocks (`transformer_blocks`: joint attention, image and
text with their own projections; roles "attn" and "ff") then single-stream blocks
(`single_transformer_blocks`: the block joins [text; image] and its attention takes that one
sequence; role "attn" only: the parallel MLP branch is not a role). Tokens are packed latent patches
(B, N, C). Rotary embedding: the model makes (cos, sin) tables of shape (text + image, D) from
[txt_ids; img_ids] and passes them to every attention as `image_rotary_emb`; the processor rotates
pairs of adjacent channels after the q/k norms (Flux's arithmetic, checked line by line against each
processor). When a method changes the image tokens an attention sees, bigain takes the tables out of
the call and rotates with the rows of the tokens present. No attention mask is passed.

Bria (`BriaTransformer2DModel`, Bria 3.x): Flux's forward positions (timestep 4th, `img_ids` 5th) and
ids (rows and columns from 0), but the model embeds the timestep as given and `BriaPipeline` passes
the scheduler's 0-1000 timesteps, so they are read as they are (Flux: sigma times 1000).

LongCat-Image (`LongCatImageTransformer2DModel`): forward(hidden_states, encoder_hidden_states,
timestep, img_ids, txt_ids, ...) (Chroma's positions), sigma in [0, 1] read times 1000. Its pipeline
numbers the image ids after the text: rows and columns start at the text length (512), so the grid
is read as last id minus first id plus one. The edit pipeline (`LongCatImageEditPipeline`) appends a
reference image's tokens (ids of another modality) to the latent's; such calls are refused with a
message (the reference tokens are not on the latent's grid).

Ovis-Image (`OvisImageTransformer2DModel`): forward(hidden_states, encoder_hidden_states, timestep,
img_ids, txt_ids, ...), sigma in [0, 1] read times 1000, Flux's ids; its single-stream blocks have a
gated (SwiGLU) MLP branch, which is not a role either.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in
forward order (double then single), as Flux.
"""

from __future__ import annotations

import torch

from .flux import FluxBackbone


class BriaBackbone(FluxBackbone):
    name = "bria"
    classes = ("BriaTransformer2DModel",)
    label = "Bria"
    timestep_scale = 1.0  # BriaPipeline passes the scheduler's 0-1000 timesteps


class LongCatImageBackbone(FluxBackbone):
    name = "longcat-image"
    classes = ("LongCatImageTransformer2DModel",)
    label = "LongCat-Image"
    timestep_position = 2  # forward(hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids, ...)
    img_ids_position = 3

    def ids_grid(self, ids: torch.Tensor) -> tuple[int, int]:
        # The ids start at the text length: the span from the first to the last token, in one read.
        first, last = torch.stack([ids[0], ids[-1]]).tolist()
        if last[0] != first[0]:
            raise ValueError(
                "bigain: this LongCat-Image call appends the tokens of a reference image (img_ids of another "
                "modality, as LongCatImageEditPipeline passes them), which are not on the latent's grid; "
                "bigain supports LongCat-Image text-to-image calls only"
            )
        return int(last[1] - first[1]) + 1, int(last[2] - first[2]) + 1


class OvisImageBackbone(FluxBackbone):
    name = "ovis-image"
    classes = ("OvisImageTransformer2DModel",)
    label = "Ovis-Image"
    timestep_position = 2  # forward(hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids, ...)
    img_ids_position = 3
