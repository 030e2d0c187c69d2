"""`bigain-td`: interpolate-extrapolate KV downsampling. The key/value source is
alpha * nearest + (1 - alpha) * average pooling; alpha > 1 extrapolates, adding back the detail
that averaging removes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import check, is_real
from .todo import ToDoConfig


@dataclass
class BiGainTDConfig(ToDoConfig):
    """BiGain-TD: alpha * nearest + (1 - alpha) * average pooling as the key/value source.

    alpha is unclamped (> 1 extrapolates). alpha_schedule=(a_999, a_0) makes alpha linear in t,
    from a_999 at t = 999 to a_0 at t = 0 (the paper's generation schedule is (0.8, 1.2)), per row
    of the batch. The schedule is computed in float64, so alpha and 1 - alpha carry the same bits
    as the reference's Python-float arithmetic.
    """

    name: ClassVar[str] = "bigain-td"
    alpha: float = 0.9
    alpha_schedule: tuple[float, float] | None = None

    def validate(self) -> None:
        super().validate()
        check(is_real(self.alpha), "alpha", self.alpha, "a finite real number")
        if self.alpha_schedule is not None:
            sched = self.alpha_schedule
            ok = isinstance(sched, (tuple, list)) and len(sched) == 2 and all(is_real(a) for a in sched)
            check(ok, "alpha_schedule", sched, "(alpha_at_999, alpha_at_0), two finite numbers")
            self.alpha_schedule = (float(sched[0]), float(sched[1]))

    def alpha_for(self, t: torch.Tensor | None) -> float | torch.Tensor:
        if self.alpha_schedule is None:
            return float(self.alpha)
        start, end = self.alpha_schedule
        if t is None:
            return float(start)
        t = t.detach()
        if t.device.type == "mps":  # no float64 there; a few numbers, read once
            t = t.cpu()
        frac = t.to(torch.float64).clamp(0, 999) / 999.0
        return start * frac + end * (1.0 - frac)
