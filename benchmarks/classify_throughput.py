"""Diffusion-classifier throughput: batched engine vs the plain per-class reference loop.

Same model, same images, same protocol (n_samples 5 20, to_keep 5 1, l2); the two must
give the same predictions. Uses the embedded ``builtin:fashion-dit`` when its weights are installed,
otherwise a tiny random-weight DiT of the same shape (1×32×32, patch 2, 10 classes).

    python benchmarks/classify_throughput.py [--images 8] [--batch-size 64] [--method none|tome ...]

Writes benchmarks/results/classify_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bigain.classify import DiffusionClassifier, reference_classify  # noqa: E402
from bigain.classify.engine import image_key_from_id  # noqa: E402


def machine(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "load_average_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def load_model(name: str | None, device: str):
    from bigain import models

    if name is None:
        name = "builtin:fashion-dit" if "builtin:fashion-dit" in models.available() else "tiny-dit"
    if name == "fashion-dit-arch":
        from diffusers import DiTTransformer2DModel

        from bigain.models.fashion import dit_config
        from bigain.models.registry import alphas_cumprod_from_config

        torch.manual_seed(0)
        den = DiTTransformer2DModel(**dit_config()).to(device).eval()
        from bigain.models.bundle import DiffusionBundle

        bundle = DiffusionBundle(
            name=name,
            denoiser=den,
            kind="dit",
            alphas_cumprod=alphas_cumprod_from_config(None),
            num_classes=10,
            class_names=[str(i) for i in range(10)],
            sample_shape=(1, 32, 32),
            conditioning=lambda labels: {"class_labels": labels},
            null_class=10,
        )
        return name + " (the embedded fashion-dit architecture, random weights)", bundle
    if name == "tiny-dit":
        from bigain.classify.testing import tiny_dit_bundle

        bundle = tiny_dit_bundle(num_classes=10, size=32, seed=0, layers=4)
        bundle.denoiser.to(device)
        return name + " (random weights, 4 layers, hidden 32, 1x32x32, patch 2)", bundle
    return name, models.load(name, device=device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default=None, help="builtin:fashion-dit (default if installed), tiny-dit, a folder"
    )
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images-per-group", type=int, default=8)
    p.add_argument("--method", default="none")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default="", help="suffix of the output file names")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from bigain.classify.datasets import load_dataset

    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    model_name, bundle = load_model(args.model, args.device)
    data = load_dataset("builtin:fashion-mnist")
    samples = [data[i] for i in range(args.images)]
    x0 = torch.stack([data.load_image(s) for s in samples])
    keys = [image_key_from_id(s.id) for s in samples]
    labels = [s.label for s in samples]
    kw = {"n_samples": (5, 20), "to_keep": (5, 1), "loss": "l2", "dtype": args.dtype}

    import contextlib

    import bigain

    ctx = (
        contextlib.nullcontext()
        if args.method == "none"
        else bigain.compressed(bundle, args.method, ratio=args.ratio)
    )
    with ctx:
        clf = DiffusionClassifier(bundle, batch_size=args.batch_size, **kw)
        # warm-up (kernels, allocator), not timed
        clf.classify(x0[0], keys[0])
        reference_classify(bundle, x0[0], keys[0], **kw)

        sync(args.device)
        t = time.perf_counter()
        ref = [reference_classify(bundle, x0[i], keys[i], **kw) for i in range(args.images)]
        sync(args.device)
        t_ref = time.perf_counter() - t

        t = time.perf_counter()
        single = [clf.classify(x0[i], keys[i]) for i in range(args.images)]
        sync(args.device)
        t_single = time.perf_counter() - t

        t = time.perf_counter()
        packed = []
        for lo in range(0, args.images, args.images_per_group):
            packed += clf.classify_batch(
                x0[lo : lo + args.images_per_group], keys[lo : lo + args.images_per_group]
            )
        sync(args.device)
        t_packed = time.perf_counter() - t

    same = [r.prediction for r in ref] == [r.prediction for r in single] == [r.prediction for r in packed]
    max_diff = max(
        abs(a - b)
        for r, s in zip(ref, packed)
        for a, b in zip(r.mean_errors, s.mean_errors)
        if a != float("inf")
    )
    rows = ref[0].calls
    n = args.images
    result = {
        "benchmark": "classify_throughput",
        "model": model_name,
        "data": f"builtin:fashion-mnist (first {n} test images)",
        "method": args.method if args.method == "none" else f"{args.method} ratio={args.ratio}",
        "protocol": f"n_samples 5 20, to_keep 5 1, l2, {args.dtype}, {rows} denoiser rows per image",
        "batch_size": args.batch_size,
        "images_per_group": args.images_per_group,
        "machine": machine(args.device),
        "load_average_1min_at_start": load_at_start,
        "images": n,
        "reference_loop": {"seconds": t_ref, "images_per_second": n / t_ref},
        "engine_one_image_at_a_time": {"seconds": t_single, "images_per_second": n / t_single},
        "engine_packed_images": {"seconds": t_packed, "images_per_second": n / t_packed},
        "speedup_one_image": t_ref / t_single,
        "speedup_packed": t_ref / t_packed,
        "same_predictions": same,
        "max_abs_mean_error_difference": max_diff,
        "accuracy_reference": 100.0 * sum(r.prediction == y for r, y in zip(ref, labels)) / n,
        "accuracy_engine": 100.0 * sum(r.prediction == y for r, y in zip(packed, labels)) / n,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "classify_throughput" + (f"_{args.tag}" if args.tag else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    where = m.get("gpu", f"{m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads")
    md = [
        "# Diffusion-classifier throughput",
        "",
        f"- model: {model_name}",
        f"- data: {result['data']}",
        f"- method: {result['method']}",
        f"- protocol: {result['protocol']}",
        f"- machine: {where} (device {args.device}, torch {m['torch']}; 1-min load average "
        f"{load_at_start if load_at_start is None else round(load_at_start, 2)} at start, "
        f"{m['load_average_1min_at_end'] if m['load_average_1min_at_end'] is None else round(m['load_average_1min_at_end'], 2)} at end)",
        f"- batch size {args.batch_size}, {args.images_per_group} images packed per group",
        "",
        "| path | seconds | images/s | speed-up |",
        "| --- | --- | --- | --- |",
        f"| plain reference loop (one class, one (t, ε) per forward) | {t_ref:.2f} | {n / t_ref:.3f} | 1.00× |",
        f"| engine, one image at a time | {t_single:.2f} | {n / t_single:.3f} | {t_ref / t_single:.2f}× |",
        f"| engine, {args.images_per_group} images packed | {t_packed:.2f} | {n / t_packed:.3f} | "
        f"{t_ref / t_packed:.2f}× |",
        "",
        f"Same predictions: {same}; largest difference of a class's mean error: {max_diff:.2e}.",
        "",
    ]
    (out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
