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

from torch import nn

from .base import Backbone, Block, ForwardInfo, patch_grid_forward, relative_placement


class SD3Backbone(Backbone):
    name = "sd3"
    classes = ("SD3Transformer2DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 1-10 of SD3-medium's 24); image stream only"
    )

    def blocks(self, model: nn.Module) -> list[Block]:
        out = []
        for i, b in enumerate(model.transformer_blocks):
            roles = {"attn": b.attn, "ff": b.ff}
            if getattr(b, "use_dual_attention", False) and getattr(b, "attn2", None) is not None:
                roles["attn2"] = b.attn2
            out.append(Block(i, f"transformer_blocks.{i}", b, 1, roles, joint=True))
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        return patch_grid_forward(model, args, kwargs, 3)  # (x, encoder_hidden_states, pooled, timestep)
