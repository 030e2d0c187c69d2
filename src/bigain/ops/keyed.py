"""Counter-based random numbers keyed by integers, in pure tensor arithmetic.

Why: the diffusion classifier needs every random choice of a batch row to depend
only on that row's key (image, timestep, block), never on batch composition, and
`torch.compile(fullgraph=True)` cannot trace a `torch.Generator`. A stateless hash
of (key, salt, element index) gives both. All arithmetic stays below 2**63 so no
int64 overflow occurs (32-bit multiplies are split into 16-bit halves).

Under `torch.compile` on CUDA, Inductor folds `arange(count) * constant` (and any re-indexing
of it, which multiplies the constant further) into the Triton kernel's index arithmetic, which
is int32 for small tensors; Triton then rejects the literal ("Scalar 2654435769 is out of range
for type int32"), or the product could wrap. So the element index first passes through a bitwise
op (`& 0xFFFFFFFF`, a no-op on it), which Inductor does not fold into index arithmetic: the
product is then ordinary int64 data arithmetic. The stride is written as the int32 constant with
the same residue mod 2**32 (only the low 32 bits are kept), so the values are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from .grid import Grid, as_window
from .tracing import is_compiling

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_GOLDEN_I32 = _GOLDEN - (1 << 32)  # -1640531527: the same residue mod 2**32, an int32 literal


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    hi = ((x >> 16) * c) & 0xFFFF
    return ((hi << 16) + (x & 0xFFFF) * c) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Avalanche hash of uint32 values held in int64 (xorshift-multiply rounds)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keyed_bits(keys: torch.Tensor, salt: int, count: int) -> torch.Tensor:
    """(B,) int64 keys -> (B, count) independent-looking uint32 values (as int64)."""
    keys = keys.to(torch.int64)
    lo = keys & _MASK32
    hi = (keys >> 32) & _MASK32
    base = hash32(hash32(lo ^ hash32(torch.full_like(lo, salt & _MASK32))) ^ hi)
    idx = torch.arange(count, device=keys.device, dtype=torch.int64)
    return hash32(base[:, None] + (((idx & _MASK32) * _GOLDEN_I32) & _MASK32)[None, :])


def keyed_bits_table(keys: torch.Tensor, salts: torch.Tensor, count: int) -> torch.Tensor:
    """(B,) keys and (K,) salts -> (B, K, count) bits; slice [:, k, :n] equals `keyed_bits(keys, salts[k], n)`.

    One pass for every block of a forward: the per-block draws of a patch cost one slice and one
    remainder instead of a hash pipeline (about twenty kernels) per block.
    """
    keys = keys.to(torch.int64)
    lo = (keys & _MASK32)[:, None]
    hi = ((keys >> 32) & _MASK32)[:, None]
    base = hash32(hash32(lo ^ hash32(salts.to(torch.int64) & _MASK32)[None, :]) ^ hi)
    idx = torch.arange(count, device=keys.device, dtype=torch.int64)
    return hash32(base[:, :, None] + (((idx & _MASK32) * _GOLDEN_I32) & _MASK32)[None, None, :])


def normal_from_bits(bits: torch.Tensor, count: int) -> torch.Tensor:
    """Standard normal float32 samples from 2 * count uniform bits on the last axis (Box-Muller)."""
    u = ((bits[..., : 2 * count] >> 8).to(torch.float32) + 0.5) / float(1 << 24)  # (0, 1)
    u1, u2 = u[..., :count], u[..., count:]
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def keyed_randint(keys: torch.Tensor, salt: int, count: int, high: int) -> torch.Tensor:
    """(B, count) integers in [0, high); modulo bias < high / 2**32."""
    return keyed_bits(keys, salt, count) % high


def keyed_normal(keys: torch.Tensor, salt: int, count: int) -> torch.Tensor:
    """(B, count) standard normal float32 samples (Box-Muller on two keyed uniforms)."""
    return normal_from_bits(keyed_bits(keys, salt, 2 * count), count)


# Host-side keys (plain Python ints) that callers hand to `bigain.sample_keys`.
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_keys(*parts: int) -> int:
    """A 63-bit non-negative hash of a sequence of integers (stable across runs and machines)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h & ((1 << 63) - 1)


def row_keys(image_keys: Sequence[int], slots: Sequence[int]) -> torch.Tensor:
    """The per-row sampling keys: a hash of (image key, noise slot); class is not part of it."""
    return torch.tensor([mix_keys(k, s) for k, s in zip(image_keys, slots)], dtype=torch.int64)


