"""Shared base of the token-reduction methods (ToMe, BiGain-TM, SiTo): sx x sy windows, a ratio,
the sub-layers to reduce, and the checks that a window fits the grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .base import RNG_SOURCES, Draw, MethodConfig, as_bool, check, check_seed, is_int, is_real


@dataclass
class WindowedConfig(MethodConfig):
    """ratio: fraction of a block's tokens removed; sx, sy: window (one destination per window);
    metric: "auto" (the backbone's default), "block" (block input) or "attn" (attention input);
    merge_attn / merge_crossattn / merge_mlp: which sub-layers run on the reduced tokens."""

    mechanism: ClassVar[str] = "tokens"

    ratio: float = 0.5
    sx: int = 2
    sy: int = 2
    metric: str = "auto"
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False

    def validate(self) -> None:
        super().validate()
        check(is_real(self.ratio) and 0.0 <= self.ratio < 1.0, "ratio", self.ratio, "[0, 1)")
        check(is_int(self.sx) and self.sx >= 1, "sx", self.sx, "an integer >= 1")
        check(is_int(self.sy) and self.sy >= 1, "sy", self.sy, "an integer >= 1")
        check(self.sx * self.sy >= 2, "sx*sy", self.sx * self.sy, ">= 2 (a window needs a source token)")
        # One token of every window stays (its destination): more than 1 - 1/(sx*sy) cannot be removed.
        top = 1.0 - 1.0 / (self.sx * self.sy)
        check(
            self.ratio <= top + 1e-12,
            "ratio",
            self.ratio,
            f"at most {top:g} with sx={self.sx}, sy={self.sy} (each window keeps its destination token; "
            "use larger windows to remove more)",
        )
        check(self.metric in ("auto", "block", "attn"), "metric", self.metric, "'auto', 'block' or 'attn'")
        for key in ("merge_attn", "merge_crossattn", "merge_mlp"):
            setattr(self, key, as_bool(key, getattr(self, key)))

    def reduced_roles(self) -> tuple[str, ...]:
        """Sub-layer roles that run on the reduced tokens (the backbone maps roles to modules)."""
        flags = (("attn", self.merge_attn), ("cross", self.merge_crossattn), ("ff", self.merge_mlp))
        return tuple(role for role, on in flags if on)

    def removed(self, num_tokens: int, height: int, width: int) -> int:
        """Tokens removed from a block of `num_tokens` (never more than there are sources)."""
        n_src = num_tokens - (height // self.sy) * (width // self.sx)
        return max(0, min(int(num_tokens * self.ratio), n_src))

    def reduced_tokens(self, num_tokens: int, height: int, width: int, param: int) -> int:
        return num_tokens - self.removed(num_tokens, height, width)

    def check_grid(self, height: int, width: int, where: str) -> None:
        if height // self.sy == 0 or width // self.sx == 0:
            raise ValueError(
                f"option sx={self.sx}, sy={self.sy} does not fit the {height}x{width} token grid of {where}: "
                "each window must fit in the grid"
            )

    def uses_random(self) -> bool:
        """Whether plans draw random numbers (then the patch keeps a random source for them)."""
        return False

    def make_plan(self, metric: torch.Tensor, height: int, width: int, draw: Draw):
        """The token plan of one block call from its metric (B, N, C), or None when nothing is removed."""
        r = int(metric.shape[1] * self.ratio)
        if r <= 0:
            return None
        return self.plan(metric, height, width, r, draw)

    def plan(self, metric: torch.Tensor, height: int, width: int, r: int, draw: Draw):  # pragma: no cover
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
