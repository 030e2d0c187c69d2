"""Applying methods to diffusers models through hooks on the sub-layers the backbone adapter names."""

from ..backbones import SUPPORTED, resolve_denoiser
from .api import (
    ModelInfo,
    PatchedBlock,
    PatchReport,
    apply,
    compressed,
    inspect_model,
    is_patched,
    remove,
    sample_keys,
)

__all__ = [
    "SUPPORTED",
    "ModelInfo",
    "PatchReport",
    "PatchedBlock",
    "apply",
    "compressed",
    "inspect_model",
    "is_patched",
    "remove",
    "resolve_denoiser",
    "sample_keys",
]
