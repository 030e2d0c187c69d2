"""Wall-clock timing of denoiser forwards, and the share of a forward spent in chosen sub-layers.

The share s of the forward spent in the sub-layers a method compresses bounds its speedup: even if
they cost nothing, the forward gets at most 1 / (1 - s) times faster (the "ceiling").
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .flops import call_model
from .patch import compressed_sublayers, patched


def sync_fn(device: torch.device | None) -> Callable[[], None]:
    """A no-argument function that waits for `device`'s queued work (a no-op off CUDA)."""
    if device is not None and device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class Timing:
    """Per-run wall and process-CPU seconds of one forward (after `warmup` untimed forwards)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "median_s": self.median,
            "cpu_median_s": self.cpu_median,
        }


def time_once(
    model: nn.Module,
    inputs: Any,
    sync: Callable[[], None] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one no-grad forward (`inputs`, `kwargs` as in `call_model`)."""
    sync = sync or sync_fn(model_device(model))
    with torch.no_grad():
        sync()
        c0, t0 = time.process_time(), time.perf_counter()
        call_model(model, inputs, kwargs)
        sync()
        return time.perf_counter() - t0, time.process_time() - c0


def time_forward(
    model: nn.Module,
    inputs: Any,
    method: str | None = None,
    *,
    repeats: int = 3,
    warmup: int = 1,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Timing:
    """Time `repeats` forwards of `model` (optionally patched with a bigain method or "tomesd")."""
    out = Timing()
    with patched(model, method, **options):
        for _ in range(warmup):
            time_once(model, inputs, kwargs=kwargs)
        for _ in range(repeats):
            w, c = time_once(model, inputs, kwargs=kwargs)
            out.wall.append(w)
            out.cpu.append(c)
    return out


class SublayerTimer:
    """Accumulates the wall time spent inside named sub-modules, with forward pre/post hooks.

    Registered hooks cost two `perf_counter` calls per sub-layer call (plus a synchronisation on
    CUDA, which perturbs the forward: there, measure the share in forwards of its own).
    Use as a context manager; `times[name]` is the total time of that module since entry or `reset`.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.times: dict[str, float] = dict.fromkeys(self.names, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(self.names, 0)
        self._start: dict[str, float] = {}
        self._handles: list[Any] = []
        self._sync = sync_fn(model_device(model))

    def reset(self) -> None:
        self.times = dict.fromkeys(self.names, 0.0)
        self.calls = dict.fromkeys(self.names, 0)

    def total(self, names: Sequence[str] | None = None) -> float:
        return sum(self.times[n] for n in (self.names if names is None else names))

    def __enter__(self) -> SublayerTimer:
        for name in self.names:
            module = self.model.get_submodule(name)
            # prepend both: time the sub-layer's own forward, inside any patch's reduce/expand hooks
            self._handles.append(module.register_forward_pre_hook(self._pre(name), prepend=True))
            self._handles.append(module.register_forward_hook(self._post(name), prepend=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _pre(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self._sync()
            self._start[name] = time.perf_counter()

        return hook

    def _post(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._sync()
            self.times[name] += time.perf_counter() - self._start.pop(name)
            self.calls[name] += 1

        return hook


@dataclass
class Share:
    """Fraction of the forward's wall time spent in `sublayers` (per run, and the median)."""

    sublayers: list[str]
    shares: list[float]
    forward_s: list[float]

    @property
    def share(self) -> float:
        return statistics.median(self.shares) if self.shares else 0.0

    @property
    def ceiling(self) -> float:
        """Largest speedup reachable by making the sub-layers free: 1 / (1 - share)."""
        return 1.0 / (1.0 - self.share)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sublayers": self.sublayers,
            "shares": self.shares,
            "forward_s": self.forward_s,
            "share": self.share,
            "ceiling": self.ceiling,
        }


def sublayer_share(
    model: nn.Module,
    inputs: Any,
    sublayers: Sequence[str] | None = None,
    method: str | None = None,
    *,
    repeats: int = 1,
    warmup: int = 0,
    kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> Share:
    """Share of an *uncompressed* forward spent in `sublayers`, or in those `method` (with
    `options`) would compress (e.g. attn1 of the five 64x64 blocks of SD 2 for ToMe's default).

    The model runs unpatched: the share of the compressed sub-layers in the baseline gives the
    ceiling on the method's speedup, 1 / (1 - share).
    """
    if sublayers is None:
        if method is None:
            raise ValueError("sublayer_share needs sublayers= or a method= whose sub-layers to time")
        sublayers = compressed_sublayers(model, method, **options)
    if not sublayers:
        raise ValueError(f"no sub-layer to time (method={method!r}, options={options!r})")
    share = Share(list(sublayers), [], [])
    with torch.no_grad():
        for _ in range(warmup):
            call_model(model, inputs, kwargs)
        with SublayerTimer(model, sublayers) as timer:
            for _ in range(repeats):
                timer.reset()
                wall, _ = time_once(model, inputs, kwargs=kwargs)
                share.forward_s.append(wall)
                share.shares.append(timer.total() / wall)
    return share


def machine_info() -> dict[str, Any]:
    """CPU model (from /proc/cpuinfo), cores, torch version and threads, GPU if any."""
    cpu = ""
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not cpu:
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    have = set(line.split(":", 1)[1].split())
                    flags = sorted(f for f in have if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_flags": flags,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = list(os.getloadavg())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (None: leave as is)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# GPU-ready timing: device events, interleaved rounds, quantile summaries


def time_events(fn: Callable[[], Any], device: torch.device, n: int = 1) -> list[float]:
    """Seconds of each of `n` calls of `fn`. On CUDA, between events recorded on the current stream
    around each call (host launch gaps included, as the GPU waits for them); elsewhere wall time."""
    out: list[float] = []
    if device.type == "cuda":
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000.0)
        return out
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def quantile(xs: Sequence[float], q: float) -> float:
    """The q-quantile of `xs` with linear interpolation between order statistics."""
    s = sorted(xs)
    if not s:
        raise ValueError("quantile of no values")
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def quartiles(xs: Sequence[float]) -> tuple[float, float] | None:
    """(first, third) quartile, or None with fewer than 3 values."""
    if len(xs) < 3:
        return None
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def spread(xs: Sequence[float]) -> dict[str, float]:
    """Median with the 10th and 90th percentiles."""
    return {"median": statistics.median(xs), "p10": quantile(xs, 0.1), "p90": quantile(xs, 0.9)}


def round_order(keys: Sequence[str], rnd: int) -> list[str]:
    """Visiting order of round `rnd`: rotated by one per round, reversed every other round, so no
    setting always follows the same neighbour or always runs first."""
    keys = list(keys)
    shift = rnd % max(1, len(keys))
    order = keys[shift:] + keys[:shift]
    return order if rnd % 2 == 0 else order[::-1]


def interleave(
    keys: Sequence[str], rounds: int, visit: Callable[[str, int], list[float]]
) -> dict[str, list[list[float]]]:
    """Run `visit(key, round)` for every key in every round (`round_order`); per key, the list of
    each round's returned times."""
    out: dict[str, list[list[float]]] = {k: [] for k in keys}
    for rnd in range(rounds):
        for k in round_order(keys, rnd):
            out[k].append(visit(k, rnd))
    return out
