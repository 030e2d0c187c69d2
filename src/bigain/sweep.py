"""`bigain sweep`: methods x settings on one model and data set -> accuracy, Fashion-FID, speed, FLOPs.

Every setting writes its own resumable classification and generation run folder under
`--out`; the report (`report.md`, `summary.json`, plots) is rebuilt from whatever is
finished, so an interrupted or time-budgeted sweep still leaves a consistent partial report.
Settings are fixed before any result is seen (the spec's defaults); nothing is tuned per method.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class Setting:
    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    pattern: str = "per-sample"  # classifier: per-row keyed random choices, or "per-call" (reference)


def default_settings(
    ratios: tuple[float, ...] = (0.5, 0.7), factors: tuple[int, ...] = (2, 4)
) -> list[Setting]:
    """The spec's grid, fixed before any result is seen, in priority order for a time-boxed run.

    The strongest compression (largest ratio, smallest factor) of each family comes first, with
    each BiGain operator right after its baseline; the reference's per-call random pattern last.
    """
    s = [Setting("none", "none")]
    rs = sorted(ratios, reverse=True)
    fs = sorted(factors)
    for i in range(max(len(rs), len(fs))):
        if i < len(rs):
            s += [Setting(f"{m}-r{rs[i]}", m, {"ratio": rs[i]}) for m in ("tome", "bigain-tm")]
        if i < len(fs):
            s += [Setting(f"{m}-s{fs[i]}", m, {"downsample_factor": fs[i]}) for m in ("todo", "bigain-td")]
        if i < len(rs):
            s.append(Setting(f"sito-r{rs[i]}", "sito", {"ratio": rs[i]}))
    r = max(ratios)
    s.append(Setting(f"tome-r{r}-percall", "tome", {"ratio": r}, pattern="per-call"))
    s.append(Setting(f"sito-r{r}-percall", "sito", {"ratio": r}, pattern="per-call"))
    return s


# Pairs compared with McNemar's test: (candidate, baseline) prefixes with the same suffix.
PAIRS = (("bigain-tm-", "tome-"), ("bigain-td-", "todo-"))


def interleaved_speed(
    bundle: Any, settings: list[Setting], batch_size: int, dtype: str = "fp32", repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Median denoiser forward time per setting, round-robin in one process (side by side)."""
    import bigain

    from .bench.timing import sync_fn
    from .precision import autocast

    device = next(bundle.denoiser.parameters()).device
    c, h, w = bundle.sample_shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, c, h, w, generator=g).to(device)
    t = torch.randint(25, 975, (batch_size,), generator=g).to(device)
    y = torch.randint(0, bundle.num_classes, (batch_size,), generator=g).to(device)
    times: dict[str, list[float]] = {s.label: [] for s in settings}
    sync = sync_fn(device)
    with torch.no_grad(), autocast(device, dtype):
        for r in range(repeats + 1):
            for s in settings:
                with bigain.compressed(bundle, s.method, **s.options):
                    sync()
                    t0 = time.perf_counter()
                    bundle.predict_eps(x, t, y)
                    sync()
                    dt = time.perf_counter() - t0
                if r > 0:
                    times[s.label].append(dt)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    base = med.get("none", next(iter(med.values())))
    return {k: {"forward_s": v, "rows_per_s": batch_size / v, "speedup": base / v} for k, v in med.items()}


def _flops(bundle: Any, settings: list[Setting]) -> dict[str, float | None]:
    from .bench import count_flops

    device = next(bundle.denoiser.parameters()).device
    c, h, w = bundle.sample_shape
    x = torch.randn(1, c, h, w, device=device)
    t = torch.tensor([500], device=device)
    out: dict[str, float | None] = {}
    for s in settings:
        try:
            kw = bundle.conditioning(torch.zeros(1, dtype=torch.long, device=device))
            out[s.label] = float(
                count_flops(bundle.denoiser, (x, t), kwargs=kw, method=s.method, **s.options)
            )
        except Exception:  # FLOP counting is informative only
            out[s.label] = None
    return out


def sweep_jobs(settings: list[Setting], phases: tuple[str, ...]) -> list[tuple[str, Setting]]:
    """(phase, setting) jobs in priority order: both phases of a setting before the next setting."""
    jobs = []
    for s in settings:
        if "classify" in phases:
            jobs.append(("classify", s))
        if "generate" in phases and s.pattern == "per-sample":
            jobs.append(("generate", s))
    return jobs


