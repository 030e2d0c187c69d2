"""`sito`: similarity-based token pruning (SiTo). Each window keeps its most representative token
as destination; the sources most similar to a retained token are pruned before the sub-layer and,
after it, copy the output of their most similar retained token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import Draw, check, is_real
from .windowed import WindowedConfig


@dataclass
class SiToConfig(WindowedConfig):
    """SiTo: similarity-based token pruning with recovery by copy, noise from an explicit generator."""

    name: ClassVar[str] = "sito"
    beta: float = 1.0
    noise_alpha: float = 0.1

    def validate(self) -> None:
        super().validate()
        check(is_real(self.beta), "beta", self.beta, "a finite real number")
        check(is_real(self.noise_alpha) and self.noise_alpha >= 0, "noise_alpha", self.noise_alpha, "a finite number >= 0")

    def plan(self, metric: torch.Tensor, height: int, width: int, r: int, draw: Draw) -> ops.PrunePlan:
        b, n, _ = metric.shape
        noise = None if self.noise_alpha == 0 else draw.normal(b, n, metric.device)
        return ops.similarity_prune_plan(metric, height, width, r, self.sx, self.sy, self.beta, self.noise_alpha, noise)
