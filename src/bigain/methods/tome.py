"""`tome`: ToMe for Stable Diffusion. One destination per window, drawn at random (or the top-left
token), then bipartite soft matching merges the r most similar sources into their destinations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import Draw, as_bool, check
from .windowed import WindowedConfig


@dataclass
class ToMeConfig(WindowedConfig):
    """ToMe for SD: one random (or top-left) destination per sx x sy window, bipartite soft matching."""

    name: ClassVar[str] = "tome"
    use_rand: bool = True
    mode: str = "mean"

    def validate(self) -> None:
        super().validate()
        check(self.mode in ("mean", "prune"), "mode", self.mode, "'mean' or 'prune'")
        self.use_rand = as_bool("use_rand", self.use_rand)

    def choice(self, metric: torch.Tensor, height: int, width: int, draw: Draw) -> torch.Tensor:
        if not self.use_rand:
            return ops.fixed_choice(height, width, self.sx, self.sy, metric.device)
        return draw.window_choice(height, width, self.sx, self.sy, metric.device)

    def plan(self, metric: torch.Tensor, height: int, width: int, r: int, draw: Draw) -> ops.MergePlan:
        dst, src = ops.partition(self.choice(metric, height, width, draw), height, width, self.sx, self.sy)
        return ops.bipartite_merge_plan(metric, dst, src, r, self.mode)
