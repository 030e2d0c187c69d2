"""`todo`: token downsampling of keys and values (ToDo). Self-attention's queries keep every token;
its keys and values come from a copy of the hidden states downsampled by nearest-exact sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import MethodConfig, check, is_int, is_real


@dataclass
class ToDoConfig(MethodConfig):
    """ToDo: keys/values from a nearest-exact downsampled copy of the tokens; queries untouched.

    downsample_factor applies at the backbone's first compressed level (the highest-resolution
    level with attention on U-Nets, every block of a transformer), downsample_factor_level_2 at the
    next U-Net level (1 = off). The operator is off for a forward whose timesteps are all <= stop_t
    (default 0: a last sampling step at t = 0 runs full attention, as in the reference);
    stop_t=None never switches off.
    """

    name: ClassVar[str] = "todo"
    mechanism: ClassVar[str] = "kv"
    downsample_factor: int = 2
    downsample_factor_level_2: int = 1
    stop_t: float | None = 0.0

    def validate(self) -> None:
        super().validate()
        for key in ("downsample_factor", "downsample_factor_level_2"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, v, "an integer >= 1")
        check(self.stop_t is None or is_real(self.stop_t), "stop_t", self.stop_t, "None or a finite number (0-1000 scale)")

    def level_params(self, default_max_downsample: int) -> dict[int, int]:
        base = default_max_downsample
        out = {}
        if self.downsample_factor > 1:
            out[base] = self.downsample_factor
        if self.downsample_factor_level_2 > 1:
            out[2 * base] = self.downsample_factor_level_2
        return out

    def block_param(self, level: int) -> int:
        return self.downsample_factor

    def reduced_tokens(self, num_tokens: int, height: int, width: int, param: int) -> int:
        return (height // param) * (width // param)

    def check_grid(self, height: int, width: int, factor: int, where: str) -> None:
        if height // factor == 0 or width // factor == 0:
            raise ValueError(f"option downsample_factor={factor} does not fit the {height}x{width} token grid of {where}")

    def alpha_for(self, t: torch.Tensor | None) -> float | torch.Tensor:
        """Weight of the nearest-exact branch (ToDo: 1, pure nearest)."""
        return 1.0

    def kv_source(
        self, tokens: torch.Tensor, height: int, width: int, factor: int, t: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, N, C) tokens on an H x W grid -> (B, (H//f)*(W//f), C) key/value source."""
        # a tensor alpha stays float64 where it is: the operator rounds the weights and moves them
        return ops.downsample_tokens(tokens, height, width, factor, self.alpha_for(t))
