"""Backbone adapters: one module per denoiser family, found by `find_backbone`.

Adding a backbone is one module with a `Backbone` subclass and one entry in `BACKBONES`.
"""

from __future__ import annotations

from torch import nn

from .base import PAPER_DIT_BLOCKS, Backbone, Block, ForwardInfo, as_timesteps, relative_placement
from .dit import DiTBackbone
from .flux import FluxBackbone
from .sd3 import SD3Backbone
from .unet import UNetBackbone
from .wan import WanBackbone

BACKBONES: list[Backbone] = [UNetBackbone(), DiTBackbone(), SD3Backbone(), FluxBackbone(), WanBackbone()]
SUPPORTED = tuple(c for b in BACKBONES for c in b.classes)


def resolve_denoiser(model_or_pipeline: object) -> nn.Module:
    """The denoiser of a pipeline (`unet`/`transformer`), a bundle (`denoiser`) or the model itself."""
    for attr in ("denoiser", "unet", "transformer"):
        inner = getattr(model_or_pipeline, attr, None)
        if isinstance(inner, nn.Module):
            return inner
    if isinstance(model_or_pipeline, nn.Module):
        return model_or_pipeline
    raise TypeError(
        f"expected a diffusers pipeline or model, got {type(model_or_pipeline).__name__}; "
        f"supported denoisers: {', '.join(SUPPORTED)}"
    )


def find_backbone(model: nn.Module) -> Backbone:
    """The adapter for `model`; TypeError listing the supported classes otherwise."""
    for b in BACKBONES:
        if type(model).__name__ in b.classes:
            return b
    for b in BACKBONES:
        if b.matches(model):
            return b
    raise TypeError(
        f"bigain does not support {type(model).__name__}; supported denoisers: {', '.join(SUPPORTED)} "
        "(or a pipeline holding one as `unet`/`transformer`)"
    )


__all__ = [
    "BACKBONES",
    "PAPER_DIT_BLOCKS",
    "SUPPORTED",
    "Backbone",
    "Block",
    "ForwardInfo",
    "as_timesteps",
    "find_backbone",
    "relative_placement",
    "resolve_denoiser",
]
