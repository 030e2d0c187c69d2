"""Micro-benchmark of the hot operators on a GPU: each Triton fast path against its PyTorch reference.

Operators, at the token counts of the real models (fp16): the bipartite merge plan (ToMe/BiGain-TM
matching), the merge (`MergePlan.reduce`) and unmerge (`expand`), the SiTo prune plan, and the KV
downsampling of ToDo (nearest) and BiGain-TD (blend). Sizes: SD2 level 0 at 512/1024/2048 px
(4096/16384/65536 tokens, C=320) and DiT-XL/2 at 256/512 px (256/1024 tokens, C=1152).

Every (operator, size) pair is timed in one process with CUDA events, the reference and the fast
path in interleaved rounds; the report gives median, p10 and p90 per path, the speedup of the
medians, and a correctness check of the fast path against the reference on the same inputs. A last
section checks `torch.compile(fullgraph=True)` on CUDA of the keyed hash and of a ToMe plan built
from keyed choices (reference path, as compiled code uses it), against eager.

It needs only torch (+ triton for the fast paths), not diffusers: on a machine without diffusers,
`bigain.ops` is imported without the package's top level.

    python benchmarks/gpu_ops.py                 # the full matrix (planned to take under 3 min on an H100)
    python benchmarks/gpu_ops.py --smoke         # tiny sizes on CPU, reference path only (a dry run)

Writes benchmarks/results/gpu-ops.json (every round's time) and gpu-ops.md (summary).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu-ops"


def import_ops() -> types.ModuleType:
    """`bigain.ops`, also where diffusers is missing (bigain/__init__ imports the patching layer)."""
    sys.path.insert(0, str(ROOT / "src"))
    try:
        return importlib.import_module("bigain.ops")
    except ImportError:
        for name in [m for m in sys.modules if m == "bigain" or m.startswith("bigain.")]:
            del sys.modules[name]
        pkg = types.ModuleType("bigain")
        pkg.__path__ = [str(ROOT / "src" / "bigain")]
        sys.modules["bigain"] = pkg
        return importlib.import_module("bigain.ops")


ops = import_ops()
fast = importlib.import_module("bigain.ops.fast")
keyed = importlib.import_module("bigain.ops.keyed")

# (name, grid height, grid width, channels, batches)
FULL_SIZES = [
    ("sd2-512", 64, 64, 320, (2, 8)),
    ("sd2-1024", 128, 128, 320, (2, 8)),
    ("sd2-2048", 256, 256, 320, (1,)),
    ("dit-256", 16, 16, 1152, (8, 64)),
    ("dit-512", 32, 32, 1152, (16,)),
]
SMOKE_SIZES = [("smoke", 8, 8, 32, (2,)), ("smoke-odd", 7, 5, 24, (1,))]
RATIO = 0.5


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------


def time_call(fn: Callable[[], Any], device: torch.device, inner: int) -> float:
    """Milliseconds per call of `inner` back-to-back calls (CUDA events on GPU, wall clock on CPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) * 1e3 / inner


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "p10": quantile(xs, 0.1), "p90": quantile(xs, 0.9)}


