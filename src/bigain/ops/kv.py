"""Key/value source downsampling (ToDo, BiGain-TD interpolate-extrapolate blend, spec section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    """
    if isinstance(alpha, (int, float)):
        if alpha == 1.0:
            return nearest_exact(x, factor)
        if alpha == 0.0:
            return average(x, factor)
    else:
        alpha = alpha.to(x.dtype).view(-1, 1, 1, 1)
    near = nearest_exact(x, factor)
    return near * alpha + average(x, factor) * (1 - alpha)


def downsample_tokens(
    tokens: torch.Tensor, height: int, width: int, factor: int, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """(B, N, C) tokens on an H x W grid -> (B, (H//s)*(W//s), C) key/value source."""
    if factor == 1:
        return tokens
    return map_to_tokens(blend_downsample(tokens_to_map(tokens, height, width), factor, alpha))
