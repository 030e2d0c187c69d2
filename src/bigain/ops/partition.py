"""Destination/source partitions: one destination token per sy x sx window.

A choice tensor (B, hsy, wsx) holds, for every window, the index k in [0, sy*sx)
of its destination, with k = dy * sx + dx. Tokens in leftover rows/columns (grid
not divisible by the window) are always sources.
"""

from __future__ import annotations

import torch

from .keyed import keyed_randint


def window_counts(height: int, width: int, sx: int, sy: int) -> tuple[int, int]:
    return height // sy, width // sx


def random_choice(
    height: int, width: int, sx: int, sy: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """ToMe's random destination per window, one pattern shared by the batch: (1, hsy, wsx).

    Drawn as a (hsy, wsx, 1) tensor from `generator`, the same stream tomesd consumes.
    """
    hsy, wsx = window_counts(height, width, sx, sy)
    gen_device = generator.device if generator is not None else device
    idx = torch.randint(sy * sx, size=(hsy, wsx, 1), device=gen_device, generator=generator)
    return idx.to(device).view(1, hsy, wsx)


def fixed_choice(height: int, width: int, sx: int, sy: int, device: torch.device) -> torch.Tensor:
    """The top-left token of every window (ToMe with use_rand=False)."""
    hsy, wsx = window_counts(height, width, sx, sy)
    return torch.zeros(1, hsy, wsx, dtype=torch.int64, device=device)


def keyed_choice(keys: torch.Tensor, salt: int, height: int, width: int, sx: int, sy: int) -> torch.Tensor:
    """A random destination per window and per batch row, a pure function of (key, salt): (B, hsy, wsx)."""
    hsy, wsx = window_counts(height, width, sx, sy)
    return keyed_randint(keys, salt, hsy * wsx, sy * sx).view(-1, hsy, wsx)


def score_choice(
    score: torch.Tensor,
    height: int,
    width: int,
    sx: int,
    sy: int,
    rule: str = "paper",
    largest: bool = False,
) -> torch.Tensor:
    """Destination per window from a per-token score (B, N): (B, hsy, wsx).

    rule="paper": the arg-min (arg-max if `largest`) over the window's own tokens.
    rule="reference": the official BiGain code's grouping (a reshape bug): the crop is viewed
    as (hsy, wsx, sy*sx) without a permute, so window (i, j) is judged on the j-th run of
    sy*sx consecutive scores of its row band. Kept only to reproduce published numbers.
    """
    hsy, wsx = window_counts(height, width, sx, sy)
    b = score.shape[0]
    crop = score.view(b, height, width)[:, : hsy * sy, : wsx * sx]
    if rule == "paper":
        groups = crop.reshape(b, hsy, sy, wsx, sx).permute(0, 1, 3, 2, 4).reshape(b, hsy, wsx, sy * sx)
    elif rule == "reference":
        groups = crop.reshape(b, hsy, wsx, sy * sx)
    else:
        raise ValueError(f"dst_rule must be 'paper' or 'reference', got {rule!r}")
    return groups.argmax(dim=-1) if largest else groups.argmin(dim=-1)


def partition(choice: torch.Tensor, height: int, width: int, sx: int, sy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window choices -> (dst_idx (B, Nd), src_idx (B, N - Nd)) as flat token indices.

    The order is that of an argsort of a -1 (dst) / 0 (src) buffer laid out on the
    grid, which is the order tomesd produces; keeping it makes outputs bit-identical.
    """
    b, hsy, wsx = choice.shape
    marks = torch.zeros(b, hsy, wsx, sy * sx, dtype=torch.int64, device=choice.device)
    marks.scatter_(3, choice.unsqueeze(-1), -1)
    marks = marks.view(b, hsy, wsx, sy, sx).transpose(2, 3).reshape(b, hsy * sy, wsx * sx)
    if hsy * sy < height or wsx * sx < width:
        full = torch.zeros(b, height, width, dtype=torch.int64, device=choice.device)
        full[:, : hsy * sy, : wsx * sx] = marks
        marks = full
    order = marks.reshape(b, height * width, 1).argsort(dim=1).squeeze(-1)
    num_dst = hsy * wsx
    return order[:, :num_dst], order[:, num_dst:]
