"""`bigain-tm`: Laplacian-gated token merging. The destination of each window is its smoothest
token (lowest discrete-Laplacian score of the metric), which keeps the high-frequency tokens that
classification depends on as sources that merge only when they are truly redundant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import Draw, as_bool, check
from .tome import MergeConfig


@dataclass
class BiGainTMConfig(MergeConfig):
    """BiGain-TM: the destination of each window is its lowest-Laplacian (smoothest) token.

    dst_rule: "paper" (the true per-window arg-min) or "reference" (the official code's grouping of
    row strips, kept to reproduce published numbers; windows within a frame only, st=1); norm: "l1"
    or "l2" for the Laplacian score; temporal: on video grids, add the neighbouring frames to the
    Laplacian (default False: frame by frame, the score BiGain-TM was designed with).
    The choice is deterministic, so there is no seed or random source to set.
    """

    name: ClassVar[str] = "bigain-tm"
    dst_rule: str = "paper"
    norm: str = "l1"
    temporal: bool = False

    def validate(self) -> None:
        super().validate()
        check(self.dst_rule in ("paper", "reference"), "dst_rule", self.dst_rule, "'paper' or 'reference'")
        check(
            self.dst_rule == "paper" or self.st == 1,
            "dst_rule",
            self.dst_rule,
            "'paper' when st > 1 ('reference' groups rows within one frame)",
        )
        check(self.norm in ("l1", "l2"), "norm", self.norm, "'l1' or 'l2'")
        self.temporal = as_bool("temporal", self.temporal)

    def choice(self, metric: torch.Tensor, grid: ops.Grid, draw: Draw) -> torch.Tensor:
        score = ops.frequency_score(metric, grid, self.norm, self.temporal)
        return ops.score_windows(score, grid, self.window, rule=self.dst_rule)
