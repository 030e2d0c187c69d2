"""Laplacian frequency score of tokens on their grid (BiGain-TM's destination score)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grid import tokens_to_map
from .tracing import is_compiling

_KERNELS: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def laplacian_kernel(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 3x3 four-neighbour stencil, built by fills on the device (no host data is copied) and
    cached per (device, dtype) outside torch.compile (where it is a constant of the graph)."""
    key = (torch.device(device), dtype)
    k = None if is_compiling() else _KERNELS.get(key)
    if k is None:
        k = torch.zeros(3, 3, device=device, dtype=dtype)
        k[1, :] = 1.0
        k[:, 1] = 1.0
        k[1, 1] = -4.0
        if not is_compiling():
            _KERNELS[key] = k
    return k


def laplacian_score(metric: torch.Tensor, height: int, width: int, norm: str = "l1") -> torch.Tensor:
    """Per-token high-frequency energy, (B, N, C) -> (B, N) float32.

    Depthwise 4-neighbour Laplacian with zero padding (border tokens get an extra
    |x|-sized response, as in the reference), reduced over channels by L1 or L2.
    Low scores mark spectrally smooth tokens: good merge destinations.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    x = tokens_to_map(metric.float(), height, width)
    c = x.shape[1]
    lap = F.conv2d(x, laplacian_kernel(x.device, x.dtype).expand(c, 1, 3, 3), padding=1, groups=c)
    if norm == "l1":
        score = lap.abs().sum(dim=1)
    else:
        score = lap.square().sum(dim=1).sqrt()
    return score.flatten(1)
