"""Stable Diffusion 3 / 3.5 (`SD3Transformer2DModel`): MMDiT `JointTransformerBlock`s, where one
joint attention mixes the image tokens (`hidden_states`) and the text tokens (`encoder_hidden_states`).

bigain compresses the image stream only: token methods reduce the image tokens the joint attention
receives (text tokens untouched; the last block's `context_pre_only` changes nothing for the image
stream); SD3.5's second image self-attention (`attn2`, not a cross-attention) runs on the same
reduced tokens; KV methods downsample the image part of the joint keys and values.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (blocks at depth
1/28-12/28 except 6/28): blocks 1-10 of SD3-medium's 24. Timesteps arrive on the 0-1000 scale.
"""

from __future__ import annotations

from .spec import BackboneSpec, SpecBackbone, Stack

SD3 = BackboneSpec(
    name="sd3",
    classes=("SD3Transformer2DModel",),
    # "attn2": SD3.5's second image self-attention (None on the other blocks, so left out there)
    stacks=(Stack("transformer_blocks", {"attn": "attn", "attn2": "attn2", "ff": "ff"}, text="joint"),),
    placement="relative",
    placement_text=(
        "the DiT-XL/2 placement mapped by relative depth (blocks 1-10 of SD3-medium's 24); image stream only"
    ),
)


class SD3Backbone(SpecBackbone):
    spec = SD3
