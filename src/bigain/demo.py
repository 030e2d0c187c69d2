"""`bigain demo`: the main job on the embedded default model, offline, in a few minutes on a laptop CPU.

Three phases, each with its own progress bar, all stored in the run folder (default ``runs/demo``):

1. classify a fixed, class-balanced sample of Fashion-MNIST test images with none / tome /
   bigain-tm (70 %) / todo / bigain-td (``classify/<setting>-n<images>/``);
2. generate one sample per class with each setting (``generate/<setting>-n<count>-s<steps>/``,
   with a grid labelled by class and setting);
3. time the denoiser under each setting, interleaved (round-robin) in one process, so that the
   speedups are measured side by side (``speed.json``).

It writes ``demo.md`` / ``demo.json`` (accuracy in percent with n and a 95 % Wilson interval,
speedup vs none) and ``speed_accuracy.png``. A rerun resumes: finished classifications and samples
are reused, and the speed table is reused as a whole (``remeasure_speed=True`` measures every setting
again, together); numbers from different speed measurements are never mixed in one table.
"""

from __future__ import annotations

import json
import platform
import statistics
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
SPEED_FILE = "speed.json"

# what each method does, for the report's definitions of the setting labels
WHAT = {
    "none": "no compression (the reference every speedup is measured against)",
    "tome": "ToMe: merges the most similar tokens before self-attention and copies the result back "
    "(ratio = share of tokens merged)",
    "bigain-tm": "BiGain-TM: ToMe whose merge destination in each window is its smoothest token "
    "(lowest response of a Laplacian filter over the token grid), so high-frequency detail stays unmerged",
    "todo": "ToDo: every token still asks (queries), but keys and values are pooled "
    "(downsample_factor s = s x s tokens pooled into one)",
    "bigain-td": "BiGain-TD: ToDo whose keys and values blend the sampled token with the block average "
    "(alpha * sample + (1 - alpha) * average; alpha > 1 extrapolates, adding back detail)",
    "sito": "SiTo: prunes the most similar tokens instead of merging them",
}
# the work a method adds before it saves any, for the one-line reason a setting is slower
OVERHEAD = {
    "tome": "scoring token similarity and merging",
    "bigain-tm": "the Laplacian filter, similarity scores and merging",
    "todo": "pooling the keys and values",
    "bigain-td": "pooling and blending the keys and values",
    "sito": "scoring and pruning tokens",
}


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


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, flush=True)


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
    speed_repeats: int = 3,
    remeasure_speed: bool = False,
) -> dict[str, Any]:
    """Classify + generate + time every demo setting; returns what ``demo.json`` holds.

    ``images`` is the number of test images classified per setting (balanced over the 10 classes).
    With the defaults this takes about 3 minutes on 2 quiet CPU cores (fp32: bf16 autocast is much
    slower on CPUs without native bf16).
    """
    from bigain.classify.datasets import FashionMNISTDataset
    from bigain.classify.runner import run_classification
    from bigain.generate import SamplerConfig, balanced_labels, generate_run, generation_options
    from bigain.models import load

    if images < 1 or gen_per_method < 1 or gen_steps < 1:
        raise ValueError("images, gen_per_method and gen_steps must be >= 1")
    torch.manual_seed(0)
    out_dir = Path(out)
    from bigain import runs

    runs.check_out_dir(out_dir)
    bundle = load(model)
    data = FashionMNISTDataset(split="test")
    subset = _fixed_sample([s.label for s in data.samples], images)
    n_set = len(DEMO_METHODS)
    rows: list[dict[str, Any]] = []

    _say(progress, f"[1/3] classify {len(subset)} test images under each of {n_set} settings")
    for k, (label, method, opts) in enumerate(DEMO_METHODS, 1):
        _say(progress, f"  ({k}/{n_set}) {label}")
        summary = run_classification(
            bundle,
            data,
            out_dir / "classify" / f"{label}-n{len(subset)}",
            method=method,
            method_options=opts,
            batch_size=batch_size,
            dtype=dtype,
            progress=progress,
            model_name=model,
            data_name="builtin:fashion-mnist",
            subset=subset,
        )
        ci = summary.get("top1_ci95")
        rows.append(
            {
                "setting": label,
                "method": method,
                "options": opts,
                "accuracy_pct": summary["top1"],
                "accuracy_ci95_pct": ci,
                "n": summary["num_scored"],
                "failed": summary["num_failed"],
            }
        )

    _say(progress, f"[2/3] generate {gen_per_method} samples ({gen_steps} DDIM steps) under each setting")
    for k, (row, (label, method, opts)) in enumerate(zip(rows, DEMO_METHODS), 1):
        _say(progress, f"  ({k}/{n_set}) {label}")
        gen_dir = out_dir / "generate" / f"{label}-n{gen_per_method}-s{gen_steps}"
        labels = balanced_labels(bundle.num_classes, gen_per_method)
        samples = generate_run(
            bundle,
            gen_dir,
            labels,
            method,
            opts,
            SamplerConfig(steps=gen_steps, batch_size=gen_per_method, dtype=dtype),
            progress=progress,
        )
        grid = gen_dir / "labelled_grid.png"
        used = generation_options(method, opts)  # what sampling ran with (BiGain-TD: the alpha schedule)
        what = (
            ", ".join([method] + [f"{k}={v}" for k, v in used.items()])
            if method != "none"
            else "no compression"
        )
        _labelled_grid(samples, [bundle.class_names[y] for y in labels], f"{label}: {what}", grid)
        row["grid"] = str(grid.relative_to(out_dir))

    speed = _speed(out_dir, bundle, model, speed_batch, dtype, speed_repeats, remeasure_speed, progress)
    for row in rows:
        row.update(speed["settings"][row["setting"]])
    result = {
        "model": model,
        "data": "builtin:fashion-mnist (test split)",
        "images": len(subset),
        "samples_per_setting": gen_per_method,
        "speed": {k: v for k, v in speed.items() if k != "settings"},
        "rows": rows,
    }
    runs.write_json(out_dir / "demo.json", result, nonfinite="null")
    text = _markdown(result)
    runs.atomic_write(out_dir / "demo.md", text)
    _plot(rows, model, len(subset), out_dir / "speed_accuracy.png")
    _say(progress, "\n" + text)
    return result