def run_sweep(
    model: str = "builtin:fashion-dit",
    out: str = "runs/sweep",
    images: int = 2000,
    gen: int = 2000,
    settings: list[Setting] | None = None,
    batch_size: int = 250,
    gen_batch: int = 500,
    steps: int = 50,
    guidance: float = 4.0,
    dtype: str = "fp32",
    device: str = "cpu",
    deadline_minutes: float | None = None,
    phases: tuple[str, ...] = ("classify", "generate", "speed", "report"),
    worker: tuple[int, int] = (0, 1),
    images_per_group: int | None = None,
    progress: bool = True,
    speed_batch: int | None = None,
) -> dict[str, Any]:
    """Run (this worker's share of) the sweep's jobs, then measure speed and write the report.

    ``worker=(i, n)`` takes jobs i, i+n, ... so n processes (e.g. sharing one GPU) split the work;
    each job's run folder resumes, so rerunning the same command finishes what a kill or the
    deadline left undone. ``phases`` picks among classify, generate, speed and report.
    """
    from .classify.datasets import FashionMNISTDataset
    from .classify.runner import run_classification
    from .generate import SamplerConfig, balanced_labels, generate_run
    from .models import load

    start = time.time()
    deadline = None if deadline_minutes is None else start + 60 * deadline_minutes
    settings = settings or default_settings()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = load(model, device=device)
    if {"classify", "generate"} & set(phases):  # only runs that produce results describe them
        (out_dir / "sweep_config.json").write_text(
            json.dumps(
                {
                    "model": model,
                    "images": images,
                    "gen": gen,
                    "steps": steps,
                    "guidance": guidance,
                    "dtype": dtype,
                    "settings": [vars(s) for s in settings],
                },
                indent=2,
            )
        )
    data = FashionMNISTDataset(split="test")
    labels = balanced_labels(bundle.num_classes, gen)
    jobs = sweep_jobs(settings, phases)[worker[0] :: worker[1]]
    for phase, s in jobs:
        if deadline is not None and time.time() >= deadline:
            print("[sweep] deadline reached; rerun the same command to finish", flush=True)
            break
        print(f"[sweep] {phase} {s.label}", flush=True)
        t_job = time.time()
        try:
            if phase == "classify":
                run_classification(
                    bundle,
                    data,
                    out_dir / "classify" / s.label,
                    limit=images,
                    method=s.method,
                    method_options=s.options,
                    batch_size=batch_size,
                    dtype=dtype,
                    pattern=s.pattern,
                    progress=progress,
                    model_name=model,
                    data_name="builtin:fashion-mnist",
                    images_per_group=images_per_group,
                )
            else:
                generate_run(
                    bundle,
                    out_dir / "generate" / s.label,
                    labels,
                    s.method,
                    s.options,
                    SamplerConfig("ddim", steps, guidance, 0, gen_batch, dtype),
                    progress=progress,
                )
        except Exception as e:  # one failing setting must not cost the others (the report shows it missing)
            import traceback

            traceback.print_exc()
            with open(out_dir / "failures.jsonl", "a") as f:
                f.write(json.dumps({"phase": phase, "setting": s.label, "error": repr(e)}) + "\n")
        print(f"[sweep] {phase} {s.label} ended after {time.time() - t_job:.1f} s", flush=True)
    timed = [s for s in settings if s.pattern == "per-sample"]
    if "speed" in phases:
        rows = speed_batch or batch_size
        try:
            record_speed(out_dir, interleaved_speed(bundle, timed, rows, dtype), bundle, rows, dtype)
        except Exception:  # keep going: the report still has accuracy and FID
            import traceback

            traceback.print_exc()
    if "report" not in phases:
        return {"seconds": time.time() - start}
    report = build_report(out_dir, settings, _flops(bundle, timed))
    report["seconds"] = time.time() - start
    (out_dir / "summary.json").write_text(json.dumps(report, indent=2))
    return report


