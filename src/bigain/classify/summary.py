"""Accuracy, per-class accuracy, confusion matrix and the multi-label metrics (acc@1, mAP, recall@5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..metrics.stats import wilson_interval

__all__ = ["average_precision", "recall_at_k", "summarize", "summary_markdown"]


def average_precision(ranking: Sequence[int], labels: Sequence[int]) -> float:
    """(1/|GT|) Σ over ranks k with a hit of precision@k; 0 for an empty label set."""
    gt = set(labels)
    if not gt:
        return 0.0
    hits, total = 0, 0.0
    for k, c in enumerate(ranking, start=1):
        if c in gt:
            hits += 1
            total += hits / k
            if hits == len(gt):
                break
    return total / len(gt)


def recall_at_k(ranking: Sequence[int], labels: Sequence[int], k: int = 5) -> float:
    gt = set(labels)
    if not gt:
        return 0.0
    return len(gt.intersection(ranking[:k])) / len(gt)


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * num / den


def summarize(
    records: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    *,
    multi_label: bool = False,
    expected: int | None = None,
) -> dict[str, Any]:
    """The summary of a run from its per-image records (any order; failures excluded from accuracy)."""
    records = sorted(records, key=lambda r: r["index"])
    scored = [r for r in records if r.get("error") is None]
    failed = [r for r in records if r.get("error") is not None]
    K = len(class_names)
    out: dict[str, Any] = {
        "num_images": len(records),
        "num_scored": len(scored),
        "num_failed": len(failed),
        "expected": expected,
        "complete": expected is not None and {r["index"] for r in records} >= set(range(expected)),
        "multi_label": multi_label,
    }
    if multi_label:
        acc1 = sum(1 for r in scored if r["prediction"] in r["label"])
        out["acc1"] = _pct(acc1, len(scored))
        out["top1"] = out["acc1"]
        out["mAP"] = _pct(sum(average_precision(r["ranking"], r["label"]) for r in scored), len(scored))
        out["recall5"] = _pct(sum(recall_at_k(r["ranking"], r["label"], 5) for r in scored), len(scored))
    else:
        correct = sum(1 for r in scored if r["prediction"] == r["label"])
        out["top1"] = _pct(correct, len(scored))
        out["top5"] = _pct(sum(1 for r in scored if r["label"] in r["ranking"][:5]), len(scored))
        confusion = [[0] * K for _ in range(K)]
        for r in scored:
            confusion[r["label"]][r["prediction"]] += 1
        out["per_class_accuracy"] = {
            name: _pct(confusion[k][k], sum(confusion[k])) for k, name in enumerate(class_names)
        }
        out["confusion_matrix"] = confusion
    seconds = sum(float(r.get("seconds", 0.0)) for r in scored)
    calls = sum(int(r.get("calls", 0)) for r in scored)
    out["timing"] = {
        "engine_seconds": seconds,
        "images_per_second": (len(scored) / seconds) if seconds > 0 else None,
        "denoiser_rows": calls,
        "rows_per_second": (calls / seconds) if seconds > 0 else None,
    }
    out["images_per_s"] = out["timing"]["images_per_second"]  # engine throughput (also under "timing")
    # a 95 % Wilson interval for the headline accuracy (percent), over the scored images
    if multi_label:
        hits = sum(1 for r in scored if r["prediction"] in r["label"])
    else:
        hits = sum(1 for r in scored if r["prediction"] == r["label"])
    ci = wilson_interval(hits, len(scored))
    out["top1_ci95"] = None if ci is None else [100.0 * ci[0], 100.0 * ci[1]]
    out["failed"] = [{"id": r["id"], "path": r.get("path"), "error": r["error"]} for r in failed]
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def summary_markdown(summary: dict[str, Any], config: dict[str, Any], class_names: Sequence[str]) -> str:
    lines = [
        "# Diffusion classification",
        "",
        f"- model: `{config.get('model')}`",
        f"- data: `{config.get('data')}`",
        f"- method: `{config.get('method')}` {config.get('method_options') or ''}",
        (
            f"- stages: n_samples {config.get('n_samples')} / to_keep {config.get('to_keep')}, loss {config.get('loss')}, "
            f"dtype {config.get('dtype')}, seed {config.get('seed')}, pattern {config.get('pattern')}"
        ),
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| images | {summary['num_images']} (scored {summary['num_scored']}, failed {summary['num_failed']}) |",
        f"| complete | {summary['complete']} |",
    ]
    keys = ("acc1", "mAP", "recall5") if summary["multi_label"] else ("top1", "top5")
    for k in keys:
        lines.append(f"| {k} (%) | {_fmt(summary.get(k))} |")
    ci = summary.get("top1_ci95")
    if ci is not None:
        lines.append(f"| {keys[0]} 95 % interval (Wilson, n={summary['num_scored']}) | {ci[0]:.1f}–{ci[1]:.1f} |")
    t = summary["timing"]
    lines.append(f"| images/s (engine) | {_fmt(t['images_per_second'])} |")
    lines.append(f"| denoiser rows/s | {_fmt(t['rows_per_second'])} |")
    if not summary["multi_label"]:
        lines += ["", "## Per-class accuracy", "", "| class | accuracy (%) |", "| --- | --- |"]
        for name, acc in summary["per_class_accuracy"].items():
            lines.append(f"| {name} | {_fmt(acc)} |")
        K = len(class_names)
        if K <= 20:
            lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
            lines.append("| | " + " | ".join(str(k) for k in range(K)) + " |")
            lines.append("| --- " * (K + 1) + "|")
            for k, row in enumerate(summary["confusion_matrix"]):
                lines.append(f"| {k} {class_names[k]} | " + " | ".join(str(v) for v in row) + " |")
        else:
            lines += ["", f"(confusion matrix of {K} classes: see summary.json)"]
    if summary["failed"]:
        lines += ["", "## Images without a prediction (unreadable, or a non-finite denoiser error)", ""]
        lines += [f"- `{f['path'] or f['id']}`: {f['error']}" for f in summary["failed"]]
    return "\n".join(lines) + "\n"
