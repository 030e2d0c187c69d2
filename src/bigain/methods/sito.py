"""`sito`: similarity-based token pruning (SiTo). Each window keeps its most representative token
as destination; the sources most similar to a retained token are pruned before the sub-layer and,
after it, copy the output of their most similar retained token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from ..precision import DTYPES
from .base import Draw, check, is_real
from .windowed import RandomConfig


@dataclass
class SiToConfig(RandomConfig):
    """SiTo: similarity-based token pruning with recovery by copy; its noise from the patch's random source.

    similarity_dtype: precision of the cosine similarities, scores and noise term ("fp32", "fp16",
    "bf16"). The default "fp32" computes the operator as described, separating near-ties; "fp16" is
    what SiTo's authors run (the metric cast to float16 first) and reproduces their kept-token sets.
    """

    name: ClassVar[str] = "sito"
    beta: float = 1.0
    noise_alpha: float = 0.1
    similarity_dtype: str = "fp32"

    def validate(self) -> None:
        super().validate()
        check(is_real(self.beta), "beta", self.beta, "a finite real number")
        check(is_real(self.noise_alpha) and self.noise_alpha >= 0, "noise_alpha", self.noise_alpha, "a finite number >= 0")
        names = {v: k for k, v in DTYPES.items()}
        aliases = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
        value = self.similarity_dtype
        value = names.get(value, value) if isinstance(value, torch.dtype) else aliases.get(value, value)
        check(value in DTYPES, "similarity_dtype", self.similarity_dtype, "one of " + ", ".join(DTYPES))
        self.similarity_dtype = value

    def uses_random(self) -> bool:
        return self.noise_alpha != 0

    def plan(self, metric: torch.Tensor, grid: ops.Grid, r: int, draw: Draw) -> ops.PrunePlan:
        b, n, _ = metric.shape
        noise = None if self.noise_alpha == 0 else draw.normal(b, n, metric.device)
        return ops.prune_plan(
            metric,
            grid,
            r,
            self.window,
            self.beta,
            self.noise_alpha,
            noise,
            similarity_dtype=DTYPES[self.similarity_dtype],
        )
