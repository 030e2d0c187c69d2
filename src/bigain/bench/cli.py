"""`bigain bench`: FLOPs, latency and speedup ceiling of methods on a benchmark denoiser.

    bigain bench --model sd2 --pixels 512 --methods none tome:ratio=0.5 tomesd:ratio=0.5 todo:factor=2
    bigain bench --model dit-xl2 --flops-only --methods none tome:ratio=0.7,blocks=all

Each --methods entry is NAME or NAME:key=value,... (bigain options, or tomesd's for "tomesd").
Settings run interleaved (round-robin, --repeats rounds); medians; speedup vs the first setting
named "none" (added if missing). The full benchmark matrix is benchmarks/latency.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from ..cliutil import UsageError, check_device, positive_int
from ..textvalues import parse_option_value

# The choices, written here so that the command line parses before torch loads (a test checks them
# against bigain.bench.models.MODELS and bigain.precision.DTYPES).
MODEL_NAMES = ("sd2", "sdxl", "pixart-alpha", "dit-xl2", "sd3-medium", "flux-dev")
DTYPE_NAMES = ("fp32", "bf16", "fp16")


def parse_setting(text: str) -> tuple[str, str, dict[str, Any]]:
    """'tome:ratio=0.5,blocks=all' -> (label, 'tome', {'ratio': 0.5, 'blocks': 'all'})."""
    name, _, rest = text.partition(":")
    opts: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise UsageError(f"--methods: bad option {item!r} in {text!r}: expected key=value")
        opts[key.strip()] = parse_option_value(val)
    return text, name.strip(), opts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bigain bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sd2", choices=list(MODEL_NAMES))
    p.add_argument(
        "--pixels",
        type=positive_int,
        default=None,
        help="image side (default 512 for sd2, 256 for dit-xl2, 1024 otherwise)",
    )
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--dtype", default="fp32", choices=list(DTYPE_NAMES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", nargs="+", default=["none", "tome:ratio=0.5", "todo:downsample_factor=2"])
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--flops-only", action="store_true", help="count FLOPs only (meta device, no forward)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    import torch

    from ..precision import DTYPES
    from .flops import count_flops
    from .models import build_model, example_inputs
    from .patch import compressed_sublayers, patched
    from .timing import machine_info, sublayer_share, time_once

    args.device = check_device(args.device)
    if args.out and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a folder; expected a JSON file path")
    if args.threads:
        torch.set_num_threads(args.threads)
    pixels = args.pixels or {"sd2": 512, "dit-xl2": 256}.get(args.model, 1024)
    settings = [parse_setting(m) for m in args.methods]
    import bigain

    for _, name, opts in settings:  # a bad name or option fails before the model is built
        if name != "tomesd":
            bigain.make_config(name, **opts)
    if not any(name == "none" for _, name, _ in settings):
        settings.insert(0, ("none", "none", {}))

    meta = build_model(args.model, device="meta", pixels=pixels)
    meta_in = example_inputs(args.model, pixels, args.batch, device="meta")
    rows: dict[str, dict[str, Any]] = {}
    for label, name, opts in settings:
        method = None if name == "none" else name
        rows[label] = {
            "method": name,
            "options": opts,
            "flops": count_flops(meta, meta_in, method, **opts),
            "sublayers": compressed_sublayers(meta, method, **opts),
        }
    base_label = next(label for label, name, _ in settings if name == "none")
    if not args.flops_only:
        dtype = DTYPES[args.dtype]
        model = build_model(args.model, device=args.device, dtype=dtype, pixels=pixels)
        inputs = example_inputs(args.model, pixels, args.batch, dtype=dtype, device=args.device)
        time_once(model, inputs)  # warm-up
        for label, _, _ in settings:
            rows[label]["runs_s"] = []
        for rnd in range(args.repeats):
            for label, name, opts in settings[rnd % len(settings) :] + settings[: rnd % len(settings)]:
                with patched(model, None if name == "none" else name, **opts):
                    rows[label]["runs_s"].append(time_once(model, inputs)[0])
        t_base = statistics.median(rows[base_label]["runs_s"])
        for row in rows.values():
            row["median_s"] = statistics.median(row["runs_s"])
            row["speedup"] = t_base / row["median_s"]
            if row["sublayers"]:
                share = sublayer_share(model, inputs, row["sublayers"], repeats=1)
                row["share"], row["ceiling"] = share.share, share.ceiling
    f_base = rows[base_label]["flops"]
    print(f"{args.model} {pixels}px batch {args.batch} {args.dtype} on {args.device}")
    print(f"{'setting':40s} {'GFLOPs':>9s} {'-%':>6s} {'median s':>9s} {'speedup':>8s} {'ceiling':>8s}")
    for label, row in rows.items():
        med = f"{row['median_s']:9.3f}" if "median_s" in row else f"{'-':>9s}"
        spd = f"{row['speedup']:8.3f}" if "speedup" in row else f"{'-':>8s}"
        ceil = f"{row['ceiling']:8.3f}" if "ceiling" in row else f"{'-':>8s}"
        red = 100 * (1 - row["flops"] / f_base)
        print(f"{label:40s} {row['flops'] / 1e9:9.1f} {red:6.1f} {med} {spd} {ceil}")
    if args.out:
        out = {
            "model": args.model,
            "pixels": pixels,
            "batch": args.batch,
            "dtype": args.dtype,
            "device": args.device,
            "machine": machine_info(),
            "settings": rows,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
