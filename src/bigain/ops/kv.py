"""Key/value source downsampling (ToDo, and BiGain-TD's interpolate-extrapolate blend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fast
from .tracing import is_compiling

_POSITIONS: dict[tuple[int, int, int, torch.device], torch.Tensor] = {}


def nearest_exact(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H//s, W//s), the element at offset floor(s/2) of each block."""
    return F.interpolate(x, size=(x.shape[-2] // factor, x.shape[-1] // factor), mode="nearest-exact")


def average(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H//s, W//s) mean of each s x s block."""
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


def blend_downsample(x: torch.Tensor, factor: int, alpha: float | torch.Tensor) -> torch.Tensor:
    """alpha * nearest + (1 - alpha) * average, alpha unclamped (>1 extrapolates a high-pass residual).

    `alpha` is a float or a per-sample tensor (B,). alpha == 1 is ToDo, alpha == 0 average pooling.
    A tensor alpha gives the same bits as a Python float would, row by row: 1 - alpha is taken in
    alpha's own precision (pass float64 to match Python arithmetic), and both weights are rounded
    once to the precision PyTorch gives a Python scalar (float32, float64 for float64 inputs), the
    products rounded to x's dtype, as `alpha * near + (1 - alpha) * avg` does with Python floats.
    """
    if isinstance(alpha, (int, float)):
        if alpha == 1.0:
            return nearest_exact(x, factor)
        if alpha == 0.0:
            return average(x, factor)
        return nearest_exact(x, factor) * alpha + average(x, factor) * (1 - alpha)
    a = alpha.view(-1, 1, 1, 1)
    weight_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w_near, w_avg = a.to(weight_dtype).to(x.device), (1 - a).to(weight_dtype).to(x.device)
    near = (nearest_exact(x, factor) * w_near).to(x.dtype)
    return near + (average(x, factor) * w_avg).to(x.dtype)


def nearest_positions(height: int, width: int, factor: int, device: torch.device) -> torch.Tensor:
    """Flat token index of each nearest-exact sample of an H x W grid downsampled by `factor`:
    ((H//s) * (W//s),) int64, computed by torch's own nearest-exact on an index grid (so it is the
    same selection for every grid size). Cached per (grid, factor, device) outside torch.compile."""
    key = (height, width, factor, torch.device(device))
    pos = None if is_compiling() else _POSITIONS.get(key)
    if pos is None:
        grid = torch.arange(height * width, device=device, dtype=torch.float64).view(1, 1, height, width)
        pos = nearest_exact(grid, factor).flatten().to(torch.int64)
        if not is_compiling():
            if len(_POSITIONS) >= 64:
                _POSITIONS.clear()
            _POSITIONS[key] = pos
    return pos


def blend_weights(alpha: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (alpha, 1 - alpha) as (B, 1, 1) weights for tokens of `dtype`, rounded as the blend
    rounds them (see `blend_downsample`). Made once per forward, not per block."""
    a = alpha.reshape(-1, 1, 1)
    weight_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return a.to(weight_dtype), (1 - a).to(weight_dtype)


def downsample_tokens(
    tokens: torch.Tensor,
    height: int,
    width: int,
    factor: int,
    alpha: float | torch.Tensor = 1.0,
    weights: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B, N, C) tokens on an H x W grid -> (B, (H//s)*(W//s), C) key/value source.

    On CUDA with Triton this is one fused kernel reading the token layout directly (`bigain.ops.fast`).
    The reference works on the token layout too: the nearest-exact branch is one row gather, the
    average branch pools a channels-last view (no transposed copy); both give the bits of the
    (B, C, H, W) operators. `weights`: `blend_weights(alpha, tokens.dtype)`, when the caller has
    them already (a per-row alpha is the same for every block of a forward).
    """
    if factor == 1:
        return tokens
    if fast.active(tokens):
        return fast.kernels().downsample_tokens(tokens, height, width, factor, alpha)
    b, _, c = tokens.shape
    scalar = not isinstance(alpha, torch.Tensor)
    near = avg = None
    if not (scalar and alpha == 0.0):
        near = tokens.index_select(1, nearest_positions(height, width, factor, tokens.device))
    if not (scalar and alpha == 1.0):
        grid = tokens.reshape(b, height, width, c).permute(0, 3, 1, 2)  # a channels-last view
        avg = F.avg_pool2d(grid, kernel_size=factor, stride=factor).permute(0, 2, 3, 1).reshape(b, -1, c)
    if scalar:
        if near is None or avg is None:
            return near if avg is None else avg
        return near * alpha + avg * (1 - alpha)
    w_near, w_avg = weights if weights is not None else blend_weights(alpha, tokens.dtype)
    return (near * w_near).to(tokens.dtype) + (avg * w_avg).to(tokens.dtype)
