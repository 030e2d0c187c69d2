"""Token-grid helpers: tokens are laid out row-major on an H x W grid."""

from __future__ import annotations

import math

import torch


def level_grid(height: int, width: int, level: int) -> tuple[int, int]:
    """Grid seen by a U-Net block `level` times coarser than the latent (ceil: conv padding)."""
    return math.ceil(height / level), math.ceil(width / level)


def infer_level(height: int, width: int, num_tokens: int, max_level: int = 128) -> int:
    """The downsample level d with ceil(H/d) * ceil(W/d) == num_tokens.

    Unlike tomesd's sqrt formula this is exact for odd and non-square latents.
    """
    d = 1
    while d <= max_level:
        h, w = level_grid(height, width, d)
        if h * w == num_tokens:
            return d
        d *= 2
    raise ValueError(
        f"cannot place {num_tokens} tokens on a grid derived from a {height}x{width} input "
        f"(tried downsample levels 1..{max_level})"
    )


def tokens_to_map(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)
