"""Destination/source partitions: one destination token per (st, sy, sx) window of a token grid.

A choice tensor (B, nt, nh, nw) holds, for every window, the index k in [0, st*sy*sx) of its
destination, with k = (dt * sy + dy) * sx + dx. Tokens in leftover frames/rows/columns (grid not
divisible by the window) are always sources. On an image (one frame) with st = 1 everything here
is, index for index, the 2-D operator of tomesd; the 2-D functions at the end of this module
(`random_choice`, `partition`, ... taking (H, W) and (sx, sy)) are those wrappers, with (B, hsy, wsx)
choices.

Why the default window is (1, 2, 2), i.e. st = 1 (windows within a frame), on video grids:
- Video latents have an odd number of frames more often than not: the causal video VAEs of Wan,
  HunyuanVideo and CogVideoX encode the first frame alone and then 4 frames per latent frame
  (1 + 4k video frames -> 1 + k latent frames). With st = 2 the last frame of an odd clip is a
  leftover frame: it would get no destination at all, and all its tokens could only merge into
  other frames. With st = 1 every frame gets the same share of destinations (one per sy x sx
  window) whatever the clip length, and a one-frame clip is partitioned exactly like an image.
- The first latent frame of those VAEs encodes one video frame where the others encode four; a
  window spanning it and the next frame would pick between tokens of different statistics.
- Neighbouring latent frames are about 4 video frames apart (the VAEs' 4x temporal compression):
  under motion the token at the same (y, x) one latent frame later often shows other content,
  while a 2 x 2 spatial window stays within one frame's local structure.
- Nothing is lost for static content: the matching that follows is global (every source against
  every destination of every frame), so a source still merges into a destination in another
  frame when they are the most similar. The window only decides where destinations sit.
A window with st > 1 (e.g. (2, 2, 2), one destination per 8 tokens, removing up to 7/8 of them)
is available for clips whose frames are close in time.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .grid import Grid, as_window
from .keyed import keyed_randint

DEFAULT_WINDOW = (1, 2, 2)


def window_counts3(grid: Grid, window: Iterable[int]) -> tuple[int, int, int]:
    """Whole windows along (frames, rows, columns): (T // st, H // sy, W // sx) (may be 0)."""
    st, sy, sx = as_window(window)
    return grid.frames // st, grid.height // sy, grid.width // sx


def random_windows(
    grid: Grid,
    window: Iterable[int],
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """ToMe's random destination per window, one pattern shared by the batch: (1, nt, nh, nw).

    Drawn as a (nt, nh, nw, 1) tensor from `generator`: on one frame with st = 1 the same numbers,
    from the same stream, that tomesd draws as (hsy, wsx, 1).
    """
    st, sy, sx = as_window(window)
    nt, nh, nw = window_counts3(grid, window)
    gen_device = generator.device if generator is not None else device
    idx = torch.randint(st * sy * sx, size=(nt, nh, nw, 1), device=gen_device, generator=generator)
    return idx.to(device).view(1, nt, nh, nw)


def fixed_windows(grid: Grid, window: Iterable[int], device: torch.device) -> torch.Tensor:
    """The first token of every window (frame, then row, then column; ToMe with use_rand=False)."""
    nt, nh, nw = window_counts3(grid, window)
    return torch.zeros(1, nt, nh, nw, dtype=torch.int64, device=device)


def keyed_windows(keys: torch.Tensor, salt: int, grid: Grid, window: Iterable[int]) -> torch.Tensor:
    """A random destination per window and per batch row, a pure function of (key, salt): (B, nt, nh, nw)."""
    st, sy, sx = as_window(window)
    nt, nh, nw = window_counts3(grid, window)
    return keyed_randint(keys, salt, nt * nh * nw, st * sy * sx).view(-1, nt, nh, nw)


def score_windows(
    score: torch.Tensor,
    grid: Grid,
    window: Iterable[int],
    rule: str = "paper",
    largest: bool = False,
) -> torch.Tensor:
    """Destination per window from a per-token score (B, N): (B, nt, nh, nw).

    rule="paper": the arg-min (arg-max if `largest`) over the window's own tokens (first on ties,
    in window order k).
    rule="reference": the official BiGain code's grouping (a reshape bug), frame by frame: each
    frame's crop is viewed as (hsy, wsx, sy*sx) without a permute, so window (i, j) is judged on
    the j-th run of sy*sx consecutive scores of its row band. Kept only to reproduce published
    (image) numbers; it needs st = 1.
    """
    st, sy, sx = as_window(window)
    nt, nh, nw = window_counts3(grid, window)
    b = score.shape[0]
    crop = score.view(b, grid.frames, grid.height, grid.width)[:, : nt * st, : nh * sy, : nw * sx]
    if rule == "paper":
        groups = crop.reshape(b, nt, st, nh, sy, nw, sx).permute(0, 1, 3, 5, 2, 4, 6)
        groups = groups.reshape(b, nt, nh, nw, st * sy * sx)
    elif rule == "reference":
        if st != 1:
            raise ValueError(f"dst_rule 'reference' is defined within a frame (st = 1), got st={st}")
        groups = crop.reshape(b, nt, nh, nw, sy * sx)
    else:
        raise ValueError(f"dst_rule must be 'paper' or 'reference', got {rule!r}")
    return groups.argmax(dim=-1) if largest else groups.argmin(dim=-1)


def partition_windows(
    choice: torch.Tensor, grid: Grid, window: Iterable[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window choices (B, nt, nh, nw) -> (dst_idx (B, Nd), src_idx (B, N - Nd)) as flat token indices.

    The order is that of an argsort of a -1 (dst) / 0 (src) buffer laid out on the grid, which is
    the order tomesd produces on an image; keeping it makes outputs bit-identical.
    """
    st, sy, sx = as_window(window)
    t, h, w = grid
    b, nt, nh, nw = choice.shape
    marks = torch.zeros(b, nt, nh, nw, st * sy * sx, dtype=torch.int64, device=choice.device)
    marks.scatter_(4, choice.unsqueeze(-1), -1)
    marks = marks.view(b, nt, nh, nw, st, sy, sx).permute(0, 1, 4, 2, 5, 3, 6)
    marks = marks.reshape(b, nt * st, nh * sy, nw * sx)
    if nt * st < t or nh * sy < h or nw * sx < w:
        full = torch.zeros(b, t, h, w, dtype=torch.int64, device=choice.device)
        full[:, : nt * st, : nh * sy, : nw * sx] = marks
        marks = full
    order = marks.reshape(b, t * h * w, 1).argsort(dim=1).squeeze(-1)
    num_dst = nt * nh * nw
    return order[:, :num_dst], order[:, num_dst:]


# ---------------------------------------------------------------------------------------------------
# The image (2-D) forms: an H x W grid, sy x sx windows, choices (B, hsy, wsx) with k = dy * sx + dx.
# ---------------------------------------------------------------------------------------------------


def window_counts(height: int, width: int, sx: int, sy: int) -> tuple[int, int]:
    return height // sy, width // sx


def random_choice(
    height: int, width: int, sx: int, sy: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """`random_windows` on an image: (1, hsy, wsx), the (hsy, wsx, 1) draw tomesd makes."""
    hsy, wsx = window_counts(height, width, sx, sy)
    return random_windows(Grid.image(height, width), (1, sy, sx), generator, device).view(1, hsy, wsx)


def fixed_choice(height: int, width: int, sx: int, sy: int, device: torch.device) -> torch.Tensor:
    """The top-left token of every window (ToMe with use_rand=False)."""
    hsy, wsx = window_counts(height, width, sx, sy)
    return fixed_windows(Grid.image(height, width), (1, sy, sx), device).view(1, hsy, wsx)


def keyed_choice(keys: torch.Tensor, salt: int, height: int, width: int, sx: int, sy: int) -> torch.Tensor:
    """A random destination per window and per batch row, a pure function of (key, salt): (B, hsy, wsx)."""
    hsy, wsx = window_counts(height, width, sx, sy)
    return keyed_windows(keys, salt, Grid.image(height, width), (1, sy, sx)).view(-1, hsy, wsx)


def score_choice(
    score: torch.Tensor,
    height: int,
    width: int,
    sx: int,
    sy: int,
    rule: str = "paper",
    largest: bool = False,
) -> torch.Tensor:
    """`score_windows` on an image: (B, hsy, wsx). See there for `rule`."""
    hsy, wsx = window_counts(height, width, sx, sy)
    choice = score_windows(score, Grid.image(height, width), (1, sy, sx), rule, largest)
    return choice.view(score.shape[0], hsy, wsx)


def partition(
    choice: torch.Tensor, height: int, width: int, sx: int, sy: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`partition_windows` on an image, for choices (B, hsy, wsx)."""
    return partition_windows(choice.unsqueeze(1), Grid.image(height, width), (1, sy, sx))