# The timestep-keyed stream (the default random source of a patch): one cheap hash per forward.
# Multipliers are below 2**31, so every product of a 32-bit value stays below 2**63.
_STEP_MUL = 0x045D9F3B
_ROW_MUL = 0x2545F491
_IDX_MUL = 0x5BD1E995 & 0x7FFFFFFF
_TERMS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds) on values below 2**32."""
    x = x ^ (x >> 16)
    x = (x * _STEP_MUL) & _MASK32
    x = x ^ (x >> 16)
    x = (x * _STEP_MUL) & _MASK32
    return x ^ (x >> 16)


def _step_terms(seed_salt_: int, first: int, last: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block and per-element terms of the timestep stream: constants of a patch, cached per device
    outside torch.compile (inside a graph they are computed in it)."""
    key = (seed_salt_, first, last, count, torch.device(device))
    terms = None if is_compiling() else _TERMS.get(key)
    if terms is None:
        blocks = torch.arange(first, last + 1, device=device, dtype=torch.int64)
        block_term = _mix32((blocks * 7919 + (seed_salt_ & _MASK32)) & _MASK32)
        idx = torch.arange(count, device=device, dtype=torch.int64)
        idx_term = ((idx & _MASK32) * _IDX_MUL) & _MASK32
        terms = (block_term, idx_term)
        if not is_compiling():
            if len(_TERMS) >= 64:
                _TERMS.clear()
            _TERMS[key] = terms
    return terms


def timestep_keys(t: torch.Tensor) -> torch.Tensor:
    """Per-row int64 keys from timesteps on the 0-1000 scale (1/64-step resolution), on t's device."""
    return torch.round(t.to(torch.float32) * 64.0).to(torch.int64)


def step_bits_table(t: torch.Tensor, seed_salt_: int, first: int, last: int, count: int) -> torch.Tensor:
    """(B,) timesteps -> (B, blocks, count) bits for blocks first..last: the default random source.

    A function of (seed, block, timestep, element) only, computed on t's device in about fifteen
    elementwise kernels per forward (for all blocks together).
    """
    rows = (timestep_keys(t) & _MASK32) * _ROW_MUL  # < 2**63
    block_term, idx_term = _step_terms(seed_salt_, first, last, count, t.device)
    x = (rows[:, None, None] + block_term[None, :, None] + idx_term[None, None, :]) & _MASK32
    return _mix32(x)


class KeyedTable:
    """The random numbers of every block of one forward, made on the device on first use.

    `for_keys`: per-row keys from the caller (`bigain.sample_keys`); block `index` then gets exactly
    `keyed_randint` / `keyed_normal` of its salt `block_salt(seed, index)`. `for_timesteps`: the
    default, keyed by each row's timestep (`step_bits_table`). Either way all blocks are hashed in
    one pass and each block takes a slice.
    """

    def __init__(self, bits_fn, first: int) -> None:  # noqa: ANN001
        self._bits_fn, self.first = bits_fn, first
        self._bits: torch.Tensor | None = None
        self._normal: dict[int, torch.Tensor] = {}

    @classmethod
    def for_keys(cls, keys: torch.Tensor, seed: int, first: int, last: int) -> KeyedTable:
        salts = (torch.arange(first, last + 1, device=keys.device, dtype=torch.int64) * 7919 + seed_salt(seed)) & _MASK32
        return cls(lambda count: keyed_bits_table(keys, salts, count), first)

    @classmethod
    def for_timesteps(cls, t: torch.Tensor, seed: int, first: int, last: int) -> KeyedTable:
        return cls(lambda count: step_bits_table(t, seed_salt(seed), first, last, count), first)

    def bits(self, count: int) -> torch.Tensor:
        """(B, blocks, >= count) bits; index k is block first + k."""
        if self._bits is None or self._bits.shape[-1] < count:
            self._bits = self._bits_fn(count)
        return self._bits

    def windows(self, index: int, grid: Grid, window: Iterable[int]) -> torch.Tensor:
        """(B, T//st, H//sy, W//sx) destination indices in [0, st*sy*sx) (see `ops.partition_windows`)."""
        st, sy, sx = as_window(window)
        counts = (grid.frames // st, grid.height // sy, grid.width // sx)
        n = counts[0] * counts[1] * counts[2]
        return (self.bits(n)[:, index - self.first, :n] % (st * sy * sx)).view(-1, *counts)

    def window_choice(self, index: int, height: int, width: int, sx: int, sy: int) -> torch.Tensor:
        """(B, H//sy, W//sx) destination indices in [0, sx*sy): `windows` on an image."""
        hsy, wsx = height // sy, width // sx
        return self.windows(index, Grid.image(height, width), (1, sy, sx)).view(-1, hsy, wsx)

    def normal(self, index: int, count: int) -> torch.Tensor:
        """(B, count) standard normals."""
        table = self._normal.get(count)
        if table is None:
            table = self._normal[count] = normal_from_bits(self._bits_fn(2 * count), count)
        return table[:, index - self.first]


def block_salt(seed: int, index: int) -> int:
    """The salt of block `index` of a patch with `seed` (what `KeyedTable` gives that block)."""
    return (int(seed) * 1_000_003 + int(index) * 7919 + 17) & _MASK32


def seed_salt(seed: int) -> int:
    return (int(seed) * 1_000_003 + 17) & _MASK32
