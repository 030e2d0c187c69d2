"""What every method shares: option checks, the placement options, and where random draws come from.

A method config is a validated dataclass. The patching layer never looks at a method's name: it asks
the config which *mechanism* it uses ("tokens": reduce the tokens a sub-layer sees and expand its
output; "kv": give self-attention a smaller key/value source; "none") and then calls the config's
own operator choices (`make_plan`, `kv_source`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import torch

from .. import ops

Blocks = Union[None, str, Sequence[int]]  # noqa: UP007 (runtime alias, py3.10)

LEVELS = (1, 2, 4, 8, 16, 32)

BLOCKS_ALLOWED = (
    "None, 'all', 'default' or a list of block indices >= 0: blocks=[0, 1, 2] in Python, "
    "--option blocks=0,1,2 on the command line (one block: blocks=3,)"
)


def check(cond: bool, name: str, value: Any, allowed: str, *, kind: str | None = None) -> None:
    """Raise the one error shape every option uses: the option, its value and what is allowed
    (a number is "out of range", any other value "not valid", unless `kind` says otherwise)."""
    if not cond:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        kind = kind or ("out of range" if number else "not valid")
        raise ValueError(f"option {name}={value!r} is {kind}: expected {allowed}")


def is_real(value: Any) -> bool:
    """A finite int/float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
SEED_LIMIT = 2**63


def as_bool(name: str, value: Any) -> bool:
    """A boolean option: True/False, 0/1, or a clear spelling ("true"/"false", "yes"/"no",
    "on"/"off", "1"/"0"). Anything else ("maybe", 2, None) is an error, never silently truthy."""
    if isinstance(value, bool):
        return value
    if is_int(value) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    check(False, name, value, "a boolean: True/False, 1/0, yes/no, on/off")
    return False  # unreachable


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer in [0, 2**63) (what torch.Generator.manual_seed and the keyed hash take)."""
    check(is_int(value) and 0 <= value < SEED_LIMIT, name, value, "an integer in [0, 2**63)")
    return value


RNG_SOURCES = ("keyed", "generator")


@dataclass
class Draw:
    """Where the random choices of one block call come from.

    Default ("keyed"): a counter-based hash on the device, one table per forward (`table`, this
    block's `slot` in it) keyed per batch row by the timestep, or by the caller's keys
    (`bigain.sample_keys`): no host data, no generator state, and the same numbers eager and
    compiled. `keys` without a table hashes this block's draws directly (the same numbers).
    "generator": tomesd's stream, drawn from `generator` on its own device (eager only).
    """

    salt: int
    keys: torch.Tensor | None = None
    generator: torch.Generator | None = None
    table: ops.KeyedTable | None = None
    slot: int = 0

    def windows(self, grid: ops.Grid, window: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        """A random destination index per (st, sy, sx) window: (B or 1, T//st, H//sy, W//sx)."""
        if self.table is not None:
            return self.table.windows(self.slot, grid, window)
        if self.keys is not None:
            return ops.keyed_windows(self.keys.to(device), self.salt, grid, window)
        return ops.random_windows(grid, window, self.generator, device)

    def normal(self, batch: int, count: int, device: torch.device) -> torch.Tensor:
        """Standard normal noise (batch, count)."""
        if self.table is not None:
            return self.table.normal(self.slot, count)
        if self.keys is not None:
            return ops.keyed_normal(self.keys.to(device), self.salt, count)
        gen = self.generator
        gen_device = gen.device if gen is not None else device
        return torch.randn((batch, count), generator=gen, device=gen_device).to(device)


@dataclass
class MethodConfig:
    """Options shared by every method: where it acts and what to do when it would act nowhere.

    blocks: None (the backbone's default placement), "all", or indices into the model's list of
        transformer blocks (in forward order).
    max_downsample: on U-Nets, act only on blocks whose grid is at most this many times coarser
        than the latent (1 = highest resolution; None = the backbone's default level). Transformer
        backbones have every block at level 1 and ignore it.
    on_empty: "error" | "warn" | "ignore" when the placement selects no block.
    """

    name: ClassVar[str] = "none"
    mechanism: ClassVar[str] = "none"  # "none" | "tokens" | "kv"

    blocks: Blocks = None
    max_downsample: int | None = None
    on_empty: str = "error"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        md = self.max_downsample
        check(md is None or (is_int(md) and md >= 1), "max_downsample", md,
              "None or an integer >= 1 (1, 2, 4 or 8 on SD U-Nets)")
        check(self.on_empty in ("error", "warn", "ignore"), "on_empty", self.on_empty, "'error', 'warn' or 'ignore'")
        if isinstance(self.blocks, str):
            check(self.blocks in ("all", "default"), "blocks", self.blocks, BLOCKS_ALLOWED)
        elif self.blocks is not None:
            ok = isinstance(self.blocks, Sequence) and all(is_int(b) and b >= 0 for b in self.blocks)
            check(ok, "blocks", self.blocks, BLOCKS_ALLOWED, kind="out of range" if isinstance(self.blocks, Sequence) else "not a list")
            self.blocks = tuple(self.blocks)

    # -- placement ---------------------------------------------------------------------------
    def level_params(self, default_max_downsample: int) -> dict[int, int]:
        """U-Net placement by level: downsample level -> the per-block parameter (1 = active)."""
        md = default_max_downsample if self.max_downsample is None else self.max_downsample
        return {lvl: 1 for lvl in LEVELS if lvl <= md}

    def block_param(self, level: int, default_level: int = 1) -> int | None:
        """The per-block parameter for a block chosen by index (`blocks=`); None: the block would
        do nothing at this level."""
        return 1

    # -- per forward ---------------------------------------------------------------------------
    def switched_off(self, host_timesteps: tuple[float, ...] | None) -> bool:
        """Whether a forward at these timesteps (0-1000 scale, known on the host) runs uncompressed."""
        return False

    # -- report ------------------------------------------------------------------------------
    def reduced_tokens(self, num_tokens: int, grid: ops.Grid, param: int) -> int:
        """Tokens the compressed sub-layer works on (queries for token methods, keys for KV)."""
        return num_tokens

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Generator):
                v = "<generator>"
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
