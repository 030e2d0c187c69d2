"""Applying methods to diffusers models through hooks on the sub-layers the backbone adapter names."""

from ..backbones import SUPPORTED, resolve_denoiser, resolve_denoisers
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
