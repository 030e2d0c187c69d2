"""`tome`: ToMe for Stable Diffusion. One destination per window, drawn at random (or the top-left
token), then bipartite soft matching merges the r most similar sources into their destinations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import Draw, as_bool, check
from .windowed import RandomConfig, WindowedConfig


@dataclass
class MergeConfig(WindowedConfig):
    """Bipartite merging after a destination choice per window (`choice`, defined by each method);
    mode "mean" averages merged tokens into their destination, "prune" drops them."""

    mode: str = "mean"

    def validate(self) -> None:
        super().validate()
        check(self.mode in ("mean", "prune"), "mode", self.mode, "'mean' or 'prune'")

    def choice(self, metric: torch.Tensor, grid: ops.Grid, draw: Draw) -> torch.Tensor:  # pragma: no cover
        """The destination of every window: (B or 1, T//st, H//sy, W//sx) indices into the window."""
        raise NotImplementedError

    def plan(self, metric: torch.Tensor, grid: ops.Grid, r: int, draw: Draw) -> ops.MergePlan:
        dst, src = ops.partition_windows(self.choice(metric, grid, draw), grid, self.window)
        return ops.bipartite_merge_plan(metric, dst, src, r, self.mode)


@dataclass
class ToMeConfig(MergeConfig, RandomConfig):
    """ToMe for SD: one random (or first, `use_rand=False`) destination per (st, sy, sx) window."""

    name: ClassVar[str] = "tome"
    use_rand: bool = True

    def validate(self) -> None:
        super().validate()
        self.use_rand = as_bool("use_rand", self.use_rand)

    def uses_random(self) -> bool:
        return self.use_rand

    def choice(self, metric: torch.Tensor, grid: ops.Grid, draw: Draw) -> torch.Tensor:
        if not self.use_rand:
            return ops.fixed_windows(grid, self.window, metric.device)
        return draw.windows(grid, self.window, metric.device)