# --------------------------------------------------------------------------------------------
# speed: all settings measured together, stored, reused together
# --------------------------------------------------------------------------------------------
def _speed(
    out_dir: Path,
    bundle: Any,
    model: str,
    batch: int,
    dtype: str,
    repeats: int,
    remeasure: bool,
    progress: bool,
) -> dict[str, Any]:
    from bigain import runs

    key = {
        "model": model,
        "settings": [[label, method, opts] for label, method, opts in DEMO_METHODS],
        "batch": batch,
        "dtype": dtype,
        "repeats": repeats,
        "machine": platform.node(),
        "torch_threads": torch.get_num_threads(),
    }
    path = out_dir / SPEED_FILE
    if path.is_file() and not remeasure:
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
        if stored.get("key") == runs.strict_json(key):
            _say(
                progress,
                f"[3/3] speed: reusing {path} (measured {stored['measured_at']}; --remeasure-speed to redo)",
            )
            return stored
    _say(
        progress, f"[3/3] time the denoiser under each setting (batch {batch}, {repeats} interleaved rounds)"
    )
    settings = _time_settings(bundle, batch, dtype, repeats, progress)
    result = {"key": key, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": settings}
    runs.write_json(path, result)
    return result


@torch.inference_mode()
def _time_settings(
    bundle: Any, batch: int, dtype: str, repeats: int, progress: bool
) -> dict[str, dict[str, float]]:
    """Median denoiser forward time per setting; every round runs each setting once (round-robin)."""
    from tqdm.auto import tqdm

    import bigain
    from bigain.bench.timing import sync_fn
    from bigain.precision import autocast

    device = next(bundle.denoiser.parameters()).device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *bundle.sample_shape, generator=g).to(device)
    t = torch.randint(25, 975, (batch,), generator=g).to(device)
    y = torch.randint(0, bundle.num_classes, (batch,), generator=g).to(device)
    sync = sync_fn(device)
    times: dict[str, list[float]] = {label: [] for label, _, _ in DEMO_METHODS}
    bar = tqdm(
        total=(repeats + 1) * len(DEMO_METHODS),
        desc="speed (round 0 = warm-up)",
        unit="fwd",
        disable=not progress,
    )
    with autocast(device, dtype):
        for r in range(repeats + 1):
            bar.set_description(f"speed (round {r}{' = warm-up' if r == 0 else f'/{repeats}'})")
            for label, method, opts in DEMO_METHODS:
                with bigain.compressed(bundle, method, **opts):
                    sync()
                    t0 = time.perf_counter()
                    bundle.predict_eps(x, t, y)
                    sync()
                    if r > 0:
                        times[label].append(time.perf_counter() - t0)
                bar.update(1)
    bar.close()
    base = statistics.median(times["none"])
    return {
        label: {
            "forward_s": round(statistics.median(v), 5),
            "rows_per_s": round(batch / statistics.median(v), 1),
            "speedup": round(base / statistics.median(v), 3),
        }
        for label, v in times.items()
    }


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------
def _acc_text(row: dict[str, Any]) -> str:
    if row["accuracy_pct"] is None:
        return "n/a"
    ci = row["accuracy_ci95_pct"]
    return f"{row['accuracy_pct']:.0f} ({ci[0]:.0f}–{ci[1]:.0f})"


