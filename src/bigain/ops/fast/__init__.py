"""Optional GPU fast paths (Triton kernels) for the hot operators, dispatched from inside the ops.

The PyTorch code in `bigain.ops` is the reference: it runs on every device, it is what the tests
check against, and it is what `torch.compile` sees (Inductor fuses it itself). A fast path runs only
when all of these hold:

- the tensors are on CUDA (or the mode is "interpret": Triton's CPU interpreter, for tests);
- `triton` imports (install the `fast` extra: `pip install bigain[fast]`; CUDA wheels of torch
  already ship it);
- it is not switched off: environment variable ``BIGAIN_FAST=0`` or ``set_mode("off")``;
- the code is not being traced by `torch.compile`.

Callers never choose: `bipartite_merge_plan`, `MergePlan.reduce/expand`, `prune_plan` (and
`similarity_prune_plan`), `PrunePlan` and `downsample_tokens` dispatch themselves, with the same results
up to floating-point rounding (the fast kernels accumulate in float32; merge plans are the same on
inputs without ties). The plan kernels take flat token ids, so they serve grids of any number of frames.
The KV kernel reads one frame's (H*W, C) layout: `downsample` on a video grid hands it the frames as
batch rows when the frame factor is 1, and runs the PyTorch reference when it is larger (no kernel
for blocks spanning frames).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

from ..tracing import is_compiling

MODES = ("auto", "off", "interpret")
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _mode_from_env() -> str:
    value = os.environ.get("BIGAIN_FAST", "1").strip().lower()
    return "off" if value in ("0", "off", "false", "no") else "auto"


_mode = _mode_from_env()
_triton_available: bool | None = None
_kernels: ModuleType | None = None


def available() -> bool:
    """True when the `triton` package is importable (checked once)."""
    global _triton_available
    if _triton_available is None:
        _triton_available = importlib.util.find_spec("triton") is not None
    return _triton_available


def mode() -> str:
    return _mode


def set_mode(new_mode: str) -> None:
    """Switch to "auto" (CUDA tensors use the kernels), "off" (reference everywhere) or "interpret".

    "interpret" runs the kernels on CPU tensors through Triton's interpreter (slow; for tests). It sets
    TRITON_INTERPRET=1 and reloads the kernels, since Triton reads that variable when a kernel is defined.
    """
    global _mode, _kernels
    if new_mode not in MODES:
        raise ValueError(f"fast mode must be one of {MODES}, got {new_mode!r}")
    if new_mode == "interpret" and os.environ.get("TRITON_INTERPRET") != "1":
        os.environ["TRITON_INTERPRET"] = "1"
        if _kernels is not None:  # defined as compiled kernels: define them again, interpreted
            _kernels = importlib.reload(_kernels)
    _mode = new_mode


@contextmanager
def using(new_mode: str) -> Iterator[None]:
    """Temporarily switch the mode (e.g. `with fast.using("off"):` to time the reference path)."""
    old = _mode
    set_mode(new_mode)
    try:
        yield
    finally:
        set_mode(old)


def active(*tensors: torch.Tensor) -> bool:
    """Whether an op called on these tensors should take its fast path."""
    if _mode == "off" or is_compiling() or not available():  # compiling first: traced code never imports
        return False
    if not all(t.dtype in KERNEL_DTYPES for t in tensors):
        return False  # e.g. float64: the reference handles it
    if _mode == "interpret":
        return True
    return all(t.is_cuda for t in tensors)


def kernels() -> ModuleType:
    """The Triton kernel module, imported on first use (so CPU-only installs never import triton)."""
    global _kernels
    if _kernels is None:
        _kernels = importlib.import_module(".triton_ops", __name__)
    return _kernels
