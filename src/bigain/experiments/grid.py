"""The settings grid of a sweep: which methods and options run, and which pairs are compared.

A `Setting` is one compressed (or uncompressed) configuration under a label. A setting may name
its `baseline` (the label it is compared against) and the `family` of that comparison: the tests
of one family are corrected together (Holm), so a family is declared before any result exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass
class Setting:
    """One configuration of the grid.

    label: unique name (run folders are named by it). method/options: as for `bigain.apply`.
    pattern: the classifier's random choices: keyed per row ("per-sample") or drawn once per
    forward call as the reference code does ("per-call"; classification only).
    baseline: label of the setting this one is compared against (paired tests), or None.
    family: the multiple-testing family of that comparison ("primary", "secondary", ...).
    """

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    pattern: str = "per-sample"
    baseline: str | None = None
    family: str | None = None


def default_settings(
    ratios: tuple[float, ...] = (0.5, 0.7), factors: tuple[int, ...] = (2, 4)
) -> list[Setting]:
    """The first sweep's grid, in priority order for a time-boxed run.

    The strongest compression (largest ratio, smallest factor) of each family comes first, with
    each BiGain operator right after its baseline; the reference's per-call random pattern last.
    """
    s = [Setting("none", "none")]
    rs = sorted(ratios, reverse=True)
    fs = sorted(factors)
    for i in range(max(len(rs), len(fs))):
        if i < len(rs):
            s.append(Setting(f"tome-r{rs[i]}", "tome", {"ratio": rs[i]}))
            s.append(Setting(f"bigain-tm-r{rs[i]}", "bigain-tm", {"ratio": rs[i]}, baseline=f"tome-r{rs[i]}"))
        if i < len(fs):
            s.append(Setting(f"todo-s{fs[i]}", "todo", {"downsample_factor": fs[i]}))
            s.append(
                Setting(
                    f"bigain-td-s{fs[i]}",
                    "bigain-td",
                    {"downsample_factor": fs[i]},
                    baseline=f"todo-s{fs[i]}",
                )
            )
        if i < len(rs):
            s.append(Setting(f"sito-r{rs[i]}", "sito", {"ratio": rs[i]}))
    r = max(ratios)
    s.append(Setting(f"tome-r{r}-percall", "tome", {"ratio": r}, pattern="per-call"))
    s.append(Setting(f"sito-r{r}-percall", "sito", {"ratio": r}, pattern="per-call", baseline=f"sito-r{r}"))
    return s


# declared secondary placements: the options they add, for merging/pruning and for KV downsampling
PLACEMENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    # U-Net: levels 1 and 2 (KV downsampling at level 2 with the same factor as level 1)
    "levels12": ({"max_downsample": 2}, {"factor_level_2": "same"}),
    # 8-block DiT: blocks 1-3, about the paper's 10 of 28 blocks
    "blocks123": ({"blocks": [1, 2, 3]}, {"blocks": [1, 2, 3]}),
}


def _placed(method: str, options: dict[str, Any], placement: str) -> dict[str, Any]:
    merge, kv = PLACEMENTS[placement]
    extra = kv if method in ("todo", "bigain-td") else merge
    out = dict(options)
    for k, v in extra.items():
        if k == "factor_level_2":
            out["downsample_factor_level_2"] = options["downsample_factor"]
        else:
            out[k] = v
    return out


def paper_settings(
    ratios: tuple[float, ...] = (0.5, 0.7),
    factors: tuple[int, ...] = (2, 4),
    placement: str = "default",
    family: str | None = None,
    reference_family: str = "secondary",
) -> list[Setting]:
    """The pre-registered grid (13 settings at the defaults): none; tome, bigain-tm (paper rule)
    and bigain-tm with ``dst_rule="reference"`` at each ratio; todo and bigain-td at each factor;
    sito at each ratio.

    bigain-tm vs tome and bigain-td vs todo form `family` ("primary" at the default placement);
    the reference-rule comparisons form `reference_family`. A declared secondary `placement`
    (``levels12`` on a U-Net, ``blocks123`` on the 8-block DiT) runs only none and the four
    compared pairs, as the "secondary" family.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: expected one of {sorted(PLACEMENTS)}")
    fam = family or ("primary" if placement == "default" else "secondary")

    def st(label: str, method: str, options: dict[str, Any], **kw: Any) -> Setting:
        return Setting(label, method, _placed(method, options, placement), **kw)

    s = [Setting("none", "none")]
    for r in sorted(ratios, reverse=True):
        s.append(st(f"tome-r{r}", "tome", {"ratio": r}))
        s.append(st(f"bigain-tm-r{r}", "bigain-tm", {"ratio": r}, baseline=f"tome-r{r}", family=fam))
        if placement != "default":
            continue
        s.append(
            st(
                f"bigain-tm-ref-r{r}",
                "bigain-tm",
                {"ratio": r, "dst_rule": "reference"},
                baseline=f"tome-r{r}",
                family=reference_family,
            )
        )
    for f in sorted(factors):
        s.append(st(f"todo-s{f}", "todo", {"downsample_factor": f}))
        s.append(
            st(f"bigain-td-s{f}", "bigain-td", {"downsample_factor": f}, baseline=f"todo-s{f}", family=fam)
        )
    if placement == "default":
        s += [st(f"sito-r{r}", "sito", {"ratio": r}) for r in sorted(ratios, reverse=True)]
    return s


