"""Compute-precision names shared by every application: "fp32", "bf16", "fp16" and their autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """A precision name (or torch dtype) as a torch dtype; None means fp32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype={dtype}: allowed are fp32, bf16, fp16")
        return dtype
    name = _ALIASES.get(dtype, dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: allowed are fp32, bf16, fp16")
    return DTYPES[name]


def autocast(device: torch.device, dtype: str | torch.dtype | None) -> Any:
    """Autocast to `dtype` on `device`'s kind; fp32 runs as is (no autocast at all)."""
    dt = resolve_dtype(dtype)
    if dt == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dt)
