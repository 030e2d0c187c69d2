"""Method configurations: one validated dataclass per method, and the registry by name.

Option names follow tomesd and ToDo where they overlap (ratio, sx, sy, max_downsample,
use_rand, merge_attn, merge_crossattn, merge_mlp, downsample_factor, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch

Blocks = Union[None, str, Sequence[int]]  # noqa: UP007 (runtime alias, py3.10)


def _check(cond: bool, name: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ValueError(f"option {name}={value!r} is out of range: expected {allowed}")


@dataclass
class MethodConfig:
    """Options shared by every method: where it acts and what to do when it would act nowhere.

    blocks: None (the paper's placement for the backbone), "all", or indices into the
        model's list of transformer blocks (in forward order).
    max_downsample: on U-Nets, act only on blocks whose grid is at most this many times
        coarser than the latent (1 = highest resolution). Ignored by transformer backbones,
        whose blocks all see the full token grid (level 1).
    on_empty: "error" | "warn" | "ignore" when the placement selects no block.
    """

    name: ClassVar[str] = "none"
    kind: ClassVar[str] = "none"  # "none" | "merge" | "prune" | "kv"

    blocks: Blocks = None
    max_downsample: int = 1
    on_empty: str = "error"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(isinstance(self.max_downsample, int) and self.max_downsample >= 1, "max_downsample",
               self.max_downsample, "an integer >= 1 (1, 2, 4 or 8 on SD U-Nets)")
        _check(self.on_empty in ("error", "warn", "ignore"), "on_empty", self.on_empty, "'error', 'warn' or 'ignore'")
        if isinstance(self.blocks, str):
            _check(self.blocks in ("all", "default"), "blocks", self.blocks, "None, 'all', 'default' or a list of ints")
        elif self.blocks is not None:
            _check(all(isinstance(b, int) and b >= 0 for b in self.blocks), "blocks", self.blocks,
                   "non-negative block indices")

    def levels(self) -> dict[int, int]:
        """Downsample level -> per-level parameter (here: 1 = active) for U-Net placement."""
        return {lvl: 1 for lvl in (1, 2, 4, 8, 16, 32) if lvl <= self.max_downsample}

    def as_dict(self) -> dict[str, Any]:
        out = {"method": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Generator):
                v = "<generator>"
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


@dataclass
class NoneConfig(MethodConfig):
    """No compression: the baseline. apply/remove still install and remove the bookkeeping hook."""

    name: ClassVar[str] = "none"
    kind: ClassVar[str] = "none"
    on_empty: str = "ignore"


@dataclass
class _WindowedConfig(MethodConfig):
    ratio: float = 0.5
    sx: int = 2
    sy: int = 2
    metric: str = "auto"  # "auto" | "block" (block input) | "attn" (attention input)
    merge_attn: bool = True
    merge_crossattn: bool = False
    merge_mlp: bool = False
    seed: int = 0
    generator: torch.Generator | None = field(default=None, repr=False, compare=False)

    def validate(self) -> None:
        super().validate()
        _check(isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0, "ratio", self.ratio, "[0, 1)")
        _check(isinstance(self.sx, int) and self.sx >= 1, "sx", self.sx, "an integer >= 1")
        _check(isinstance(self.sy, int) and self.sy >= 1, "sy", self.sy, "an integer >= 1")
        _check(self.sx * self.sy >= 2, "sx*sy", self.sx * self.sy, ">= 2 (a window needs a source token)")
        _check(self.metric in ("auto", "block", "attn"), "metric", self.metric, "'auto', 'block' or 'attn'")
        if self.generator is not None:
            _check(isinstance(self.generator, torch.Generator), "generator", self.generator, "a torch.Generator")


@dataclass
class ToMeConfig(_WindowedConfig):
    """ToMe for SD: one random (or top-left) destination per sx x sy window, bipartite soft matching."""

    name: ClassVar[str] = "tome"
    kind: ClassVar[str] = "merge"
    use_rand: bool = True
    mode: str = "mean"

    def validate(self) -> None:
        super().validate()
        _check(self.mode in ("mean", "prune"), "mode", self.mode, "'mean' or 'prune'")


@dataclass
class BiGainTMConfig(_WindowedConfig):
    """BiGain-TM: the destination of each window is its lowest-Laplacian (smoothest) token."""

    name: ClassVar[str] = "bigain-tm"
    kind: ClassVar[str] = "merge"
    dst_rule: str = "paper"  # "paper" (true per-window arg-min) | "reference" (official code's grouping)
    norm: str = "l1"
    mode: str = "mean"

    def validate(self) -> None:
        super().validate()
        _check(self.dst_rule in ("paper", "reference"), "dst_rule", self.dst_rule, "'paper' or 'reference'")
        _check(self.norm in ("l1", "l2"), "norm", self.norm, "'l1' or 'l2'")
        _check(self.mode in ("mean", "prune"), "mode", self.mode, "'mean' or 'prune'")


@dataclass
class SiToConfig(_WindowedConfig):
    """SiTo: similarity-based token pruning with recovery by copy, noise from an explicit generator."""

    name: ClassVar[str] = "sito"
    kind: ClassVar[str] = "prune"
    beta: float = 1.0
    noise_alpha: float = 0.1

    def validate(self) -> None:
        super().validate()
        _check(self.noise_alpha >= 0, "noise_alpha", self.noise_alpha, ">= 0")


@dataclass
class ToDoConfig(MethodConfig):
    """ToDo: keys/values from a nearest-exact downsampled copy of the tokens; queries untouched.

    downsample_factor applies at level 1, downsample_factor_level_2 at level 2 (1 = off).
    The operator is off for a batch whose timesteps are all <= stop_t (default 0: the last
    sampling step runs full attention, as in the reference).
    """

    name: ClassVar[str] = "todo"
    kind: ClassVar[str] = "kv"
    downsample_factor: int = 2
    downsample_factor_level_2: int = 1
    stop_t: float = 0.0

    def validate(self) -> None:
        super().validate()
        for key in ("downsample_factor", "downsample_factor_level_2"):
            v = getattr(self, key)
            _check(isinstance(v, int) and v >= 1, key, v, "an integer >= 1")

    def levels(self) -> dict[int, int]:
        lv = {}
        if self.downsample_factor > 1:
            lv[1] = self.downsample_factor
        if self.downsample_factor_level_2 > 1:
            lv[2] = self.downsample_factor_level_2
        return lv

    def alpha_for(self, t: torch.Tensor) -> float | torch.Tensor:
        return 1.0


@dataclass
class BiGainTDConfig(ToDoConfig):
    """BiGain-TD: alpha * nearest + (1 - alpha) * average pooling as the key/value source.

    alpha is unclamped (> 1 extrapolates). alpha_schedule=(a_999, a_0) makes alpha linear in t,
    from a_999 at t = 999 to a_0 at t = 0 (the paper's generation schedule is (0.8, 1.2)).
    """

    name: ClassVar[str] = "bigain-td"
    kind: ClassVar[str] = "kv"
    alpha: float = 0.9
    alpha_schedule: tuple[float, float] | None = None

    def validate(self) -> None:
        super().validate()
        _check(isinstance(self.alpha, (int, float)), "alpha", self.alpha, "a real number")
        if self.alpha_schedule is not None:
            _check(len(tuple(self.alpha_schedule)) == 2, "alpha_schedule", self.alpha_schedule, "(alpha_at_999, alpha_at_0)")
            self.alpha_schedule = tuple(float(a) for a in self.alpha_schedule)

    def alpha_for(self, t: torch.Tensor) -> float | torch.Tensor:
        if self.alpha_schedule is None:
            return float(self.alpha)
        start, end = self.alpha_schedule
        frac = t.float().clamp(0, 999) / 999.0
        return start * frac + end * (1.0 - frac)


METHODS: dict[str, type[MethodConfig]] = {
    c.name: c for c in (NoneConfig, ToMeConfig, BiGainTMConfig, ToDoConfig, BiGainTDConfig, SiToConfig)
}

_ALIASES = {"factor": "downsample_factor", "factor_level_2": "downsample_factor_level_2"}


def methods() -> list[str]:
    """Names of the available methods."""
    return list(METHODS)


def make_config(method: str | MethodConfig, **options: Any) -> MethodConfig:
    """Build a validated config from a method name and tomesd/ToDo-style options."""
    if isinstance(method, MethodConfig):
        if options:
            return dataclasses.replace(method, **options)
        return method
    key = str(method).lower().replace("_", "-")
    if key not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    cls = METHODS[key]
    names = {f.name for f in dataclasses.fields(cls)}
    opts = {}
    for k, v in options.items():
        k = _ALIASES.get(k, k)
        if k not in names:
            raise ValueError(f"method {key!r} has no option {k!r}; its options: {', '.join(sorted(names))}")
        opts[k] = v
    return cls(**opts)


def parse_option_value(text: str) -> Any:
    """A command-line option value as Python: bools, None, int, float, comma lists, else the string."""
    v = text.strip()
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    if "," in v:
        return [parse_option_value(x) for x in v.split(",") if x.strip()]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
