"""Laplacian frequency score of tokens on their grid (BiGain-TM's destination score)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .grid import Grid, check_tokens, frames_as_batch, tokens_to_map
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
    _check_norm(norm)
    x = tokens_to_map(metric.float(), height, width)
    return _reduce_channels(_laplacian_2d(x), norm).flatten(1)


def frequency_score(
    metric: torch.Tensor, grid: Grid, norm: str = "l1", temporal: bool = False
) -> torch.Tensor:
    """The Laplacian score on a T x H x W grid, (B, T*H*W, C) -> (B, T*H*W) float32.

    By default frame by frame: `laplacian_score` on every frame (the 2-D 4-neighbour stencil, zero
    padding at the frame's borders), so on one frame it is `laplacian_score` bit for bit. Video
    latent frames are several video frames apart, so a difference across frames measures motion
    more than texture; the spatial score is the one BiGain-TM was designed and tuned with.

    `temporal=True` adds the +-1-frame neighbours (the 6-neighbour 3-D stencil): the per-channel
    map becomes lap2d + (x[t-1] - x[t]) + (x[t+1] - x[t]). In time the edges replicate (a first or
    last frame has one temporal neighbour, not a zero one): the zero padding in space is kept for
    parity with the reference implementation, which has no time axis to be faithful to, and with
    replication a one-frame grid scores exactly as without `temporal`.
    """
    _check_norm(norm)
    check_tokens(metric, grid)
    b, _, c = metric.shape
    t, h, w = grid
    if not temporal or t == 1:
        return laplacian_score(frames_as_batch(metric, grid), h, w, norm).reshape(b, t * h * w)
    x = tokens_to_map(frames_as_batch(metric.float(), grid), h, w)  # (B*T, C, H, W)
    lap = _laplacian_2d(x).view(b, t, c, h, w)
    x = x.view(b, t, c, h, w)
    prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)
    after = torch.cat([x[:, 1:], x[:, -1:]], dim=1)
    lap = lap + ((prev - x) + (after - x))
    return _reduce_channels(lap, norm, dim=2).reshape(b, t * h * w)


def _check_norm(norm: str) -> None:
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")


def _laplacian_2d(x: torch.Tensor) -> torch.Tensor:
    """Depthwise 4-neighbour Laplacian of (B, C, H, W) float32 maps, zero padding 1."""
    c = x.shape[1]
    return F.conv2d(x, laplacian_kernel(x.device, x.dtype).expand(c, 1, 3, 3), padding=1, groups=c)


def _reduce_channels(lap: torch.Tensor, norm: str, dim: int = 1) -> torch.Tensor:
    if norm == "l1":
        return lap.abs().sum(dim=dim)
    return lap.square().sum(dim=dim).sqrt()
