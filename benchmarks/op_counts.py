"""Operators added per compressed block call and host<->device transfers per forward, per method.

Counted on the meta device at published sizes (SD 2.0 U-Net at 512 px, DiT-XL/2 at 256 px, batch 2,
random weights): no GPU is needed, and the counts are those of the reference (PyTorch) path, which
is what a GPU runs eagerly without the Triton kernels (on CUDA with Triton, the KV downsampling is
one kernel for every alpha, and the matching and merge take fused kernels). `tomesd` is counted on
the same U-Net. A "before" column comes from a file recorded with this script's counter on an
earlier commit (`--before FILE`).

    python benchmarks/op_counts.py [--before benchmarks/results/op-counts-before-0b5071e.json]

Writes benchmarks/results/op-counts.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from bigain.bench.opcount import count_model

RESULTS = Path(__file__).resolve().parent / "results"
# KV methods with stop_t=None: on the meta device a timestep has no value, and the earlier code read
# it to decide the t = 0 switch-off; both commits are counted with the operator on.
METHODS = [
    ("tomesd", {"ratio": 0.5}),
    ("tome", {"ratio": 0.5}),
    ("bigain-tm", {"ratio": 0.5}),
    ("todo", {"stop_t": None}),
    ("bigain-td", {"stop_t": None}),
    ("bigain-td", {"alpha_schedule": (0.8, 1.2), "stop_t": None}),
    ("sito", {"ratio": 0.5}),
]
CASES = [("sd2", 512), ("dit-xl2", 256)]


def _key(row: dict) -> tuple:
    return row["model"], row["method"], json.dumps(row["options"], sort_keys=True)


def _per_call(row: dict) -> float:
    """tomesd patches every block but merges only at the highest resolution: per merging call."""
    if row["method"] == "tomesd":
        return row["ops_per_block"] * row["blocks"] / 5
    return row["ops_per_block"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, default=RESULTS / "op-counts-before-0b5071e.json")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    rows = []
    for name, px in CASES:
        methods = METHODS if name == "sd2" else METHODS[1:]
        for r in count_model(name, methods, pixels=px, batch=2):
            rows.append(r.as_dict())
    before = {}
    if a.before.exists():
        before = {_key(r): r for r in json.loads(a.before.read_text())}
    meta = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "device": "meta (counts, not timings)",
        "before": a.before.name if before else None,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "op-counts.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Operators per compressed block call",
        "",
        "Non-view operators a method adds per compressed block call (each at least one kernel launch",
        "on a GPU), and host<->device transfers per forward (each a stall of the host on a GPU), counted",
        f"on the meta device with `bigain.bench.dispatch` (torch {torch.__version__}); the reference",
        "(PyTorch) path. Steady state: after one warm-up forward. Batch 2; SD 2.0 U-Net at 512 px",
        "(5 blocks compressed), DiT-XL/2 at 256 px (10 blocks). tomesd: per merging call (it patches all",
        "16 blocks, merges in the 5 at the highest resolution).",
        "",
        "| model | method | options | ops / block call | H2D / fwd | D2H / fwd |"
        + (" ops before | H2D before | D2H before |" if before else ""),
        "|---|---|---|---|---|---|" + ("---|---|---|" if before else ""),
    ]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        line = f"| {r['model']} | {r['method']} | {opts} | {_per_call(r):.1f} | {r['h2d']} | {r['d2h']} |"
        if before:
            b = before.get(_key(r))
            line += (
                f" {_per_call(b):.1f} | {b['h2d']} | {b['d2h']} |" if b else " – | – | – |"
            )
        lines.append(line)
    lines += [
        "",
        "Reading it: `tome` and `bigain-tm` add fewer operators per block than tomesd on the same U-Net;",
        "their host copies are gone (random choices hashed on the device, the Laplacian stencil cached).",
        "`bigain-td` adds four operators over `todo` on this path: the reference blend rounds",
        "alpha * nearest and (1 - alpha) * average separately, as the authors' arithmetic does (two",
        "products and a sum, besides the pooling); on CUDA both are one fused kernel. Its alpha schedule",
        "is computed once per forward instead of in every block. The earlier code read the timesteps",
        "back to the host once per forward for the t = 0 switch-off of the KV methods (not visible",
        "here, where both run with stop_t=None); it now takes host timesteps only.",
    ]
    (a.out / "op-counts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
