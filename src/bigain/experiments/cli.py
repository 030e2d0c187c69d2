"""`bigain sweep`: methods x settings on one model and data set -> accuracy, FID, speed, FLOPs, tests.

Every setting is checked before anything heavy is imported, loaded or written: counts, lists,
phases, the grid (empty or unknown selections are refused) and each setting's method options.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..cliutil import finite_float, nonnegative_int, positive_int
from .checks import PHASES, check_settings, check_work, parse_phases, select_strict
from .grid import GRIDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bigain sweep", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:fashion-dit", help="builtin name, diffusers folder or hub id")
    p.add_argument(
        "--data",
        default="builtin:fashion-mnist",
        help="builtin:fashion-mnist or a data folder (ImageNet-style)",
    )
    p.add_argument(
        "--out", default="runs/sweep", help="sweep folder (rerunning with the same folder resumes)"
    )
    p.add_argument(
        "--grid",
        default="default",
        choices=sorted(GRIDS),
        help="default: the first sweep's grid; paper: the pre-registered one (adds bigain-tm dst_rule=reference)",
    )
    p.add_argument(
        "--placement",
        default="default",
        choices=["default", "levels12", "blocks123"],
        help="--grid paper only: a declared secondary placement (U-Net levels 1+2; DiT blocks 1-3)",
    )
    p.add_argument(
        "--images",
        type=nonnegative_int,
        default=2000,
        help="test images classified per setting (>= 1 to classify)",
    )
    p.add_argument(
        "--gen",
        type=nonnegative_int,
        default=2000,
        help="samples generated per setting and seed (>= 1 to generate)",
    )
    p.add_argument(
        "--seeds", default="0", help="comma-separated sample seeds of the generation jobs, e.g. 0,1,2"
    )
    p.add_argument(
        "--ratios", default="0.5,0.7", help="comma-separated merge/prune ratios in [0, 1), e.g. 0.5,0.7"
    )
    p.add_argument(
        "--factors", default="2,4", help="comma-separated KV downsample factors (integers >= 1), e.g. 2,4"
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated setting labels or method names to run, e.g. none,tome,bigain-tm-r0.5 (default: all)",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=250, help="denoiser rows per classification forward"
    )
    p.add_argument(
        "--images-per-group", type=positive_int, default=None, help="images whose evaluations share batches"
    )
    p.add_argument("--gen-batch", type=positive_int, default=500, help="samples per generation batch")
    p.add_argument(
        "--speed-batch",
        type=positive_int,
        default=None,
        help="rows per timed forward (default: --batch-size)",
    )
    p.add_argument(
        "--steps", type=positive_int, default=50, help="DDIM steps (the paper's generation protocol: 50)"
    )
    p.add_argument(
        "--guidance",
        type=finite_float,
        default=4.0,
        help="classifier-free guidance scale >= 0 (the paper's generation protocol: 4.0)",
    )
    p.add_argument(
        "--fid-features",
        default="auto",
        help="auto, fashion-cnn, or inception=WEIGHTS_FILE (with --fid-reference)",
    )
    p.add_argument("--fid-reference", default=None, help="FeatureStats .npz of real images (inception FID)")
    p.add_argument(
        "--fid-boot", type=positive_int, default=1000, help="bootstrap draws of the FID-difference interval"
    )
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--deadline-minutes", type=finite_float, default=None, help="start no new job after this long (> 0)"
    )
    p.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"any of {', '.join(PHASES)} (comma-separated)",
    )
    p.add_argument("--worker", default="0/1", help="I/N: run jobs I, I+N, ... (N processes share the work)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _numbers(p: argparse.ArgumentParser, flag: str, text: str, cast: type, example: str) -> tuple:
    """A comma-separated list of numbers, non-empty, finite and without repeats."""
    try:
        vals = tuple(cast(x) for x in text.split(",") if x.strip())
    except ValueError:
        p.error(f"{flag} {text!r}: expected comma-separated {cast.__name__} values, e.g. {flag} {example}")
    if not vals or any(isinstance(v, float) and not math.isfinite(v) for v in vals):
        p.error(f"{flag} {text!r}: expected finite comma-separated values, e.g. {flag} {example}")
    if len(set(vals)) != len(vals):
        p.error(f"{flag} {text!r} repeats a value; name each once, e.g. {flag} {example}")
    return vals


_SOURCE = {"ratio": ("--ratios", "0.5,0.7"), "downsample_factor": ("--factors", "2,4")}


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    try:
        phases = parse_phases(a.phases)
    except ValueError as e:
        p.error(str(e))
    try:
        i, n = (int(x) for x in a.worker.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        p.error(f"--worker must be I/N with 0 <= I < N, got {a.worker!r}; e.g. --worker 0/2")
    seeds = _numbers(p, "--seeds", a.seeds, int, "0,1,2")
    ratios = _numbers(p, "--ratios", a.ratios, float, "0.5,0.7")
    factors = _numbers(p, "--factors", a.factors, int, "2,4")
    if a.placement != "default" and a.grid != "paper":
        p.error("--placement needs --grid paper")
    if a.deadline_minutes is not None and a.deadline_minutes <= 0:
        p.error(f"--deadline-minutes {a.deadline_minutes}: expected a number > 0 (minutes), e.g. 60")
    if a.guidance < 0:
        p.error(f"--guidance {a.guidance}: expected a number >= 0, e.g. --guidance 4.0")
    kind, _, weights = a.fid_features.partition("=")
    if kind not in ("auto", "fashion-cnn", "inception") or (kind == "inception") != bool(weights):
        p.error(f"--fid-features {a.fid_features!r}: expected auto, fashion-cnn or inception=WEIGHTS_FILE")
    for flag, path in (("--fid-features inception=", weights), ("--fid-reference", a.fid_reference)):
        if path and not Path(path).is_file():
            p.error(f"{flag} {path!r}: no such file")
    try:
        check_work(phases, a.images, a.gen, seeds)
    except ValueError as e:
        p.error(str(e))
    grid = GRIDS[a.grid](ratios, factors, **({"placement": a.placement} if a.grid == "paper" else {}))
    try:
        settings = select_strict(grid, a.methods)
    except ValueError as e:
        p.error(str(e))
    try:
        check_settings(settings)
    except ValueError as e:
        flag, example = next(
            ((f, ex) for key, (f, ex) in _SOURCE.items() if f"option {key}=" in str(e)),
            ("--methods", "none,tome"),
        )
        value = {"--ratios": a.ratios, "--factors": a.factors}.get(flag, a.methods)
        p.error(f"{flag} {value!r}: {e}; e.g. {flag} {example}")

    from .. import runs
    from ..cliutil import check_device
    from .jobs import run_sweep

    device = check_device(a.device)
    runs.check_out_dir(a.out)
    rep = run_sweep(
        a.model,
        a.out,
        a.images,
        a.gen,
        settings,
        a.batch_size,
        a.gen_batch,
        a.steps,
        a.guidance,
        a.dtype,
        device,
        a.deadline_minutes,
        phases,
        (i, n),
        a.images_per_group,
        not a.no_progress,
        a.speed_batch,
        data=a.data,
        seeds=seeds,
        fid_features=a.fid_features,
        fid_reference=a.fid_reference,
        fid_boot=a.fid_boot,
    )
    if "report" in phases:
        print((Path(a.out) / "report.md").read_text())
    print(f"sweep finished in {rep['seconds']:.0f} s")
    return 0
