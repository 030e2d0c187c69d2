"""Key/value source downsampling (ToDo, and BiGain-TD's interpolate-extrapolate blend).

The map operators take an image map (B, C, H, W) with a spatial factor s, or a video map
(B, C, T, H, W) with a spatial factor s and a frame factor ft. Sizes not divisible by a factor are
floored, as torch's `interpolate(mode="nearest-exact")` and `avg_pool` floor them: the output has
T // ft frames (and H // s rows, W // s columns); the average drops the trailing T % ft frames, and
nearest-exact takes torch's source index min(floor((i + 0.5) * T / (T // ft)), T - 1), which is
offset floor(ft / 2) in each block when T is divisible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fast
from .grid import (
    Grid,
    check_tokens,
    frames_as_batch,
    tokens_to_volume,
    volume_to_tokens,
)
from .tracing import is_compiling

_POSITIONS: dict[tuple[tuple[int, int, int], int, int, torch.device], torch.Tensor] = {}


def nearest_exact(x: torch.Tensor, factor: int, frame_factor: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H//s, W//s), the element at offset floor(s/2) of each block.

    A video map (B, C, T, H, W) -> (B, C, T//ft, H//s, W//s), offset floor(ft/2) in time.
    """
    if x.dim() == 5:
        size = (x.shape[-3] // frame_factor, x.shape[-2] // factor, x.shape[-1] // factor)
        return F.interpolate(x, size=size, mode="nearest-exact")
    _check_image_map(x, frame_factor)
    return F.interpolate(x, size=(x.shape[-2] // factor, x.shape[-1] // factor), mode="nearest-exact")


def average(x: torch.Tensor, factor: int, frame_factor: int = 1) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H//s, W//s) mean of each s x s block.

    A video map (B, C, T, H, W) -> (B, C, T//ft, H//s, W//s) mean of each ft x s x s block.
    """
    if x.dim() == 5:
        kernel = (frame_factor, factor, factor)
        return F.avg_pool3d(x, kernel_size=kernel, stride=kernel)
    _check_image_map(x, frame_factor)
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


def _check_image_map(x: torch.Tensor, frame_factor: int) -> None:
    if frame_factor != 1:
        raise ValueError(
            f"frame_factor {frame_factor} needs a video map (B, C, T, H, W), got shape {tuple(x.shape)}"
        )


def blend_downsample(
    x: torch.Tensor, factor: int, alpha: float | torch.Tensor, frame_factor: int = 1
) -> torch.Tensor:
    """alpha * nearest + (1 - alpha) * average, alpha unclamped (>1 extrapolates a high-pass residual).

    `alpha` is a float or a per-sample tensor (B,). alpha == 1 is ToDo, alpha == 0 average pooling.
    A tensor alpha gives the same bits as a Python float would, row by row: 1 - alpha is taken in
    alpha's own precision (pass float64 to match Python arithmetic), and both weights are rounded
    once to the precision PyTorch gives a Python scalar (float32, float64 for float64 inputs), the
    products rounded to x's dtype, as `alpha * near + (1 - alpha) * avg` does with Python floats.
    `x` is an image map (B, C, H, W) or, with `frame_factor`, a video map (B, C, T, H, W).
    """
    if isinstance(alpha, (int, float)):
        if alpha == 1.0:
            return nearest_exact(x, factor, frame_factor)
        if alpha == 0.0:
            return average(x, factor, frame_factor)
        return nearest_exact(x, factor, frame_factor) * alpha + average(x, factor, frame_factor) * (1 - alpha)
    a = alpha.view(-1, *([1] * (x.dim() - 1)))
    weight_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    w_near, w_avg = a.to(weight_dtype).to(x.device), (1 - a).to(weight_dtype).to(x.device)
    near = (nearest_exact(x, factor, frame_factor) * w_near).to(x.dtype)
    return near + (average(x, factor, frame_factor) * w_avg).to(x.dtype)


def nearest_positions(height: int, width: int, factor: int, device: torch.device) -> torch.Tensor:
    """Flat token index of each nearest-exact sample of an H x W grid downsampled by `factor`:
    ((H//s) * (W//s),) int64; `downsample_positions` on one frame."""
    return downsample_positions(Grid.image(height, width), factor, 1, device)


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


def downsample(
    tokens: torch.Tensor,
    grid: Grid,
    factor: int,
    alpha: float | torch.Tensor = 1.0,
    frame_factor: int = 1,
    weights: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """(B, T*H*W, C) tokens on `grid` -> (B, N', C) on `grid.downsampled(factor, frame_factor)`.

    The blend alpha * nearest-exact + (1 - alpha) * average over ft x s x s blocks (alpha a float or
    a per-sample tensor (B,), as in `blend_downsample`). With frame_factor == 1 every frame is
    downsampled on its own: frames are batch rows of `downsample_tokens`, so a one-frame grid gives
    its bits exactly, and the fused Triton kernel serves any number of frames. With frame_factor > 1
    the PyTorch reference runs (no fused kernel for the 3-D blocks). `weights`: `blend_weights(alpha,
    tokens.dtype)` when the caller has them (used with frame_factor == 1; the 3-D blend makes the same
    weights from alpha). Raises ValueError when a factor exceeds its axis (the key/value source would
    be empty).
    """
    check_tokens(tokens, grid)
    out = grid.downsampled(factor, frame_factor)
    if frame_factor == 1:
        b, _, c = tokens.shape
        t = grid.frames
        if t > 1:  # one alpha (one pair of weights) per frame row
            if isinstance(alpha, torch.Tensor) and alpha.numel() > 1:
                alpha = alpha.reshape(-1, 1).expand(-1, t).reshape(-1)
            if weights is not None:
                weights = tuple(_per_frame(w, t) for w in weights)  # type: ignore[assignment]
        rows = downsample_tokens(
            frames_as_batch(tokens, grid), grid.height, grid.width, factor, alpha, weights
        )
        return rows.reshape(b, out.tokens, c)
    return volume_to_tokens(blend_downsample(tokens_to_volume(tokens, grid), factor, alpha, frame_factor))


def _per_frame(w: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, 1, 1) per-row weights -> (B*T, 1, 1), each row repeated for its frames (one row: kept)."""
    if w.shape[0] == 1:
        return w
    return w.reshape(-1, 1).expand(-1, frames).reshape(-1, 1, 1)


def downsample_positions(
    grid: Grid, factor: int, frame_factor: int = 1, device: torch.device | None = None
) -> torch.Tensor:
    """Flat token index that each token of `downsample(..., alpha=1)` copies: (N',) int64.

    Where a downsampled key sits on the input grid (e.g. to pick its rotary position); computed by
    torch's own nearest-exact on an index grid, so it is the same selection for every grid size.
    Cached per (grid, factors, device) outside torch.compile.
    """
    grid.downsampled(factor, frame_factor)  # validates the factors
    device = torch.device(device if device is not None else "cpu")
    key = (grid.shape, factor, frame_factor, device)
    pos = None if is_compiling() else _POSITIONS.get(key)
    if pos is None:
        ids = torch.arange(grid.tokens, device=device, dtype=torch.float64)
        if frame_factor == 1:
            picked = nearest_exact(ids.view(grid.frames, 1, grid.height, grid.width), factor)
        else:
            picked = nearest_exact(ids.view(1, 1, *grid.shape), factor, frame_factor)
        pos = picked.flatten().to(torch.int64)
        if not is_compiling():
            if len(_POSITIONS) >= 64:
                _POSITIONS.clear()
            _POSITIONS[key] = pos
    return pos
