"""Token grids: the `Grid` value (frames, height, width) and the tokens <-> feature-map helpers.

Tokens of one attention layer lie on a T x H x W grid, flattened frame-major then row-major: token
n sits at (t, y, x) = (n // (H W), (n // W) % H, n % W). An image is one frame (T = 1), which is the
row-major H x W layout of the U-Net's `Transformer2DModel` and of DiT's patch embedding. Video DiTs
in diffusers flatten their patch tokens the same way: Wan (`WanTransformer3DModel.forward`) runs a
`Conv3d` patch embedding on the (B, C, F, H, W) latent and then `flatten(2).transpose(1, 2)`, which
gives (B, F' H' W', C) with the frame index outermost.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch


def _positive(name: str, value: object) -> int:
    if isinstance(value, torch.SymInt):  # a size traced by torch.compile with dynamic shapes
        return value  # type: ignore[return-value]
    try:
        number = operator.index(value)  # ints and numpy integers; not floats, not bools below
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class Grid:
    """A token grid of any rank: `frames` x `height` x `width` (an image is one frame).

    Iterating gives (frames, height, width), so `t, h, w = grid` and `tuple(grid)` work.
    """

    frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("frames", "height", "width"):  # validated, and numpy integers made ints
            object.__setattr__(self, name, _positive(name, getattr(self, name)))

    @classmethod
    def image(cls, height: int, width: int) -> Grid:
        """The grid of an image: one frame of height x width."""
        return cls(1, height, width)

    @classmethod
    def of(cls, value: Grid | Iterable[int]) -> Grid:
        """A Grid from a Grid, an (H, W) pair (one frame) or a (T, H, W) triple."""
        if isinstance(value, Grid):
            return value
        dims = tuple(value)
        if len(dims) == 2:
            return cls(1, *dims)
        if len(dims) == 3:
            return cls(*dims)
        raise ValueError(f"a grid is (height, width) or (frames, height, width), got {dims!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)

    @property
    def tokens(self) -> int:
        return self.frames * self.height * self.width

    @property
    def frame_tokens(self) -> int:
        """Tokens in one frame (H * W)."""
        return self.height * self.width

    @property
    def is_image(self) -> bool:
        return self.frames == 1

    def __iter__(self) -> Iterator[int]:
        return iter(self.shape)

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    def windows(self, window: Iterable[int]) -> Grid:
        """The grid of whole (st, sy, sx) windows: (T // st, H // sy, W // sx), each at least 1.

        Leftover frames, rows and columns (when a size is not divisible) belong to no window.
        """
        st, sy, sx = as_window(window)
        counts = (self.frames // st, self.height // sy, self.width // sx)
        if min(counts) < 1:
            raise ValueError(f"window {(st, sy, sx)} does not fit in the {self} token grid")
        return Grid(*counts)

    def downsampled(self, factor: int, frame_factor: int = 1) -> Grid:
        """The grid a KV downsampling by `factor` (space) and `frame_factor` (time) leaves (floor)."""
        return self.windows((frame_factor, factor, factor))

    def at_level(self, level: int) -> Grid:
        """The grid seen by a block `level` times coarser in space (ceil: conv padding); frames kept."""
        h, w = level_grid(self.height, self.width, level)
        return Grid(self.frames, h, w)


def as_window(window: Iterable[int]) -> tuple[int, int, int]:
    """Validate a window (st, sy, sx): three positive integers (frames, rows, columns)."""
    dims = tuple(window)
    if len(dims) != 3:
        raise ValueError(f"a window is (st, sy, sx), got {dims!r}")
    return _positive("st", dims[0]), _positive("sy", dims[1]), _positive("sx", dims[2])


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


def tokens_to_volume(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, T*H*W, C) -> (B, C, T, H, W), frame-major tokens (a view when the layout allows)."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, grid.frames, grid.height, grid.width)


def volume_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T*H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def check_tokens(x: torch.Tensor, grid: Grid) -> None:
    """Raise ValueError unless the tokens (B, N, C) fill `grid` (N == T*H*W); a host-side shape check."""
    if x.shape[1] != grid.tokens:
        raise ValueError(f"{x.shape[1]} tokens do not form a {grid} (frames x height x width) grid")


def frames_as_batch(x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(B, T*H*W, C) -> (B*T, H*W, C): every frame a batch row of its own (2-D operators per frame)."""
    b, n, c = x.shape
    return x.reshape(b * grid.frames, grid.frame_tokens, c)
