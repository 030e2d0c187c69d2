"""Applying methods to diffusers models through hooks on the sub-layers the backbone adapter names."""

from .. import backbones as _backbones
from ..backbones import resolve_denoiser, resolve_denoisers
from .api import (
    ModelInfo,
    PatchedBlock,
    PatchReport,
    apply,
    compressed,
    host_timesteps,
    inspect_model,
    is_patched,
    remove,
    sample_keys,
    set_grid,
)

__all__ = [
    "SUPPORTED",
    "ModelInfo",
    "PatchReport",
    "PatchedBlock",
    "apply",
    "compressed",
    "host_timesteps",
    "inspect_model",
    "is_patched",
    "remove",
    "resolve_denoiser",
    "resolve_denoisers",
    "sample_keys",
    "set_grid",
]


def __getattr__(name: str) -> object:
    # The supported classes change with `bigain.backbones.register`; a name bound at import would not.
    if name == "SUPPORTED":
        return _backbones.SUPPORTED
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
