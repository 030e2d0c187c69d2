"""DiT and PixArt (`DiTTransformer2DModel`, `PixArtTransformer2DModel`): a flat list of
`BasicTransformerBlock`s on one patch grid (latent H/p x W/p tokens).

Default placement: the paper's DiT-XL/2 blocks 1-5 and 7-11 (0-based), taken literally on every
DiT/PixArt (on a model with fewer blocks, the indices that exist). The merge metric is the
attention input (the adaLN-modulated `norm1` output), as in the paper's DiT code.
"""

from __future__ import annotations

from .spec import BackboneSpec, SpecBackbone, Stack

DIT = BackboneSpec(
    name="dit",
    classes=("DiTTransformer2DModel", "PixArtTransformer2DModel"),
    stacks=(Stack("transformer_blocks", {"attn": "attn1", "cross": "attn2", "ff": "ff"}),),
    placement="paper-dit",
    placement_text="blocks 1-5 and 7-11 (0-based), the paper's DiT-XL/2 placement taken literally",
)


class DiTBackbone(SpecBackbone):
    spec = DIT
