"""Resumable generation runs into a folder: PNGs, manifest.jsonl, grid.png, config.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..models.bundle import DiffusionBundle
from .io import make_grid, save_images
from .sampler import SamplerConfig, sample


def generation_options(method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The paper's generation defaults per method: BiGain-TD uses the linear alpha schedule 0.8 -> 1.2."""
    opts = dict(options or {})
    if method == "bigain-td" and "alpha" not in opts and "alpha_schedule" not in opts:
        opts["alpha_schedule"] = (0.8, 1.2)
    return opts


def balanced_labels(num_classes: int, count: int) -> list[int]:
    """count labels cycling over the classes (0, 1, ..., C-1, 0, 1, ...)."""
    return [i % num_classes for i in range(count)]


def read_manifest(manifest: str | os.PathLike) -> dict[int, dict]:
    """A run's manifest records by image index (a missing file is an empty run)."""
    manifest = Path(manifest)
    done: dict[int, dict] = {}
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write: regenerate that image
            done[int(rec["index"])] = rec
    return done


def generate_run(
    bundle: DiffusionBundle,
    out_dir: str | os.PathLike,
    labels: list[int],
    method: str = "none",
    method_options: dict[str, Any] | None = None,
    sampler: SamplerConfig | None = None,
    chunk: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Generate one image per label (resuming a partial run in `out_dir`); returns all images (N, C, H, W)."""
    import bigain

    cfg = sampler or SamplerConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = generation_options(method, method_options)
    config = {
        "model": bundle.name,
        "method": method,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "sampler": vars(cfg),
        "num_images": len(labels),
    }
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if {k: old.get(k) for k in config} != json.loads(json.dumps(config)):
            raise ValueError(
                f"{out} holds a generation run with another configuration; use a new --out folder"
            )
    else:
        cfg_path.write_text(json.dumps(config, indent=2))
    manifest = out / "manifest.jsonl"
    done = read_manifest(manifest)
    todo = [i for i in range(len(labels)) if i not in done]
    step = chunk or cfg.batch_size
    with bigain.compressed(bundle, method, **opts):
        for s in range(0, len(todo), step):
            part = todo[s : s + step]
            # indices are contiguous within a chunk unless a resume left gaps: sample them one range at a time
            runs: list[list[int]] = []
            for i in part:
                if runs and runs[-1][-1] + 1 == i:
                    runs[-1].append(i)
                else:
                    runs.append([i])
            for run in runs:
                imgs = sample(bundle, [labels[i] for i in run], cfg, progress=progress, first_index=run[0])
                save_images(imgs, out, [{"index": i, "label": int(labels[i])} for i in run])
    done = read_manifest(manifest)
    images = torch.stack([read_png(out / done[i]["file"]) for i in range(len(labels))])
    make_grid(images[: min(100, len(images))], nrow=10, scale=2).save(out / "grid.png")
    return images


def read_png(path: str | os.PathLike) -> torch.Tensor:
    """A saved sample back as (C, H, W) float in [-1, 1] (what file-based metrics see)."""
    arr = np.asarray(Image.open(path))
    x = torch.from_numpy(arr.copy()).float().div(127.5).sub(1.0)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)
