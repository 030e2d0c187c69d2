"""Key/value source downsampling (ToDo, and BiGain-TD's interpolate-extrapolate blend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import fast
from .grid import map_to_tokens, tokens_to_map


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
