"""Counting what a forward asks of the host and how many operators it launches, without a GPU.

A `TorchDispatchMode` sees every ATen operator below autograd. Run a model on a stand-in device
(the meta device: shapes only, no data) and count:

- host -> device copies (a tensor made from host data or copied from the CPU onto the device): on a
  GPU each one from pageable memory stalls the host until the stream has drained;
- device -> host reads (`.item()`, `bool(tensor)`, `.tolist()`, `.cpu()` of a device tensor): each
  one waits for every kernel queued before it;
- non-view operators (each launches at least one kernel on a GPU), by name.

Reads of meta tensors have no value to return; the counter answers them with 0 so that the forward
runs on and every read is counted (a read that decides a branch may then take the wrong branch,
which is fine for counting: the goal is zero reads).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default}
# Operators that move no data and launch no kernel (allocation, metadata, aliasing).
_FREE = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "detach",
    "lift_fresh",
    "lift_fresh_copy",
    "_unsafe_view",
    "alias",
    "_to_copy_noop",
    "resize_",
    "set_",
    "_reshape_alias",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "sym_storage_offset",
    "is_same_size",
    "_has_compatible_shallow_copy_type",
}


def _device_of(x: Any) -> torch.device | None:
    return x.device if isinstance(x, torch.Tensor) else None


@dataclass
class Traffic:
    """What one counted region did: host->device copies, device->host reads, operators by name."""

    h2d: int = 0
    d2h: int = 0
    ops: Counter = field(default_factory=Counter)
    where: list[str] = field(default_factory=list)  # operator names of the transfers, in order

    @property
    def num_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def transfers(self) -> int:
        return self.h2d + self.d2h


class TrafficCounter(TorchDispatchMode):
    """Counts host<->device traffic and non-view operators on `device_type` tensors (default meta)."""

    def __init__(self, device_type: str = "meta") -> None:
        super().__init__()
        self.device_type = device_type
        self.traffic = Traffic()

    def _on_device(self, x: Any) -> bool:
        d = _device_of(x)
        return d is not None and d.type == self.device_type

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        tr = self.traffic
        name = func.overloadpacket.__name__
        if func in _READS:
            if any(self._on_device(a) for a in args):
                tr.d2h += 1
                tr.where.append(name)
                if self.device_type == "meta":
                    return False if func is aten.is_nonzero.default else 0
            return func(*args, **kwargs)
        if name in ("_to_copy", "copy_", "to", "_copy_from", "_copy_from_and_resize"):
            src = args[1] if name in ("copy_", "_copy_from", "_copy_from_and_resize") and len(args) > 1 else args[0]
            if name == "_to_copy":
                dst_dev = kwargs.get("device") or _device_of(args[0])
                dst_dev = torch.device(dst_dev) if dst_dev is not None else None
            else:
                dst_dev = _device_of(args[0]) if name != "_copy_from" else _device_of(args[1])
                src = args[0] if name == "_copy_from" else src
            src_dev = _device_of(src)
            if src_dev is not None and dst_dev is not None and src_dev.type != dst_dev.type:
                if dst_dev.type == self.device_type and src_dev.type == "cpu":
                    tr.h2d += 1
                    tr.where.append(name)
                elif src_dev.type == self.device_type and dst_dev.type == "cpu":
                    tr.d2h += 1
                    tr.where.append(name)
                    if self.device_type == "meta":  # no data to copy out: zeros of the right shape
                        if name == "_to_copy":
                            return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
                        return args[0].zero_()
        out = func(*args, **kwargs)
        if not func.is_view and name not in _FREE:
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if any(self._on_device(a) for a in tensors) or self._on_device(out if isinstance(out, torch.Tensor) else None):
                tr.ops[name] += 1
        return out


# Tensors made from Python data on a device: the data is copied from the host below the dispatcher,
# so the dispatch mode cannot see it; a function mode sees the call.
_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


class _DataCopies(TorchFunctionMode):
    def __init__(self, traffic: Traffic, device_type: str) -> None:
        super().__init__()
        self.traffic, self.device_type = traffic, device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        if func in _FROM_DATA and isinstance(out, torch.Tensor) and out.device.type == self.device_type:
            src = args[0] if func is not torch.Tensor.new_tensor else (args[1] if len(args) > 1 else None)
            if not isinstance(src, torch.Tensor):  # Python data (a tensor source is a dispatched copy)
                self.traffic.h2d += 1
                self.traffic.where.append(getattr(func, "__name__", str(func)))
        return out


def count_traffic(fn: Callable[[], Any], device_type: str = "meta") -> Traffic:
    """Run `fn()` under a `TrafficCounter` and return what it counted."""
    counter = TrafficCounter(device_type)
    with _DataCopies(counter.traffic, device_type), counter:
        fn()
    return counter.traffic
