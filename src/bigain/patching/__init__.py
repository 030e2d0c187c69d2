"""Applying methods to diffusers models through forward hooks."""

from .api import PatchedBlock, PatchReport, apply, compressed, is_patched, remove, sample_keys
from .discovery import SUPPORTED, inspect_model, resolve_denoiser

__all__ = [
    "SUPPORTED",
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
