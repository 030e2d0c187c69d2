"""`bigain demo`: the main job on the embedded default model, offline, in minutes on a laptop CPU.

Loads `builtin:fashion-dit`, classifies a fixed sample of Fashion-MNIST test images with
none / tome / bigain-tm (70 %) / todo / bigain-td, generates a grid per method, and writes
a table (markdown + JSON), PNG grids and a speed-accuracy plot into the run folder.
Rerunning with the same folder resumes: finished classification records are reused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

DEMO_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("none", "none", {}),
    ("tome-0.7", "tome", {"ratio": 0.7}),
    ("bigain-tm-0.7", "bigain-tm", {"ratio": 0.7}),
    ("todo-s2", "todo", {"downsample_factor": 2}),
    ("bigain-td-s2", "bigain-td", {"downsample_factor": 2}),
]


def _fixed_sample(labels: list[int], count: int) -> list[int]:
    """The first `count // C` test images of every class: balanced and identical on every machine."""
    per = max(1, count // 10)
    picked: list[int] = []
    seen: dict[int, int] = {}
    for i, y in enumerate(labels):
        y = int(y)
        if seen.get(y, 0) < per:
            picked.append(i)
            seen[y] = seen.get(y, 0) + 1
    return picked[:count]


def run_demo(
    out: str = "runs/demo",
    model: str = "builtin:fashion-dit",
    images: int = 10,
    gen_per_method: int = 10,
    gen_steps: int = 20,
    batch_size: int = 125,
    dtype: str = "fp32",
    progress: bool = True,
    speed_batch: int = 32,
) -> dict[str, Any]:
    """Classify + generate with every demo method; returns the table rows (also written to `out`).

    The defaults fit in about 6 minutes on 2 CPU cores (fp32: bf16 autocast is ~5x slower on
    CPUs without native bf16); `images` is rounded down to a multiple of the 10 classes.
    """
    from bigain.classify.datasets import FashionMNISTDataset
    from bigain.classify.runner import run_classification
    from bigain.generate import SamplerConfig, balanced_labels, generate_run
    from bigain.models import load

    torch.manual_seed(0)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = load(model)
    data = FashionMNISTDataset(split="test")
    subset = _fixed_sample([s.label for s in data.samples], images)
    rows = []
    for label, method, opts in DEMO_METHODS:
        if progress:
            print(f"\n== {label}: classifying {len(subset)} test images")
        t0 = time.perf_counter()
        summary = run_classification(
            bundle,
            data,
            out_dir / "classify" / label,
            method=method,
            method_options=opts,
            batch_size=batch_size,
            dtype=dtype,
            progress=progress,
            model_name=model,
            data_name="builtin:fashion-mnist",
            subset=subset,
        )
        cls_seconds = time.perf_counter() - t0
        if progress:
            print(f"== {label}: generating {gen_per_method} samples")
        gen_dir = out_dir / "generate" / label
        generate_run(
            bundle,
            gen_dir,
            balanced_labels(bundle.num_classes, gen_per_method),
            method,
            opts,
            SamplerConfig(steps=gen_steps, batch_size=gen_per_method, dtype=dtype),
            progress=progress,
        )
        rows.append(
            {
                "setting": label,
                "method": method,
                "options": opts,
                "accuracy": summary["top1"] / 100 if summary else None,  # top1 is in percent
                "images_per_s": summary.get("images_per_s") if summary else None,
                "grid": str((gen_dir / "grid.png").relative_to(out_dir)),
                "classify_seconds_this_call": round(cls_seconds, 2),
            }
        )
    speed = _speed_table(bundle, speed_batch, dtype)
    for r in rows:
        r.update(speed[r["setting"]])
    _write_outputs(out_dir, rows, model, len(subset))
    return {"rows": rows}


def _speed_table(bundle: Any, batch_size: int, dtype: str) -> dict[str, dict[str, float]]:
    """Denoiser throughput per setting, measured interleaved (round-robin) in this process."""
    from bigain.sweep import Setting, interleaved_speed

    settings = [Setting(label, method, opts) for label, method, opts in DEMO_METHODS]
    speed = interleaved_speed(bundle, settings, batch_size, dtype)
    return {
        k: {
            "forward_s": round(v["forward_s"], 4),
            "rows_per_s": round(v["rows_per_s"], 1),
            "speedup": round(v["speedup"], 3),
        }
        for k, v in speed.items()
    }


def _write_outputs(out_dir: Path, rows: list[dict[str, Any]], model: str, n_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out_dir / "demo.json").write_text(
        json.dumps({"model": model, "images": n_images, "rows": rows}, indent=2)
    )
    lines = [
        f"# bigain demo: {model}, {n_images} Fashion-MNIST test images",
        "",
        "| setting | accuracy (%) | classified images/s | denoiser speedup vs none | denoiser rows/s | samples |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}"
        ips = "n/a" if r["images_per_s"] is None else f"{r['images_per_s']:.3f}"
        lines.append(
            f"| {r['setting']} | {acc} | {ips} | {r['speedup']:.3f}x | {r['rows_per_s']} | ![]({r['grid']}) |"
        )
    lines += ["", "Speedups are medians of interleaved forwards in one process on this machine."]
    (out_dir / "demo.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        if r["accuracy"] is not None:
            ax.scatter(r["speedup"], 100 * r["accuracy"])
            ax.annotate(r["setting"], (r["speedup"], 100 * r["accuracy"]), fontsize=8)
    ax.set_xlabel("denoiser speedup vs none (x)")
    ax.set_ylabel("diffusion-classifier accuracy (%)")
    ax.set_title(model)
    fig.tight_layout()
    fig.savefig(out_dir / "speed_accuracy.png", dpi=120)
    plt.close(fig)
    print("\n" + "\n".join(lines))
