"""`bigain-tm`: Laplacian-gated token merging. The destination of each window is its smoothest
token (lowest discrete-Laplacian score of the metric), which keeps the high-frequency tokens that
classification depends on as sources that merge only when they are truly redundant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import Draw, check
from .tome import MergeConfig


@dataclass
class BiGainTMConfig(MergeConfig):
    """BiGain-TM: the destination of each window is its lowest-Laplacian (smoothest) token.

    dst_rule: "paper" (the true per-window arg-min) or "reference" (the official code's grouping of
    row strips, kept to reproduce published numbers); norm: "l1" or "l2" for the Laplacian score.
    The choice is deterministic, so there is no seed or random source to set.
    """

    name: ClassVar[str] = "bigain-tm"
    dst_rule: str = "paper"
    norm: str = "l1"

    def validate(self) -> None:
        super().validate()
        check(self.dst_rule in ("paper", "reference"), "dst_rule", self.dst_rule, "'paper' or 'reference'")
        check(self.norm in ("l1", "l2"), "norm", self.norm, "'l1' or 'l2'")

    def choice(self, metric: torch.Tensor, height: int, width: int, draw: Draw) -> torch.Tensor:
        score = ops.laplacian_score(metric, height, width, self.norm)
        return ops.score_choice(score, height, width, self.sx, self.sy, rule=self.dst_rule)
