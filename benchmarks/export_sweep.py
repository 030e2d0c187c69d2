"""Copy the publishable part of a `bigain sweep` folder into benchmarks/results/.

A sweep folder holds per-image error traces and thousands of PNGs (hundreds of MB); the record
we keep is small: the report, summary and speed JSON, the plots, one sample grid per setting,
each setting's classification summary, and every image's (id, label, prediction) per setting
(`predictions.csv.gz`), from which accuracies and the McNemar tests can be recomputed.

    python benchmarks/export_sweep.py runs/gpu/fashion-dit benchmarks/results/sweep-fashion-dit
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
from pathlib import Path

from bigain.classify import load_results


def export(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (
        "report.md",
        "summary.json",
        "speed.json",
        "sweep_config.json",
        "fid_tests.json",
        "accuracy_vs_speedup.png",
        "fid_vs_speedup.png",
    ):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    rows = []
    for folder in sorted((src / "classify").glob("*")) + [src / "classify-rest"]:
        for r in load_results(folder).values():
            if "prediction" in r and r.get("error") is None:
                rows.append((folder.name, r["id"], r["label"], r["prediction"]))
        if (folder / "summary.json").is_file():
            (dst / "classify").mkdir(exist_ok=True)
            shutil.copy2(folder / "summary.json", dst / "classify" / f"{folder.name}.json")
    with gzip.open(dst / "predictions.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "id", "label", "prediction"])
        w.writerows(rows)
    for folder in sorted((src / "generate").glob("*")):
        (dst / "grids").mkdir(exist_ok=True)
        if (folder / "grid.png").is_file():
            shutil.copy2(folder / "grid.png", dst / "grids" / f"{folder.name}.png")
        if (folder / "metrics.json").is_file():
            shutil.copy2(folder / "metrics.json", dst / "grids" / f"{folder.name}.metrics.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    a = p.parse_args()
    export(a.src, a.dst)
    print(f"exported {a.src} -> {a.dst}")


if __name__ == "__main__":
    main()