def _markdown(result: dict[str, Any]) -> str:
    n = result["images"]
    sp = result["speed"]
    lines = [
        f"# bigain demo: {result['model']} on {n} Fashion-MNIST test images",
        "",
        "| setting | accuracy % (95 % CI) | n | denoiser speedup vs none | denoiser rows/s | samples |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['setting']} | {_acc_text(r)} | {r['n']} | {r['speedup']:.2f}x | {r['rows_per_s']} "
            f"| [grid]({r['grid']}) |"
        )
    lines += [
        "",
        "![denoiser speedup against classifier accuracy, one point per setting](speed_accuracy.png)",
        "",
        "Columns: *setting* is the method and its strength (defined below); *accuracy* is the diffusion",
        "classifier's top-1 on the test images; *n* is how many images were scored; *denoiser speedup vs",
        "none* is the median time of one denoiser forward without compression divided by that setting's",
        "(above 1x: faster); *denoiser rows/s* is how many rows the denoiser processes per second, a row",
        "being one noisy image under one class label at one timestep (the classifier scores every image",
        "against each class over many timesteps, so rows are its unit of work); *samples* links the",
        "setting's generated images, one labelled grid.",
        "",
        "Settings:",
    ]
    for r in result["rows"]:
        opts = ", ".join(f"{k}={v}" for k, v in (r.get("options") or {}).items())
        lines.append(
            f"- `{r['setting']}`: {WHAT.get(r.get('method'), r.get('method'))}"
            + (f"; {opts}" if opts else "")
        )
    slower = [r for r in result["rows"] if r.get("method") != "none" and r["speedup"] < 1.0]
    if slower:
        lines.append("")
    for r in slower:
        lines.append(
            f"Why `{r['setting']}` is {r['speedup']:.2f}x here: on this small model ({sp['key']['machine']}), "
            f"{OVERHEAD.get(r.get('method'), 'the compression step')} costs about as much time as the "
            "attention it removes; the saving grows with the number of tokens (larger images, bigger models)."
        )
    lines += [
        "",
        f"Accuracy: top-1 of the diffusion classifier on {n} test images ({max(1, n // 10)} per class), in",
        "percent, with a 95 % Wilson interval. With so few images the intervals are wide: these numbers show",
        "that every method runs and keeps the classifier working, not which method is better (for that, the",
        "paired comparisons on 2,000 images in benchmarks/results/paper-claims.md). Larger: `--images 100`.",
        "",
        f"Speed: median denoiser forward (batch {sp['key']['batch']}, {sp['key']['dtype']}) of each setting,",
        f"measured together in one process, round-robin over {sp['key']['repeats']} rounds, on",
        f"{sp['key']['machine']} at {sp['measured_at']} ({SPEED_FILE}). The speedup counts the whole denoiser.",
    ]
    return "\n".join(lines) + "\n"


def _labelled_grid(samples: torch.Tensor, names: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = samples.shape[0]
    cols = min(n, 10)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.45 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = samples[i].float().clamp(-1, 1).add(1).div(2)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(names[i], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot(rows: list[dict[str, Any]], model: str, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = ["o", "s", "^", "D", "v", "P", "X"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, r in enumerate(rows):
        if r["accuracy_pct"] is None:
            continue
        lo, hi = r["accuracy_ci95_pct"]
        ax.errorbar(
            r["speedup"],
            r["accuracy_pct"],
            yerr=[[r["accuracy_pct"] - lo], [hi - r["accuracy_pct"]]],
            fmt=markers[i % len(markers)],
            markersize=8,
            capsize=4,
            label=f"{r['setting']}: {r['accuracy_pct']:.0f} %, {r['speedup']:.2f}x",
        )
    ax.set_xlabel("denoiser speedup vs none (x)")
    ax.set_ylabel("classifier top-1 accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{model}: accuracy (95 % CI, n={n}) vs speed", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