GRIDS = {"default": default_settings, "paper": paper_settings}


def select(settings: list[Setting], names: str | None) -> list[Setting]:
    """The settings whose label or method is in the comma-separated `names` (all when None)."""
    if not names:
        return list(settings)
    keep = {n.strip() for n in names.split(",") if n.strip()}
    return [s for s in settings if s.label in keep or s.method in keep]


# a BiGain setting without a declared baseline is compared with the baseline of the same suffix
PAIRS = (("bigain-tm-", "tome-"), ("bigain-td-", "todo-"))


def infer_baselines(settings: list[Setting]) -> list[Setting]:
    """Fill in the baseline of ``bigain-tm-X`` (``tome-X``) and ``bigain-td-X`` (``todo-X``) where
    the grid holds it and the setting declares none (hand-written grids need not name them)."""
    labels = {s.label for s in settings}
    out = []
    for s in settings:
        if s.baseline is None:
            for cand, base in PAIRS:
                other = base + s.label[len(cand) :]
                if s.label.startswith(cand) and other in labels:
                    s = replace(s, baseline=other)
                    break
        out.append(s)
    return out


def check_grid(settings: list[Setting]) -> None:
    """Raise ValueError for duplicate labels or a baseline that is not in the grid."""
    labels = [s.label for s in settings]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"settings: duplicate labels {dup}")
    missing = sorted({s.baseline for s in settings if s.baseline and s.baseline not in labels})
    if missing:
        raise ValueError(f"settings: baselines {missing} are not settings of the grid")


def generation_folders(label: str, seeds: tuple[int, ...]) -> dict[int, str]:
    """Run-folder name of each sample seed: the label for seed 0 (as single-seed sweeps wrote it),
    ``label-seedS`` for the others."""
    return {s: label if s == 0 else f"{label}-seed{s}" for s in seeds}


def job_list(
    settings: list[Setting], phases: tuple[str, ...], seeds: tuple[int, ...] = (0,)
) -> list[tuple[str, Setting, int]]:
    """(phase, setting, seed) jobs in priority order: a setting's classification, then its samples
    seed by seed, before the next setting. Per-call settings are classification only."""
    out = []
    for s in settings:
        if "classify" in phases:
            out.append(("classify", s, 0))
        if "generate" in phases and s.pattern == "per-sample":
            out += [("generate", s, seed) for seed in seeds]
    return out


def worker_share(items: list[Any], worker: tuple[int, int]) -> list[Any]:
    """Items i, i+n, i+2n, ... for worker (i, n): n processes (e.g. sharing one GPU) split a list."""
    i, n = worker
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"worker={worker}: expected (i, n) with 0 <= i < n")
    return items[i::n]
