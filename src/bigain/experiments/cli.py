"""`bigain sweep`: methods x settings on one model and data set -> accuracy, FID, speed, FLOPs, tests."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .grid import GRIDS, select
from .jobs import run_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bigain sweep", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:fashion-dit", help="builtin name, diffusers folder or hub id")
    p.add_argument(
        "--data",
        default="builtin:fashion-mnist",
        help="builtin:fashion-mnist or a data folder (ImageNet-style)",
    )
    p.add_argument("--out", default="runs/sweep")
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
    p.add_argument("--images", type=int, default=2000, help="test images classified per setting")
    p.add_argument("--gen", type=int, default=2000, help="samples generated per setting and seed")
    p.add_argument("--seeds", default="0", help="comma-separated sample seeds of the generation jobs")
    p.add_argument("--ratios", default="0.5,0.7")
    p.add_argument("--factors", default="2,4")
    p.add_argument("--methods", default=None, help="comma-separated subset of setting labels/method names")
    p.add_argument("--batch-size", type=int, default=250, help="denoiser rows per classification forward")
    p.add_argument(
        "--images-per-group", type=int, default=None, help="images whose evaluations share batches"
    )
    p.add_argument("--gen-batch", type=int, default=500)
    p.add_argument(
        "--speed-batch", type=int, default=None, help="rows per timed forward (default: --batch-size)"
    )
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (the paper's generation protocol: 50)")
    p.add_argument(
        "--guidance", type=float, default=4.0, help="classifier-free guidance scale (the paper's generation protocol: 4.0)"
    )
    p.add_argument(
        "--fid-features",
        default="auto",
        help="auto, fashion-cnn, or inception=WEIGHTS_FILE (with --fid-reference)",
    )
    p.add_argument("--fid-reference", default=None, help="FeatureStats .npz of real images (inception FID)")
    p.add_argument(
        "--fid-boot", type=int, default=1000, help="bootstrap draws of the FID-difference interval"
    )
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--deadline-minutes", type=float, default=None, help="start no new job after this long")
    p.add_argument(
        "--phases",
        default="classify,generate,speed,report",
        help="any of classify, generate, speed, report (comma-separated)",
    )
    p.add_argument("--worker", default="0/1", help="I/N: run jobs I, I+N, ... (N processes share the work)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    phases = tuple(x.strip() for x in a.phases.split(",") if x.strip())
    bad = set(phases) - {"classify", "generate", "speed", "report"}
    if bad:
        p.error(f"--phases: unknown phase(s) {sorted(bad)}; choose from classify, generate, speed, report")
    try:
        i, n = (int(x) for x in a.worker.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        p.error(f"--worker must be I/N with 0 <= I < N, got {a.worker!r}")
    try:
        seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
        ratios = tuple(float(r) for r in a.ratios.split(","))
        factors = tuple(int(f) for f in a.factors.split(","))
    except ValueError as e:
        p.error(f"--seeds/--ratios/--factors: {e}")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        p.error(f"--seeds {a.seeds!r}: expected distinct non-negative integers")
    if a.placement != "default" and a.grid != "paper":
        p.error("--placement needs --grid paper")
    grid = GRIDS[a.grid](ratios, factors, **({"placement": a.placement} if a.grid == "paper" else {}))
    settings = select(grid, a.methods)
    if not settings:
        p.error(f"--methods {a.methods!r} matches no setting")
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
        a.device,
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
