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
    map_to_tokens,
    tokens_to_map,
    tokens_to_volume,
    volume_to_tokens,
)


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


def downsample_tokens(
    tokens: torch.Tensor, height: int, width: int, factor: int, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """(B, N, C) tokens on an H x W grid -> (B, (H//s)*(W//s), C) key/value source.

    On CUDA with Triton this is one fused kernel reading the token layout directly (`bigain.ops.fast`).
    """
    if factor == 1:
        return tokens
    if fast.active(tokens):
        return fast.kernels().downsample_tokens(tokens, height, width, factor, alpha)
    return map_to_tokens(blend_downsample(tokens_to_map(tokens, height, width), factor, alpha))


def downsample(
    tokens: torch.Tensor,
    grid: Grid,
    factor: int,
    alpha: float | torch.Tensor = 1.0,
    frame_factor: int = 1,
) -> torch.Tensor:
    """(B, T*H*W, C) tokens on `grid` -> (B, N', C) on `grid.downsampled(factor, frame_factor)`.

    The blend alpha * nearest-exact + (1 - alpha) * average over ft x s x s blocks (alpha a float or
    a per-sample tensor (B,), as in `blend_downsample`). With frame_factor == 1 every frame is
    downsampled on its own: frames are batch rows of `downsample_tokens`, so a one-frame grid gives
    its bits exactly, and the fused Triton kernel serves any number of frames. With frame_factor > 1
    the PyTorch reference runs (no fused kernel for the 3-D blocks). Raises ValueError when a factor
    exceeds its axis (the key/value source would be empty).
    """
    check_tokens(tokens, grid)
    out = grid.downsampled(factor, frame_factor)
    if frame_factor == 1:
        b, _, c = tokens.shape
        if isinstance(alpha, torch.Tensor) and alpha.numel() > 1 and grid.frames > 1:
            alpha = alpha.reshape(-1, 1).expand(-1, grid.frames).reshape(-1)  # one weight per frame row
        rows = downsample_tokens(frames_as_batch(tokens, grid), grid.height, grid.width, factor, alpha)
        return rows.reshape(b, out.tokens, c)
    return volume_to_tokens(blend_downsample(tokens_to_volume(tokens, grid), factor, alpha, frame_factor))


def nearest_positions(
    grid: Grid, factor: int, frame_factor: int = 1, device: torch.device | None = None
) -> torch.Tensor:
    """Flat token index that each token of `downsample(..., alpha=1)` copies: (N',) int64.

    Where a downsampled key sits on the input grid (e.g. to pick its rotary position).
    """
    grid.downsampled(factor, frame_factor)  # validates the factors
    ids = torch.arange(grid.tokens, device=device, dtype=torch.float64)
    if frame_factor == 1:
        picked = nearest_exact(ids.view(grid.frames, 1, grid.height, grid.width), factor)
    else:
        picked = nearest_exact(ids.view(1, 1, *grid.shape), factor, frame_factor)
    return picked.flatten().to(torch.int64)
