"""DiT and PixArt (`DiTTransformer2DModel`, `PixArtTransformer2DModel`): a flat list of
`BasicTransformerBlock`s on one patch grid (latent H/p x W/p tokens).

Default placement: the paper's DiT-XL/2 blocks 1-5 and 7-11 (0-based), taken literally on every
DiT/PixArt (on a model with fewer blocks, the indices that exist). The merge metric is the
attention input (the adaLN-modulated `norm1` output), as in the paper's DiT code.
"""

from __future__ import annotations

from torch import nn

from .base import PAPER_DIT_BLOCKS, Backbone, Block, ForwardInfo, patch_grid_forward
from .unet import _roles


class DiTBackbone(Backbone):
    name = "dit"
    classes = ("DiTTransformer2DModel", "PixArtTransformer2DModel")
    default_metric = "attn"
    placement = "blocks 1-5 and 7-11 (0-based), the paper's DiT-XL/2 placement taken literally"

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, _roles(b)) for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return tuple(i for i in PAPER_DIT_BLOCKS if i < len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        pos = 1 if type(model).__name__.startswith("DiT") else 2  # PixArt: (x, encoder_hidden_states, timestep)
        return patch_grid_forward(model, args, kwargs, pos)
