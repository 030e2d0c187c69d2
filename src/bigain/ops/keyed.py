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
from collections.abc import Sequence

import torch

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


def keyed_randint(keys: torch.Tensor, salt: int, count: int, high: int) -> torch.Tensor:
    """(B, count) integers in [0, high); modulo bias < high / 2**32."""
    return keyed_bits(keys, salt, count) % high


def keyed_normal(keys: torch.Tensor, salt: int, count: int) -> torch.Tensor:
    """(B, count) standard normal float32 samples (Box-Muller on two keyed uniforms)."""
    bits = keyed_bits(keys, salt, 2 * count)
    u = ((bits >> 8).to(torch.float32) + 0.5) / float(1 << 24)  # (0, 1)
    u1, u2 = u[:, :count], u[:, count:]
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


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
