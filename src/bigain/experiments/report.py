"""The report of a sweep: one row per setting, the paired tests, FID over seeds, plots.

Everything is rebuilt from the run folders, so an interrupted sweep still gives a consistent
(partial) report, and a report can be rebuilt on another machine. Paired tests follow the
analysis fixed before the results: exact McNemar on the images both settings scored, Holm's
correction within each declared family, a paired-bootstrap interval of the accuracy difference,
and, for generation, the FID difference averaged over sample seeds with a paired bootstrap
interval (`bigain.metrics.stats`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grid import Setting, generation_folders

FEATURES_FILE = "features.npy"  # per-sample features of a generation run (for the FID bootstrap)
FID_TESTS_FILE = "fid_tests.json"  # FID comparisons already computed (kept when features are not)


def _records(folder: Path) -> dict[str, bool]:
    """Image id -> correct, for every scored image of a classification run folder."""
    from ..classify.runner import load_results

    return {
        i: bool(r["prediction"] == r["label"])
        for i, r in load_results(folder).items()
        if "prediction" in r and r.get("error") is None
    }


class Scorer:
    """Features (for FID) and, where a classifier of the domain exists, the accuracy of samples."""

    def __init__(self, extractor: Any, ref_stats: Any, classifier: Any = None, name: str = "") -> None:
        self.extractor, self.ref_stats, self.classifier, self.name = extractor, ref_stats, classifier, name


def make_scorer(out_dir: Path, data: str, fid_features: str = "auto", fid_reference: str | None = None):
    """The sample scorer for a sweep, or None when no reference is available.

    ``fashion-cnn`` (the default on Fashion-MNIST): features of the embedded classifier, reference
    statistics of the 10k test split (cached in the sweep folder), and the classifier's accuracy.
    ``inception=WEIGHTS``: the FID Inception network (local weights file) against `fid_reference`
    (a `FeatureStats` file of real images, e.g. from `bigain.metrics.compute_stats`).
    """
    from ..metrics.fid import FeatureStats

    kind, _, weights = fid_features.partition("=")
    if kind == "auto":
        kind = "fashion-cnn" if str(data).startswith("builtin:fashion-mnist") else "inception"
    if kind == "fashion-cnn":
        from ..data import load as load_data
        from ..metrics.fashion import CNNFeatureExtractor
        from ..models import load_classifier

        cnn = load_classifier("builtin:fashion-cnn")
        ext = CNNFeatureExtractor(cnn)
        cache = out_dir / "reference_stats.npz"
        if cache.is_file():
            stats = FeatureStats.load(cache)
        else:
            ds = load_data("builtin:fashion-mnist", split="test")
            imgs = torch.stack([ds[i][0] for i in range(len(ds))])
            stats = FeatureStats.from_features(ext(imgs).numpy())
            stats.save(cache)
        return Scorer(ext, stats, cnn, "Fashion-FID")
    if kind == "inception":
        if fid_reference is None or not weights:
            return None  # FID needs the Inception weights and reference statistics of real images
        from ..metrics import InceptionExtractor

        return Scorer(InceptionExtractor(weights), FeatureStats.load(fid_reference), None, "FID")
    raise ValueError(
        f"fid_features={fid_features!r}: expected 'auto', 'fashion-cnn' or 'inception=WEIGHTS_FILE'"
    )


def generation_metrics(folder: Path, scorer: Scorer | None) -> dict[str, Any] | None:
    """FID (and the classifier's accuracy) of a generation run's samples, cached in metrics.json,
    with the per-sample features in features.npy for the bootstrap. A partial run (deadline, kill)
    is scored on the samples it has, with ``complete`` false."""
    from ..generate import read_manifest, read_png
    from ..metrics import classifier_accuracy
    from ..metrics.fid import FeatureStats, fid_from_features

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
    if len(recs) < 2 or scorer is None:
        return {"complete": len(recs) >= expected, "n": len(recs)}
    order = sorted(recs)
    imgs = torch.stack([read_png(folder / recs[i]["file"]) for i in order])
    feats = scorer.extractor(imgs).double().numpy()
    got = {
        "complete": len(recs) >= expected,
        "n": len(recs),
        "fid_kind": scorer.name,
        "fashion_fid": float(fid_from_features(FeatureStats.from_features(feats), scorer.ref_stats)),
    }
    if scorer.classifier is not None:
        labels = torch.tensor([recs[i]["label"] for i in order])
        got["cnn_accuracy"] = float(classifier_accuracy(imgs, labels, scorer.classifier))
    np.save(folder / FEATURES_FILE, feats.astype(np.float32))
    from .. import runs

    runs.write_json(cache, got, nonfinite="null")
    return got


def _features(folder: Path, n: int) -> np.ndarray | None:
    path = folder / FEATURES_FILE
    if not path.is_file():
        return None
    f = np.load(path)
    return f if len(f) == n else None


def _seed_summary(per_seed: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    fids = [g["fashion_fid"] for g in per_seed.values() if g and g.get("complete") and "fashion_fid" in g]
    if not fids:
        return {"fid_mean": None, "fid_min": None, "fid_max": None, "fid_seeds": 0}
    return {
        "fid_mean": float(np.mean(fids)),
        "fid_min": min(fids),
        "fid_max": max(fids),
        "fid_seeds": len(fids),
    }


def compare_accuracy(correct: dict[str, dict[str, bool]], settings: list[Setting]) -> list[dict[str, Any]]:
    """Exact McNemar, paired-bootstrap interval, headroom and Holm within each family, for every
    setting with a baseline, on the images both scored; the pre-registered decision per test."""
    from ..metrics.stats import accuracy_decision, holm, mcnemar, paired_diff_interval

    tests = []
    for s in settings:
        if not s.baseline:
            continue
        a_rec, b_rec = correct.get(s.label) or {}, correct.get(s.baseline) or {}
        ids = sorted(set(a_rec) & set(b_rec))
        if not ids:
            continue
        a = np.array([a_rec[i] for i in ids])
        b = np.array([b_rec[i] for i in ids])
        res = mcnemar(a, b)
        diff, lo, hi = paired_diff_interval(a, b)
        none = correct.get("none") or {}
        both = [i for i in ids if i in none]
        headroom = (
            float(np.mean([none[i] for i in both]) - np.mean([b_rec[i] for i in both])) if both else None
        )
        tests.append(
            {
                "candidate": s.label,
                "baseline": s.baseline,
                "family": s.family,
                "n": len(ids),
                "acc_candidate": float(a.mean()),
                "acc_baseline": float(b.mean()),
                **res,
                "diff": diff,
                "diff_low": lo,
                "diff_high": hi,
                "headroom": headroom,
            }
        )
    for fam in {t["family"] for t in tests if t["family"]}:
        members = [t for t in tests if t["family"] == fam]
        for t, p in zip(members, holm([t["p_exact"] for t in members])):
            t["p_holm"] = p
            t["decision"] = accuracy_decision(t["diff"], t["diff_high"], p, t["headroom"])
    return tests


def compare_generation(
    out_dir: Path,
    settings: list[Setting],
    gens: dict[str, dict[int, dict[str, Any] | None]],
    scorer: Scorer | None,
    seeds: tuple[int, ...],
    n_boot: int,
    device: str | None,
) -> list[dict[str, Any]]:
    """FID difference (candidate - baseline) over the seeds with its paired bootstrap interval,
    for every setting with a baseline whose samples are complete for every seed on both sides."""
    from ..metrics.stats import fid_diff_bootstrap, generation_decision

    if scorer is None:
        return []
    cache_path = out_dir / FID_TESTS_FILE
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    out = []
    for s in settings:
        if not s.baseline or s.pattern != "per-sample":
            continue
        ns = [(gens.get(x, {}).get(seed) or {}).get("n") for x in (s.label, s.baseline) for seed in seeds]
        key = f"{s.label}|{s.baseline}|seeds={list(seeds)}|n={ns}|boot={n_boot}"
        fa, fb = [], []
        for seed in seeds:
            ga, gb = gens.get(s.label, {}).get(seed), gens.get(s.baseline, {}).get(seed)
            if not (ga and gb and ga.get("complete") and gb.get("complete")):
                break
            xa = _features(out_dir / "generate" / generation_folders(s.label, (seed,))[seed], ga["n"])
            xb = _features(out_dir / "generate" / generation_folders(s.baseline, (seed,))[seed], gb["n"])
            if xa is None or xb is None or xa.shape != xb.shape:
                break
            fa.append(xa)
            fb.append(xb)
        if len(fa) != len(seeds):
            if key in cache:  # features not here (a folder copied without them): the stored result
                out.append(cache[key])
            continue
        dev = device if device and device.startswith("cuda") and torch.cuda.is_available() else None
        res = fid_diff_bootstrap(
            fa, fb, scorer.ref_stats.mean, scorer.ref_stats.cov, n_boot=n_boot, device=dev
        )
        res.update(candidate=s.label, baseline=s.baseline, family=s.family, seeds=list(seeds))
        res["decision"] = generation_decision(res["low"], res["high"], res["mean_b"]) if s.family else None
        out.append(res)
        cache[key] = res
    if out:
        from .. import runs

        runs.write_json(cache_path, cache, nonfinite="null")
    return out


def build_report(
    out_dir: Path,
    settings: list[Setting],
    flops: dict[str, float | None],
    *,
    seeds: tuple[int, ...] = (0,),
    data: str = "builtin:fashion-mnist",
    fid_features: str = "auto",
    fid_reference: str | None = None,
    fid_boot: int = 1000,
    device: str | None = None,
) -> dict[str, Any]:
    """Collect every finished setting into summary rows, paired tests, report.md and plots.

    Speed comes from speed.json (one entry per device kind that ran the `speed` phase); the
    headline `speedup` is the CPU one when present, else the GPU one.
    """
    out_dir = Path(out_dir)
    scorer = make_scorer(out_dir, data, fid_features, fid_reference)
    sp_path = out_dir / "speed.json"
    speed = json.loads(sp_path.read_text()) if sp_path.is_file() else {}
    primary = "cpu" if "cpu" in speed else next(iter(speed), None)
    rows = []
    correct: dict[str, dict[str, bool]] = {}
    gens: dict[str, dict[int, dict[str, Any] | None]] = {}
    for s in settings:
        rec = _records(out_dir / "classify" / s.label)
        correct[s.label] = rec
        per_seed: dict[int, dict[str, Any] | None] = {}
        if s.pattern == "per-sample":
            for seed, name in generation_folders(s.label, seeds).items():
                per_seed[seed] = generation_metrics(out_dir / "generate" / name, scorer)
        gens[s.label] = per_seed
        per_dev = {d: v["settings"].get(s.label, {}).get("speedup") for d, v in speed.items()}
        rows.append(
            {
                "setting": s.label,
                "method": s.method,
                "options": s.options,
                "pattern": s.pattern,
                "baseline": s.baseline,
                "family": s.family,
                "images": len(rec),
                "accuracy": (sum(rec.values()) / len(rec)) if rec else None,
                "speedup": per_dev.get(primary) if primary else None,
                "speedup_by_device": per_dev,
                "gflops": None if flops.get(s.label) is None else flops[s.label] / 1e9,
                "generation": per_seed.get(seeds[0]) if per_seed else None,
                "generation_seeds": {str(k): v for k, v in per_seed.items()},
                **_seed_summary(per_seed),
            }
        )
    base_flops = next((r["gflops"] for r in rows if r["setting"] == "none"), None)
    for r in rows:
        r["flops_reduction"] = None if not (r["gflops"] and base_flops) else 1 - r["gflops"] / base_flops
    report = {
        "speed": {d: {k: v for k, v in e.items() if k != "settings"} for d, e in speed.items()},
        "speed_primary": primary,
        "seeds": list(seeds),
        "rows": rows,
        "mcnemar": compare_accuracy(correct, settings),
        "fid_tests": compare_generation(out_dir, settings, gens, scorer, seeds, fid_boot, device),
    }
    write_markdown(out_dir, report)
    plots(out_dir, rows)
    return report


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def write_markdown(out_dir: Path, report: dict[str, Any]) -> None:
    devs = list(report["speed"])
    seeds = report.get("seeds", [0])
    lines = ["# bigain sweep", ""]
    for d, e in report["speed"].items():
        lines.append(
            f"- speed on {d}: {e['machine']}, {e['dtype']}, {e['batch_rows']} rows per forward, "
            f"{e['threads']} threads; settings timed interleaved in one process, median of repeats"
        )
    if not devs:
        lines.append("- speed: not measured (run the `speed` phase)")
    lines += [
        "- accuracy: diffusion classifier (adaptive schedule) on the first `images` test images; samples: "
        f"class-balanced, DDIM, sample seeds {seeds} (FID: mean over the seeds, [min–max] when several)",
        "",
    ]
    sp_cols = "".join(f" speedup ({d}) |" for d in devs)
    lines += [
        f"| setting | pattern | images | accuracy (%) |{sp_cols} GFLOPs | FLOPs cut (%) | samples | FID | "
        "classifier acc. of samples (%) |",
        "|---|---|---|---|" + "---|" * len(devs) + "---|---|---|---|---|",
    ]
    for r in report["rows"]:
        g = r["generation"] or {}
        sp = "".join(f" {_fmt(r['speedup_by_device'].get(d), '.3f')} |" for d in devs)
        acc = None if r["accuracy"] is None else 100 * r["accuracy"]
        cut = None if r["flops_reduction"] is None else 100 * r["flops_reduction"]
        cnn = None if g.get("cnn_accuracy") is None else 100 * g["cnn_accuracy"]
        fid = _fmt(r.get("fid_mean") if r.get("fid_seeds") else g.get("fashion_fid"), ".3f")
        if (r.get("fid_seeds") or 0) > 1:
            fid += f" [{r['fid_min']:.2f}–{r['fid_max']:.2f}]"
        lines.append(
            f"| {r['setting']} | {r['pattern']} | {r['images']} | {_fmt(acc, '.2f')} |{sp} "
            f"{_fmt(r['gflops'], '.3f')} | {_fmt(cut, '.1f')} | {g.get('n', '–')} | {fid} | {_fmt(cnn, '.2f')} |"
        )
    if report["mcnemar"]:
        lines += [
            "",
            "## Paired comparisons (exact McNemar, same images; Holm within each family)",
            "",
            "| candidate | baseline | family | n | acc. candidate | acc. baseline | only candidate right | "
            "only baseline right | difference (points, 95 % CI) | p exact | p Holm | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in report["mcnemar"]:
            lines.append(
                f"| {t['candidate']} | {t['baseline']} | {t['family'] or 'exploratory'} | {t['n']} | "
                f"{100 * t['acc_candidate']:.2f} | {100 * t['acc_baseline']:.2f} | {t['b']} | {t['c']} | "
                f"{100 * t['diff']:+.2f} [{100 * t['diff_low']:+.2f}, {100 * t['diff_high']:+.2f}] | "
                f"{t['p_exact']:.3g} | {_fmt(t.get('p_holm'), '.3g')} | {t.get('decision') or '–'} |"
            )
    if report.get("fid_tests"):
        lines += [
            "",
            "## FID, candidate minus baseline (mean over seeds, 95 % paired bootstrap)",
            "",
            "| candidate | baseline | FID candidate | FID baseline | difference [95 % CI] | generation kept? |",
            "|---|---|---|---|---|---|",
        ]
        for t in report["fid_tests"]:
            lines.append(
                f"| {t['candidate']} | {t['baseline']} | {t['mean_a']:.3f} | {t['mean_b']:.3f} | "
                f"{t['delta']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}] | {t.get('decision') or '–'} |"
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


def plots(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, ylabel, fname, maximize in (
        ("accuracy", "diffusion-classifier accuracy (%)", "accuracy_vs_speedup.png", True),
        ("fid", "FID (lower is better)", "fid_vs_speedup.png", False),
    ):
        pts, names = [], []
        for r in rows:
            if key == "accuracy":
                y = r["accuracy"]
            else:
                y = r.get("fid_mean") if r.get("fid_seeds") else (r["generation"] or {}).get("fashion_fid")
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


def combine(
    summaries: dict[str, dict[str, Any]], expected: dict[str, list[Setting]] | None = None
) -> dict[str, Any]:
    """The declared families across several sweeps (e.g. one folder per model), corrected together.

    `summaries` maps a run name to its ``summary.json``; `expected` (optional) maps run names to the
    grid that was declared for them, so a declared comparison that has no result is listed as
    missing, counted in its family with p = 1 (Holm stays as strict as declared), and judged
    "cannot tell". Returns ``accuracy`` and ``generation`` lists of tests, each with its ``run``.
    """
    from ..metrics.stats import accuracy_decision, holm

    tests = [
        dict(t, run=name, missing=False) for name, rep in summaries.items() for t in rep.get("mcnemar", [])
    ]
    have = {(t["run"], t["candidate"]) for t in tests}
    for run, grid in (expected or {}).items():
        for s in grid:
            if s.baseline and s.family and (run, s.label) not in have:
                tests.append(
                    {"run": run, "candidate": s.label, "baseline": s.baseline, "family": s.family, "missing": True,
                     "p_exact": 1.0, "n": 0}
                )  # fmt: skip
    for fam in sorted({t["family"] for t in tests if t.get("family")}):
        members = [t for t in tests if t.get("family") == fam]
        for t, p in zip(members, holm([t["p_exact"] for t in members])):
            t["p_holm"] = p
            t["decision"] = (
                "cannot tell (missing)"
                if t["missing"]
                else accuracy_decision(t["diff"], t["diff_high"], p, t.get("headroom"))
            )
    gen = [dict(t, run=name) for name, rep in summaries.items() for t in rep.get("fid_tests", [])]
    return {"accuracy": tests, "generation": gen}
