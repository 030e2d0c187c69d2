"""Resumable generation runs into a folder: PNGs, manifest.jsonl, grid.png, config.json.

The folder is a :mod:`bigain.runs` store: one writer at a time (``.lock``), ``config.json``
written atomically and checked on resume, ``manifest.jsonl`` appended one fsynced record per
image. A resume regenerates every image without a valid record or whose PNG is missing.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import runs
from ..models.bundle import DiffusionBundle
from ..runs.preflight import check_method_on_model, normalise_options
from .io import MANIFEST_KEYS, make_grid, save_images
from .sampler import SamplerConfig, sample

LOCK_FILE = ".lock"
IDENTITY_KEYS = ("model", "method", "options", "sampler", "num_images")


class NonFiniteImageError(RuntimeError):
    """Sampling gave images with NaN/inf pixels (recorded as failed; a resume tries them again)."""


def generation_options(method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The paper's generation defaults per method: BiGain-TD uses the linear alpha schedule 0.8 -> 1.2."""
    opts = dict(options or {})
    if method == "bigain-td" and "alpha" not in opts and "alpha_schedule" not in opts:
        opts["alpha_schedule"] = (0.8, 1.2)
    return opts


def balanced_labels(num_classes: int, count: int) -> list[int]:
    """count labels cycling over the classes (0, 1, ..., C-1, 0, 1, ...)."""
    return [i % num_classes for i in range(count)]


def _valid_record(rec: dict) -> bool:
    return (
        isinstance(rec["index"], int)
        and rec["index"] >= 0
        and (rec.get("error") or isinstance(rec["file"], str))
    )


def read_manifest(manifest: str | os.PathLike, *, include_failed: bool = False) -> dict[int, dict]:
    """A run's manifest records by image index (a missing file is an empty run).

    A torn last line is dropped; a line that is not a record is skipped with a warning. Records of
    failed images (``error`` set) are left out unless ``include_failed``; a later record of an index
    replaces an earlier one (a failed image retried).
    """
    records, _, _ = runs.read_records(manifest, MANIFEST_KEYS, _valid_record)
    done: dict[int, dict] = {}
    for rec in records:
        if include_failed or not rec.get("error"):
            done[int(rec["index"])] = rec
    return done


def _normalise_identity(key: str, value: Any, config: dict[str, Any]) -> Any:
    if key != "options":
        return value
    try:
        return normalise_options(config.get("method"), value or {})
    except (ValueError, TypeError):
        return value


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
    """Generate one image per label (resuming a partial run in `out_dir`); returns all images (N, C, H, W).

    Nothing is written until the settings are checked: labels, the method's options, and one forward
    of the method on the loaded model. Another process writing the same folder is refused
    (:class:`bigain.runs.RunLockedError`); a folder of another run is refused naming each differing
    setting (:class:`bigain.runs.ConfigMismatchError`). Images with NaN/inf pixels are recorded as
    failed and :class:`NonFiniteImageError` is raised at the end (a rerun tries them again).
    """
    cfg = sampler or SamplerConfig()
    labels = [int(v) for v in labels]
    if not labels:
        raise ValueError("labels is empty: nothing to generate (expected at least one label)")
    bad = [v for v in labels if not 0 <= v < bundle.num_classes]
    if bad:
        raise ValueError(
            f"labels {bad[:5]} are out of range: the model has classes 0..{bundle.num_classes - 1}"
        )
    out = runs.check_out_dir(out_dir)
    opts = generation_options(method, method_options)
    config = {
        "model": bundle.name,
        "method": method,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "method_config": normalise_options(method, opts),
        "sampler": vars(cfg),
        "num_images": len(labels),
    }

    def nothing_finished() -> bool:  # a run that failed before its first image may take new settings
        return not read_manifest(out / "manifest.jsonl")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the replacement is reported once, when it is written
        runs.check_config(
            out,
            config,
            IDENTITY_KEYS,
            normalise=_normalise_identity,
            what="generation run",
            replaceable=nothing_finished,
        )
    check_method_on_model(bundle, method, opts)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    with runs.lock(out / LOCK_FILE, what=str(out)):
        runs.write_config(
            out,
            config,
            IDENTITY_KEYS,
            normalise=_normalise_identity,
            what="generation run",
            replaceable=nothing_finished,
        )
        done = {i for i, r in read_manifest(manifest).items() if (out / r["file"]).is_file()}
        todo = [i for i in range(len(labels)) if i not in done]
        step = chunk or cfg.batch_size
        failed = 0
        import bigain

        with bigain.compressed(bundle, method, **opts):
            for s in range(0, len(todo), step):
                part = todo[s : s + step]
                # indices are contiguous within a chunk unless a resume left gaps: one range at a time
                spans: list[list[int]] = []
                for i in part:
                    if spans and spans[-1][-1] + 1 == i:
                        spans[-1].append(i)
                    else:
                        spans.append([i])
                for span in spans:
                    imgs = sample(
                        bundle, [labels[i] for i in span], cfg, progress=progress, first_index=span[0]
                    )
                    finite = torch.isfinite(imgs.flatten(1)).all(dim=1).tolist()
                    if len(span) > 1 and not any(finite):
                        raise NonFiniteImageError(
                            f"all {len(span)} images of a batch have NaN/inf pixels; check the method "
                            "options and the dtype (fp16 overflow?)"
                        )
                    failed += finite.count(False)
                    save_images(imgs, out, [{"index": i, "label": labels[i]} for i in span], ok=finite)
        if failed:
            raise NonFiniteImageError(
                f"{failed} of {len(labels)} images have NaN/inf pixels (recorded as failed in "
                f"{manifest}; a rerun tries them again)"
            )
        done = read_manifest(manifest)
        images = torch.stack([read_png(out / done[i]["file"]) for i in range(len(labels))])
        make_grid(images[: min(100, len(images))], nrow=10, scale=2).save(out / "grid.png")
    return images


def read_png(path: str | os.PathLike) -> torch.Tensor:
    """A saved sample back as (C, H, W) float in [-1, 1] (what file-based metrics see)."""
    arr = np.asarray(Image.open(path))
    x = torch.from_numpy(arr.copy()).float().div(127.5).sub(1.0)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)
