"""Shared base of the token-reduction methods (ToMe, BiGain-TM, SiTo): (st, sy, sx) windows, a
ratio, the sub-layers to reduce, and the checks that a window fits the grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .. import ops
from .base import RNG_SOURCES, Draw, MethodConfig, as_bool, check, check_seed, is_int, is_real


def grid_text(grid: ops.Grid, video: bool = False) -> str:
    """A grid as error messages name it: HxW for an image, TxHxW for a video (or when `video`:
    an option that acts across frames)."""
    return str(grid) if video or not grid.is_image else f"{grid.height}x{grid.width}"


@dataclass
class WindowedConfig(MethodConfig):
    """ratio: fraction of a block's tokens removed; sx, sy, st: window (columns, rows, frames; one
    destination per window; st=1 keeps windows within a frame, see `bigain.ops.partition`);
    metric: "auto" (the backbone's default), "block" (block input) or "attn" (attention input);
    merge_attn / merge_crossattn / merge_mlp: which sub-layers run on the reduced tokens."""

    mechanism: ClassVar[str] = "tokens"

    ratio: float = 0.5
    sx: int = 2
    sy: int = 2
    st: int = 1
    metric: str = "auto"
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False

    def validate(self) -> None:
        super().validate()
        check(is_real(self.ratio) and 0.0 <= self.ratio < 1.0, "ratio", self.ratio, "[0, 1)")
        check(is_int(self.sx) and self.sx >= 1, "sx", self.sx, "an integer >= 1")
        check(is_int(self.sy) and self.sy >= 1, "sy", self.sy, "an integer >= 1")
        check(is_int(self.st) and self.st >= 1, "st", self.st, "an integer >= 1")
        size = self.sx * self.sy * self.st
        if self.st == 1:
            check(size >= 2, "sx*sy", size, ">= 2 (a window needs a source token)")
        else:
            check(size >= 2, "st*sx*sy", size, ">= 2 (a window needs a source token)")
        # One token of every window stays (its destination): more than 1 - 1/size cannot be removed.
        top = 1.0 - 1.0 / size
        window = f"sx={self.sx}, sy={self.sy}" + (f", st={self.st}" if self.st != 1 else "")
        check(
            self.ratio <= top + 1e-12,
            "ratio",
            self.ratio,
            f"at most {top:g} with {window} (each window keeps its destination token; "
            "use larger windows to remove more)",
        )
        check(self.metric in ("auto", "block", "attn"), "metric", self.metric, "'auto', 'block' or 'attn'")
        for key in ("merge_attn", "merge_crossattn", "merge_mlp"):
            setattr(self, key, as_bool(key, getattr(self, key)))

    @property
    def window(self) -> tuple[int, int, int]:
        """The (st, sy, sx) window of the grid operators."""
        return (self.st, self.sy, self.sx)

    def reduced_roles(self) -> tuple[str, ...]:
        """Sub-layer roles that run on the reduced tokens (the backbone maps roles to modules)."""
        flags = (("attn", self.merge_attn), ("cross", self.merge_crossattn), ("ff", self.merge_mlp))
        return tuple(role for role, on in flags if on)

    def removed(self, num_tokens: int, grid: ops.Grid) -> int:
        """Tokens removed from a block of `num_tokens` (never more than there are sources)."""
        n_dst = (grid.frames // self.st) * (grid.height // self.sy) * (grid.width // self.sx)
        return max(0, min(int(num_tokens * self.ratio), num_tokens - n_dst))

    def reduced_tokens(self, num_tokens: int, grid: ops.Grid, param: int) -> int:
        return num_tokens - self.removed(num_tokens, grid)

    def check_grid(self, grid: ops.Grid, where: str) -> None:
        """ValueError naming the window options and the grid when a window does not fit."""
        if grid.frames // self.st == 0 or grid.height // self.sy == 0 or grid.width // self.sx == 0:
            video = not grid.is_image or self.st != 1
            opts = f"sx={self.sx}, sy={self.sy}" + (f", st={self.st}" if video else "")
            raise ValueError(
                f"option {opts} does not fit the {grid_text(grid, video)} token grid of {where}: "
                "each window must fit in the grid" + (" (frames x height x width)" if video else "")
            )

    def uses_random(self) -> bool:
        """Whether plans draw random numbers (then the patch keeps a random source for them)."""
        return False

    def make_plan(self, metric: torch.Tensor, grid: ops.Grid, draw: Draw):
        """The token plan of one block call from its metric (B, N, C) on `grid`, or None when
        nothing is removed."""
        r = int(metric.shape[1] * self.ratio)
        if r <= 0:
            return None
        return self.plan(metric, grid, r, draw)

    def plan(self, metric: torch.Tensor, grid: ops.Grid, r: int, draw: Draw):  # pragma: no cover
        raise NotImplementedError


@dataclass
class RandomConfig(WindowedConfig):
    """A windowed method that draws random numbers (ToMe's destinations, SiTo's noise).

    rng: "keyed" (default) hashes (seed, block, timestep or the caller's per-row keys) on the device:
    no host copy, no generator state, the same numbers eager and under torch.compile (also inside
    CUDA graphs). "generator" draws tomesd's stream from a torch.Generator seeded with `seed` on
    the tokens' device (or from `generator`, on the generator's device): bit-identical to tomesd,
    eager only. Passing `generator` selects "generator".
    """

    seed: int = 0
    rng: str | None = None
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    def validate(self) -> None:
        super().validate()
        check_seed("seed", self.seed)
        if self.generator is not None:
            check(isinstance(self.generator, torch.Generator), "generator", self.generator, "a torch.Generator")
        if self.rng is None:
            self.rng = "generator" if self.generator is not None else "keyed"
        check(self.rng in RNG_SOURCES, "rng", self.rng, "'keyed' (default) or 'generator' (tomesd's stream)")
        check(
            self.generator is None or self.rng == "generator",
            "rng",
            self.rng,
            "'generator' when a generator is given (rng='keyed' draws from no generator)",
        )

    def uses_random(self) -> bool:
        return True