def record_speed(
    out_dir: Path, speed: dict[str, dict[str, float]], bundle: Any, batch_size: int, dtype: str
) -> None:
    """Merge one device's interleaved timings into speed.json (one entry per device kind)."""
    device = next(bundle.denoiser.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    path = out_dir / "speed.json"
    allspeed = json.loads(path.read_text()) if path.is_file() else {}
    allspeed[device.type] = {
        "machine": name,
        "batch_rows": batch_size,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "settings": speed,
    }
    path.write_text(json.dumps(allspeed, indent=2))


def _cpu_name() -> str:
    from .bench.timing import machine_info

    info = machine_info()
    return f"{info['cpu']}, {info['cpu_count']} cores"


def _records(folder: Path) -> dict[str, bool]:
    """Image id -> correct, for every scored image of a classification run folder."""
    from .classify.runner import load_results

    return {
        i: bool(r["prediction"] == r["label"])
        for i, r in load_results(folder).items()
        if "prediction" in r and r.get("error") is None
    }


def _generation_metrics(folder: Path, cnn: Any, ref_stats: Any) -> dict[str, Any] | None:
    """Fashion-FID and CNN accuracy of a generation run's samples, cached in metrics.json.

    A partial run (deadline, kill) is scored on the samples it has, with ``complete`` false.
    """
    from .generate import read_manifest, read_png
    from .metrics import classifier_accuracy
    from .metrics.fashion import CNNFeatureExtractor
    from .metrics.fid import FeatureStats, fid_from_features

    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return None
    recs = {i: r for i, r in read_manifest(manifest).items() if (folder / r["file"]).is_file()}
    expected = json.loads((folder / "config.json").read_text())["num_images"]
    cache = folder / "metrics.json"
    if cache.is_file():
        got = json.loads(cache.read_text())
        if got.get("n") == len(recs) or not recs:
            return got  # not recs: a run folder copied back without its PNGs keeps its scores
    if len(recs) < 2:
        return {"complete": False, "n": len(recs)}
    order = sorted(recs)
    imgs = torch.stack([read_png(folder / recs[i]["file"]) for i in order])
    labels = torch.tensor([recs[i]["label"] for i in order])
    feats = CNNFeatureExtractor(cnn)(imgs)
    got = {
        "complete": len(recs) >= expected,
        "n": len(recs),
        "fashion_fid": float(fid_from_features(FeatureStats.from_features(feats.numpy()), ref_stats)),
        "cnn_accuracy": float(classifier_accuracy(imgs, labels, cnn)),
    }
    cache.write_text(json.dumps(got, indent=2))
    return got


def build_report(out_dir: Path, settings: list[Setting], flops: dict) -> dict[str, Any]:
    """Collect every finished setting into summary rows, McNemar pairs, report.md and plots.

    Speed comes from speed.json (one entry per device kind that ran the `speed` phase); the
    headline `speedup` is the CPU one when present, else the GPU one.
    """
    from .metrics import mcnemar

    ref_stats, cnn = _reference(out_dir)
    sp_path = out_dir / "speed.json"
    speed = json.loads(sp_path.read_text()) if sp_path.is_file() else {}
    primary = "cpu" if "cpu" in speed else next(iter(speed), None)
    rows = []
    correct: dict[str, dict[str, bool]] = {}
    for s in settings:
        rec = _records(out_dir / "classify" / s.label)
        correct[s.label] = rec
        gen = (
            _generation_metrics(out_dir / "generate" / s.label, cnn, ref_stats)
            if s.pattern == "per-sample"
            else None
        )
        per_dev = {d: v["settings"].get(s.label, {}).get("speedup") for d, v in speed.items()}
        rows.append(
            {
                "setting": s.label,
                "method": s.method,
                "options": s.options,
                "pattern": s.pattern,
                "images": len(rec),
                "accuracy": (sum(rec.values()) / len(rec)) if rec else None,
                "speedup": per_dev.get(primary) if primary else None,
                "speedup_by_device": per_dev,
                "gflops": None if flops.get(s.label) is None else flops[s.label] / 1e9,
                "generation": gen,
            }
        )
    base_flops = next((r["gflops"] for r in rows if r["setting"] == "none"), None)
    for r in rows:
        r["flops_reduction"] = None if not (r["gflops"] and base_flops) else 1 - r["gflops"] / base_flops
    tests = []
    for cand, base in PAIRS:
        for s in settings:
            if s.label.startswith(cand) and s.pattern == "per-sample":
                other = base + s.label[len(cand) :]
                if other in correct and correct[s.label] and correct[other]:
                    ids = sorted(set(correct[s.label]) & set(correct[other]))
                    a = [correct[s.label][i] for i in ids]
                    b = [correct[other][i] for i in ids]
                    res = mcnemar(a, b)
                    tests.append(
                        {
                            "candidate": s.label,
                            "baseline": other,
                            "n": len(ids),
                            "acc_candidate": sum(a) / len(ids),
                            "acc_baseline": sum(b) / len(ids),
                            **res,
                        }
                    )
    report = {
        "speed": {d: {k: v for k, v in e.items() if k != "settings"} for d, e in speed.items()},
        "speed_primary": primary,
        "rows": rows,
        "mcnemar": tests,
    }
    _write_markdown(out_dir, report)
    _plots(out_dir, rows)
    return report


def _reference(out_dir: Path):
    """Fashion-CNN feature statistics of the 10k test split (cached in the sweep folder)."""
    from .data import load as load_data
    from .metrics.fashion import CNNFeatureExtractor
    from .metrics.fid import FeatureStats
    from .models import load_classifier

    cnn = load_classifier("builtin:fashion-cnn")
    cache = out_dir / "reference_stats.npz"
    if cache.is_file():
        return FeatureStats.load(cache), cnn
    ds = load_data("builtin:fashion-mnist", split="test")
    imgs = torch.stack([ds[i][0] for i in range(len(ds))])
    stats = FeatureStats.from_features(CNNFeatureExtractor(cnn)(imgs).numpy())
    stats.save(cache)
    return stats, cnn


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def _write_markdown(out_dir: Path, report: dict[str, Any]) -> None:
    devs = list(report["speed"])
    lines = ["# bigain sweep", ""]
    for d, e in report["speed"].items():
        lines.append(
            f"- speed on {d}: {e['machine']}, {e['dtype']}, {e['batch_rows']} rows per forward, "
            f"{e['threads']} threads; settings timed interleaved in one process, median of repeats"
        )
    if not devs:
        lines.append("- speed: not measured (run the `speed` phase)")
    lines += [
        "- accuracy: diffusion classifier (spec §7.3 schedule) on the first `images` test images; "
        "samples: class-balanced, DDIM, scored with fashion-cnn (Fashion-FID vs the 10k test split)",
        "",
    ]
    sp_cols = "".join(f" speedup ({d}) |" for d in devs)
    lines += [
        f"| setting | pattern | images | accuracy (%) |{sp_cols} GFLOPs | FLOPs cut (%) | samples | Fashion-FID | CNN acc. of samples (%) |",
        "|---|---|---|---|" + "---|" * len(devs) + "---|---|---|---|---|",
    ]
    for r in report["rows"]:
        g = r["generation"] or {}
        sp = "".join(f" {_fmt(r['speedup_by_device'].get(d), '.3f')} |" for d in devs)
        acc = None if r["accuracy"] is None else 100 * r["accuracy"]
        cut = None if r["flops_reduction"] is None else 100 * r["flops_reduction"]
        cnn = None if g.get("cnn_accuracy") is None else 100 * g["cnn_accuracy"]
        lines.append(
            f"| {r['setting']} | {r['pattern']} | {r['images']} | {_fmt(acc, '.2f')} |{sp} "
            f"{_fmt(r['gflops'], '.3f')} | {_fmt(cut, '.1f')} | "
            f"{g.get('n', '–')} | {_fmt(g.get('fashion_fid'), '.3f')} | {_fmt(cnn, '.2f')} |"
        )
    if report["mcnemar"]:
        lines += [
            "",
            "## Paired comparisons (McNemar, same images)",
            "",
            "| candidate | baseline | n | acc. candidate | acc. baseline | only candidate right | only baseline right | p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in report["mcnemar"]:
            lines.append(
                f"| {t['candidate']} | {t['baseline']} | {t['n']} | {100 * t['acc_candidate']:.2f} | "
                f"{100 * t['acc_baseline']:.2f} | {t['b']} | {t['c']} | {t['p_value']:.3g} |"
            )
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


def pareto_front(points: list[tuple[float, float]], maximize_y: bool = True) -> list[int]:
    """Indices of points not dominated in (higher x, better y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and (y2 >= y if maximize_y else y2 <= y)) and (x2, y2) != (x, y) for x2, y2 in points
        )
        if not dominated:
            front.append(i)
    return front


def _plots(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, ylabel, fname, maximize in (
        ("accuracy", "diffusion-classifier accuracy (%)", "accuracy_vs_speedup.png", True),
        ("fid", "Fashion-FID (lower is better)", "fid_vs_speedup.png", False),
    ):
        pts, names = [], []
        for r in rows:
            y = r["accuracy"] if key == "accuracy" else (r["generation"] or {}).get("fashion_fid")
            if y is None or r["speedup"] is None or r["pattern"] != "per-sample":
                continue
            pts.append((r["speedup"], 100 * y if key == "accuracy" else y))
            names.append(r["setting"])
        if not pts:
            continue
        front = set(pareto_front(pts, maximize))
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for i, ((x, y), n) in enumerate(zip(pts, names)):
            ax.scatter(x, y, marker="*" if i in front else "o", s=80 if i in front else 30)
            ax.annotate(n, (x, y), fontsize=7)
        fx = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fx], [p[1] for p in fx], "k--", lw=0.8, label="Pareto front")
        ax.set_xlabel("speedup vs none (x)")
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bigain sweep", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:fashion-dit")
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--images", type=int, default=2000, help="test images classified per setting")
    p.add_argument("--gen", type=int, default=2000, help="samples generated per setting")
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
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (spec §8: 50)")
    p.add_argument(
        "--guidance", type=float, default=4.0, help="classifier-free guidance scale (spec §8: 4.0)"
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
    settings = default_settings(
        tuple(float(r) for r in a.ratios.split(",")), tuple(int(f) for f in a.factors.split(","))
    )
    if a.methods:
        keep = set(a.methods.split(","))
        settings = [s for s in settings if s.label in keep or s.method in keep]
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
    )
    if "report" in phases:
        print((Path(a.out) / "report.md").read_text())
    print(f"sweep finished in {rep['seconds']:.0f} s")
    return 0