def with_mode(mode: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def call() -> Any:
        with fast.using(mode):
            return fn()

    return call


def interleaved(
    variants: dict[str, Callable[[], Any]], device: torch.device, rounds: int, budget_ms: float
) -> dict[str, list[float]]:
    """Warm up each variant, pick inner repetitions (~budget_ms per sample), then time round-robin."""
    inner = {}
    for name, fn in variants.items():
        fn()
        once = time_call(fn, device, 1)
        inner[name] = max(1, min(50, int(budget_ms / max(once, 1e-3))))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(time_call(fn, device, inner[name]))
    return times


# ---------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------


def partition_for(
    b: int, h: int, w: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    choice = torch.randint(4, (b, h // 2, w // 2), generator=gen).to(device)
    return ops.partition(choice, h, w, 2, 2)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def safely(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A check's numbers, or the error it raised (one failing fast path must not end a GPU run)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}


def cases_for(
    name: str, h: int, w: int, c: int, b: int, device: torch.device, dtype: torch.dtype
) -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    """(operator, call, correctness) for one size: the call runs under the mode set around it."""
    n = h * w
    gen = torch.Generator(device="cpu").manual_seed(n + b)
    metric = torch.randn(b, n, c, generator=gen).to(device, dtype)
    x = torch.randn(b, n, c, generator=gen).to(device, dtype)
    dst, src = partition_for(b, h, w, device, seed=n)
    r = int(RATIO * n)
    out = []

    def plan() -> Any:
        return ops.bipartite_merge_plan(metric, dst, src, r)

    with fast.using("off"):
        ref_plan = plan()
        ref_reduced = ref_plan.reduce(x)
        ref_expanded = ref_plan.expand(ref_reduced)

    def plan_check() -> dict[str, Any]:
        got = plan()
        return {
            "inverse_agreement": float((got.inverse == ref_plan.inverse).float().mean()),
            "merged_set_agreement": float(
                (got.merged_idx.sort(dim=1).values == ref_plan.merged_idx.sort(dim=1).values).float().mean()
            ),
        }

    out.append(("merge_plan", plan, safely(plan_check) if fast.active(metric) else {}))

    reduce_plan = ref_plan
    check: dict[str, Any] = {}
    if fast.active(x):
        try:
            reduce_plan = ops.bipartite_merge_plan(metric, dst, src, r)  # fast plan, with its merge segments
        except Exception as exc:  # noqa: BLE001
            check = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}

        def reduce_check() -> dict[str, Any]:
            with fast.using("off"):
                same_plan_ref = reduce_plan.reduce(x)
            return {"max_abs_diff": max_abs(reduce_plan.reduce(x), same_plan_ref)}

        check = check or safely(reduce_check)
    # Both paths time the same plan object; the fast one uses the merge segments made with it.
    out.append(("merge_reduce", lambda: reduce_plan.reduce(x), check))
    check = {}
    if fast.active(x):
        check = safely(lambda: {"max_abs_diff": max_abs(reduce_plan.expand(ref_reduced), ref_expanded)})
    out.append(("merge_expand", lambda: reduce_plan.expand(ref_reduced), check))

    for label, alpha in (("kv_todo", 1.0), ("kv_blend", torch.full((b,), 1.25, device=device))):

        def kv(alpha: Any = alpha) -> Any:
            return ops.downsample_tokens(x, h, w, 2, alpha)

        def kv_check(kv: Callable[[], Any] = kv) -> dict[str, Any]:
            with fast.using("off"):
                ref = kv()
            return {"max_abs_diff": max_abs(kv(), ref)}

        out.append((label, kv, safely(kv_check) if fast.active(x) else {}))

    if n <= 16384:  # the reference SiTo plan holds a (B, N, N) float32 matrix

        def sito() -> Any:
            return ops.similarity_prune_plan(metric, h, w, r)

        def sito_check() -> dict[str, Any]:
            with fast.using("off"):
                ref = sito()
            got = sito()
            kept = got.keep_idx.sort(dim=1).values == ref.keep_idx.sort(dim=1).values
            return {"keep_set_agreement": float(kept.float().mean())}

        out.append(("sito_plan", sito, safely(sito_check) if fast.active(metric) else {}))
    return out


def bf16_checks(device: torch.device) -> dict[str, Any]:
    """The fast paths in bfloat16 against the reference (Triton's CPU interpreter cannot check this)."""
    h = w = 32
    gen = torch.Generator(device="cpu").manual_seed(0)
    metric = torch.randn(2, h * w, 320, generator=gen).to(device, torch.bfloat16)
    x = torch.randn(2, h * w, 320, generator=gen).to(device, torch.bfloat16)
    dst, src = partition_for(2, h, w, device, seed=1)

    def run() -> dict[str, Any]:
        plan = ops.bipartite_merge_plan(metric, dst, src, (h * w) // 2)
        reduced = plan.reduce(x)
        with fast.using("off"):
            ref_plan = ops.bipartite_merge_plan(metric, dst, src, (h * w) // 2)
            ref_reduced = plan.reduce(x)
            ref_kv = ops.downsample_tokens(x, h, w, 2, torch.full((2,), 1.25, device=device))
            ref_expanded = plan.expand(ref_reduced)
        return {
            "inverse_agreement": float((plan.inverse == ref_plan.inverse).float().mean()),
            "reduce_max_abs_diff": max_abs(reduced, ref_reduced),
            "expand_max_abs_diff": max_abs(plan.expand(ref_reduced), ref_expanded),
            "kv_blend_max_abs_diff": max_abs(
                ops.downsample_tokens(x, h, w, 2, torch.full((2,), 1.25, device=device)), ref_kv
            ),
        }

    return safely(run)


def compile_checks(device: torch.device) -> dict[str, Any]:
    """torch.compile(fullgraph=True) of the keyed hash and of a keyed ToMe plan + merge, against eager."""
    result: dict[str, Any] = {}
    keys = torch.tensor([3, 2**40 + 7], device=device)

    def bits(k: torch.Tensor) -> torch.Tensor:
        return keyed.keyed_bits(k, 0x1234, 70000)  # long enough for idx * stride to pass 2**32

    try:
        t0 = time.perf_counter()
        got = torch.compile(bits, fullgraph=True)(keys)
        result["keyed_bits"] = {
            "equal": bool(torch.equal(got, bits(keys))),
            "compile_s": time.perf_counter() - t0,
        }
    except Exception as exc:  # noqa: BLE001 - a report, not a failure
        result["keyed_bits"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}

    h = w = 32
    x = torch.randn(
        2, h * w, 64, device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32
    )

    def tome(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        choice = ops.keyed_choice(t, 7, h, w, 2, 2)
        dst, src = ops.partition(choice, h, w, 2, 2)
        plan = ops.bipartite_merge_plan(x, dst, src, (h * w) // 2)
        return plan.expand(plan.reduce(x) * 2)

    t = torch.tensor([500, 501], device=device)
    try:
        t0 = time.perf_counter()
        got = torch.compile(tome, fullgraph=True)(t, x)
        with fast.using("off"):
            ref = tome(t, x)
        result["tome_plan"] = {"max_abs_diff": max_abs(got, ref), "compile_s": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001
        result["tome_plan"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return result


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "fast_available": fast.available(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    env = data["environment"]
    lines = [
        "# Hot operators: Triton fast path vs PyTorch reference",
        "",
        f"Device: {env.get('gpu', env.get('cpu'))}; torch {env['torch']}; triton {env['triton']}; "
        f"dtype {data['dtype']}; ratio {RATIO}; {data['rounds']} interleaved rounds, "
        f"{'CUDA-event' if 'gpu' in env else 'wall-clock'} times per call (median, p10-p90 in ms). "
        "Written by benchmarks/gpu_ops.py.",
        "",
        "| size | batch | operator | reference ms | fast ms | speedup | check |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in data["results"]:
        ref, fst = row["times"].get("reference"), row["times"].get("fast")

        def cell(t: dict[str, float] | None) -> str:
            return "–" if t is None else f"{t['median']:.3f} ({t['p10']:.3f}–{t['p90']:.3f})"

        speed = f"{ref['median'] / fst['median']:.2f}×" if ref and fst else "–"
        check = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["check"].items()
        )
        check = check or "–"
        lines.append(
            f"| {row['size']} | {row['batch']} | {row['operator']} | {cell(ref)} | {cell(fst)} | {speed} | {check} |"
        )
    if "bf16" in data:
        lines += ["", "## bfloat16 fast paths against the reference (SD2 512 px level, batch 2)", ""]
        lines += [f"- {k}: {v}" for k, v in data["bf16"].items()]
    lines += ["", "## torch.compile(fullgraph=True) against eager", ""]
    for name, res in data.get("compile", {}).items():
        lines.append(f"- {name}: " + ", ".join(f"{k}={v}" for k, v in res.items()))
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU, reference path only")
    parser.add_argument("--out", type=Path, default=None, help="output prefix (.json and .md are added)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--sizes", nargs="*", default=None, help="subset of size names")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile checks")
    parser.add_argument(
        "--interpret",
        action="store_true",
        help="with --smoke: also run the fast paths through Triton's CPU interpreter (exercises this "
        "script's fast-path branches; the times mean nothing)",
    )
    args = parser.parse_args(argv)

    if args.smoke:
        device, dtype, sizes, rounds, budget = torch.device("cpu"), torch.float32, SMOKE_SIZES, 3, 1.0
        fast_mode = "interpret" if args.interpret else "off"
        out = args.out or Path(tempfile.gettempdir()) / "gpu-ops-smoke"
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run with --smoke for a CPU dry run")
        device, dtype, sizes, rounds, budget = torch.device("cuda"), torch.float16, FULL_SIZES, 15, 2.0
        fast_mode = "auto"
        out = args.out or DEFAULT_OUT
    rounds = args.rounds or rounds
    fast.set_mode(fast_mode)
    if args.sizes:
        sizes = [s for s in sizes if s[0] in args.sizes]

    data: dict[str, Any] = {
        "environment": environment(device),
        "dtype": str(dtype).replace("torch.", ""),
        "rounds": rounds,
        "ratio": RATIO,
        "results": [],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name, h, w, c, batches in sizes:
        for b in batches:
            for op, call, check in cases_for(name, h, w, c, b, device, dtype):
                variants = {"reference": with_mode("off", call)}
                if fast_mode != "off" and fast.available():
                    variants["fast"] = with_mode(fast_mode, call)
                    try:
                        variants["fast"]()
                    except Exception as exc:  # noqa: BLE001 - record it, time the reference alone
                        del variants["fast"]
                        check = {**check, "fast_error": f"{type(exc).__name__}: {str(exc)[:400]}"}
                raw = interleaved(variants, device, rounds, budget)
                row = {
                    "size": name,
                    "grid": [h, w],
                    "channels": c,
                    "batch": b,
                    "operator": op,
                    "times": {k: summary(v) for k, v in raw.items()},
                    "raw_ms": raw,
                    "check": check,
                }
                data["results"].append(row)
                ref = row["times"]["reference"]["median"]
                fst = row["times"].get("fast", {}).get("median")
                print(
                    f"{name:9s} b{b:<3d} {op:13s} ref {ref:8.3f} ms"
                    + (f"  fast {fst:8.3f} ms  {ref / fst:5.2f}x" if fst else "")
                    + (f"  {check}" if check else ""),
                    flush=True,
                )
            if device.type == "cuda":
                torch.cuda.empty_cache()
            save(out, data, started)  # an interrupted run keeps what it measured
    if device.type == "cuda" and fast.available():
        data["bf16"] = bf16_checks(device)
        print("bf16:", data["bf16"], flush=True)
    if not args.no_compile:
        data["compile"] = compile_checks(device)
        print("compile:", data["compile"], flush=True)
    save(out, data, started)
    print(f"wrote {out.with_suffix('.json')} and .md ({data['wall_s']:.0f} s)")
    return data


def save(out: Path, data: dict[str, Any], started: float) -> None:
    data["wall_s"] = time.perf_counter() - started
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    write_markdown(out.with_suffix(".md"), data)


if __name__ == "__main__":
    main()
