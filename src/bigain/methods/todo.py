"""`todo`: token downsampling of keys and values (ToDo). Self-attention's queries keep every token;
its keys and values come from a copy of the hidden states downsampled by nearest-exact sampling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import ops
from .base import MethodConfig, check, is_int, is_real
from .windowed import grid_text


@dataclass
class ToDoConfig(MethodConfig):
    """ToDo: keys/values from a nearest-exact downsampled copy of the tokens; queries untouched.

    downsample_factor applies at the backbone's first compressed level (the highest-resolution
    level with attention on U-Nets, every block of a transformer), downsample_factor_level_2 at the
    next U-Net level (1 = off). On video grids frame_factor (default 1: every frame on its own)
    also pools frames: keys and values of ft x s x s blocks. The operator is off for a forward whose timesteps are all <= stop_t
    (default 0: a last sampling step at t = 0 runs full attention, as in the reference);
    stop_t=None never switches off.
    """

    name: ClassVar[str] = "todo"
    mechanism: ClassVar[str] = "kv"
    downsample_factor: int = 2
    downsample_factor_level_2: int = 1
    frame_factor: int = 1
    stop_t: float | None = 0.0

    def validate(self) -> None:
        super().validate()
        for key in ("downsample_factor", "downsample_factor_level_2", "frame_factor"):
            v = getattr(self, key)
            check(is_int(v) and v >= 1, key, v, "an integer >= 1")
        check(self.stop_t is None or is_real(self.stop_t), "stop_t", self.stop_t, "None or a finite number (0-1000 scale)")

    def level_params(self, default_max_downsample: int) -> dict[int, int]:
        """`downsample_factor` at the first compressed level, `downsample_factor_level_2` at the next;
        `max_downsample` (when given) drops the levels coarser than it."""
        base = default_max_downsample
        md = self.max_downsample
        out = {}
        for level, factor in ((base, self.downsample_factor), (2 * base, self.downsample_factor_level_2)):
            if factor > 1 and (md is None or level <= md):
                out[level] = factor
        return out

    def block_param(self, level: int, default_level: int = 1) -> int | None:
        """A block chosen by index takes the factor of its level: `downsample_factor_level_2` one level
        below the first compressed one, `downsample_factor` elsewhere (None when that factor is 1)."""
        factor = self.downsample_factor_level_2 if level == 2 * default_level else self.downsample_factor
        return factor if factor > 1 or self.frame_factor > 1 else None

    def switched_off(self, host_timesteps: tuple[float, ...] | None) -> bool:
        """Off when every row is at t <= stop_t; decided only from timesteps known on the host
        (a tensor is never read: on a GPU that read would stall the host every forward)."""
        if self.stop_t is None or not host_timesteps:
            return False
        return all(t <= self.stop_t for t in host_timesteps)

    def reduced_tokens(self, num_tokens: int, grid: ops.Grid, param: int) -> int:
        return (grid.frames // self.frame_factor) * (grid.height // param) * (grid.width // param)

    def check_grid(self, grid: ops.Grid, factor: int, where: str) -> None:
        """ValueError naming the option and the grid when a factor exceeds its axis."""
        shape = grid_text(grid, self.frame_factor != 1)
        if grid.height // factor == 0 or grid.width // factor == 0:
            raise ValueError(f"option downsample_factor={factor} does not fit the {shape} token grid of {where}")
        if grid.frames // self.frame_factor == 0:
            raise ValueError(
                f"option frame_factor={self.frame_factor} does not fit the {shape} token grid of {where} "
                "(frames x height x width)"
            )

    def kv_positions(self, grid: ops.Grid, factor: int, device: torch.device) -> torch.Tensor:
        """The flat token index each key/value token sits at (its nearest-exact sample): (N',)."""
        return ops.downsample_positions(grid, factor, self.frame_factor, device)

    def alpha_for(self, t: torch.Tensor | None) -> float | torch.Tensor:
        """Weight of the nearest-exact branch (ToDo: 1, pure nearest)."""
        return 1.0

    def kv_prepare(self, t: torch.Tensor | None, dtype: torch.dtype) -> tuple:
        """What `kv_source` needs from the timesteps, made once per forward: (alpha, weights).
        A per-row alpha becomes float32 (what the fused kernel reads) and the reference's rounded
        blend weights; a scalar alpha stays a Python float."""
        alpha = self.alpha_for(t)
        if not isinstance(alpha, torch.Tensor):
            return alpha, None
        return alpha.to(torch.float32), ops.blend_weights(alpha, dtype)

    def kv_source(
        self,
        tokens: torch.Tensor,
        grid: ops.Grid,
        factor: int,
        t: torch.Tensor | None,
        prepared: tuple | None = None,
    ) -> torch.Tensor:
        """(B, T*H*W, C) tokens on `grid` -> (B, (T//ft)*(H//f)*(W//f), C) key/value source
        (`factor` in space, the config's `frame_factor` in time)."""
        alpha, weights = prepared if prepared is not None else self.kv_prepare(t, tokens.dtype)
        return ops.downsample(tokens, grid, factor, alpha, self.frame_factor, weights)
