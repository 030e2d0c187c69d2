"""Generation through a user's diffusers pipeline: SD text-to-image and DiT class-to-image in
memory, and text-to-video pipelines (Wan, ...) into a resumable run folder.

A video run folder is a :mod:`bigain.runs` store: ``config.json`` (the settings, checked on
resume), ``manifest.jsonl`` (one fsynced record per finished sample), ``samples/000000.mp4`` (or
``samples/000000/frame_0000.png``, ... without PyAV), ``sheets/000000.png`` (8 evenly spaced
frames of the sample in a row), ``contact_sheet.png`` (those rows stacked) and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .run import NonFiniteImageError, generation_options, read_manifest

VIDEO_IDENTITY = ("model", "method", "options", "prompts", "num_samples", "call", "seed", "fps")
SEED_LIMIT = 2**63


def _call_params(pipe: Any) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(pipe.__call__).parameters)
    except (TypeError, ValueError):
        return {}


def is_video_pipeline(pipe: Any) -> bool:
    """Whether ``pipe`` makes videos: its call takes ``num_frames`` (its output then has ``frames``)."""
    return "num_frames" in _call_params(pipe)


def pipeline_defaults(pipe: Any) -> dict[str, Any]:
    """The paper's protocol: SD Euler 50 steps CFG 7.5; DiT DDIM 50 steps CFG 4.0. A video pipeline
    keeps its own scheduler (``None``) and guidance."""
    if is_video_pipeline(pipe):
        params = _call_params(pipe)
        out: dict[str, Any] = {"num_inference_steps": 50}
        g = params.get("guidance_scale")
        if g is not None and g.default is not inspect.Parameter.empty:
            out["guidance_scale"] = g.default
        return {**out, "scheduler": None}
    if hasattr(pipe, "transformer") and type(pipe.transformer).__name__ == "DiTTransformer2DModel":
        return {"num_inference_steps": 50, "guidance_scale": 4.0, "scheduler": "ddim"}
    return {"num_inference_steps": 50, "guidance_scale": 7.5, "scheduler": "euler"}


def _set_scheduler(pipe: Any, name: str | None) -> None:
    if name is None:
        return
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm": DPMSolverMultistepScheduler}[name]
    if not isinstance(pipe.scheduler, cls):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)


def _compression(pipe: Any, method: str, options: dict[str, Any], model: str | None = None):
    """``bigain.compressed`` around the pipeline (nothing for ``none``, so any pipeline runs
    uncompressed); a model bigain cannot patch is one ValueError naming the method and the model."""
    import bigain

    if method in (None, "", "none") and not options:
        return contextlib.nullcontext()
    den = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None) or pipe
    name = model or getattr(pipe, "name_or_path", None) or type(pipe).__name__
    try:
        bigain.apply(pipe, method, **options)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"method {method!r} cannot be applied to model {name} ({type(den).__name__}): {e}"
        ) from e

    @contextlib.contextmanager
    def patched():
        try:
            yield
        finally:
            bigain.remove(pipe)

    return patched()


def run_pipeline(
    pipe: Any,
    conditions: list[Any],
    method: str = "none",
    method_options: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 4,
    *,
    out_dir: str | os.PathLike | None = None,
    num: int | None = None,
    fps: int = 16,
    model: str | None = None,
    progress: bool = True,
    **call_kwargs: Any,
) -> Any:
    """Call `pipe` on prompts (SD, video) or class ids (DiT) under a bigain method.

    Image pipelines: returns PIL images (or arrays with ``output_type="np"``); batch b uses a
    generator seeded with seed + b, as in the paper's generation scripts.

    Video pipelines (their call takes ``num_frames``): sample i is its own call with prompt
    ``conditions[i % len(conditions)]`` and a generator seeded with seed + i, for ``num`` samples
    (default: one per prompt). Without ``out_dir`` returns the videos as (F, H, W, 3) float arrays in
    [0, 1]. With ``out_dir`` writes a resumable run folder (see the module docstring; rerunning with
    the same folder skips finished samples) and returns its summary (a dict). Settings are checked
    against the pipeline, and the method is applied, before anything is written.
    """
    opts = generation_options(method, method_options)
    if is_video_pipeline(pipe):
        if out_dir is not None:
            return _video_run(
                pipe, conditions, out_dir, method, opts, seed, num, fps, model, progress, call_kwargs
            )
        prompts, count, kwargs = _video_settings(pipe, conditions, num, seed, fps, call_kwargs)
        videos = []
        with _compression(pipe, method, opts, model):
            for i in range(count):
                videos.append(_generate_video(pipe, prompts[i % len(prompts)], seed + i, kwargs))
        return videos
    if out_dir is not None:
        raise ValueError(
            f"out_dir runs are for video pipelines (a call taking num_frames); {type(pipe).__name__} makes "
            "images: call run_pipeline without out_dir"
        )
    defaults = pipeline_defaults(pipe)
    sched = call_kwargs.pop("scheduler", defaults.pop("scheduler"))
    _set_scheduler(pipe, sched)
    kwargs = {**defaults, **call_kwargs}
    is_dit = (
        "guidance_scale" in kwargs and hasattr(pipe, "transformer") and not isinstance(conditions[0], str)
    )
    images: list[Any] = []
    with _compression(pipe, method, opts, model):
        for b, start in enumerate(range(0, len(conditions), batch_size)):
            part = conditions[start : start + batch_size]
            gen = torch.Generator().manual_seed(seed + b)
            if is_dit:
                out = pipe(class_labels=part, generator=gen, **kwargs)
            else:
                out = pipe(prompt=part, generator=gen, **kwargs)
            images.extend(out.images)
    return images


# --------------------------------------------------------------------------------------------
# video
# --------------------------------------------------------------------------------------------
def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is out of range: expected an integer >= 1")
    return value


def _spatial_multiple(pipe: Any) -> int:
    vae = int(getattr(pipe, "vae_scale_factor_spatial", 0) or getattr(pipe, "vae_scale_factor", 8) or 8)
    den = getattr(pipe, "transformer", None)
    patch = getattr(getattr(den, "config", None), "patch_size", 1) or 1
    patch_hw = int(patch[-1]) if isinstance(patch, (tuple, list)) else int(patch)
    return vae * patch_hw


def _video_settings(
    pipe: Any, conditions: Any, num: int | None, seed: Any, fps: Any, call_kwargs: dict[str, Any]
) -> tuple[list[str], int, dict[str, Any]]:
    """(prompts, number of samples, call settings with the pipeline's defaults filled in), each
    checked against the pipeline; a ValueError names the setting, its value and what is allowed."""
    prompts = [conditions] if isinstance(conditions, str) else list(conditions or [])
    if not prompts:
        raise ValueError("prompts is empty: nothing to generate (expected at least one prompt)")
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"prompts {bad[:3]!r}: expected non-empty strings")
    count = len(prompts) if num is None else _positive("num", num)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT - count:
        raise ValueError(f"seed={seed!r} is out of range: expected an integer in [0, 2**63 - num)")
    _positive("fps", fps)
    params = _call_params(pipe)
    for key in ("output_type", "generator", "prompt", "return_dict"):
        if key in call_kwargs:
            raise ValueError(f"{key} is set by run_pipeline for video pipelines; leave it out")
    unknown = sorted(k for k in call_kwargs if k not in params)
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(f"{type(pipe).__name__} does not take {unknown}")
    defaults = {k: v for k, v in pipeline_defaults(pipe).items() if k != "scheduler"}
    for key in ("num_frames", "height", "width"):
        p = params.get(key)
        if p is not None and p.default is not inspect.Parameter.empty and p.default is not None:
            defaults[key] = p.default
    kwargs = {**defaults, **call_kwargs}
    _positive("steps (num_inference_steps)", kwargs.get("num_inference_steps", 1))
    frames = _positive("frames (num_frames)", kwargs.get("num_frames", 1))
    temporal = int(getattr(pipe, "vae_scale_factor_temporal", 1) or 1)
    if (frames - 1) % temporal:
        lower = (frames - 1) // temporal * temporal + 1
        raise ValueError(
            f"frames={frames} does not fit {type(pipe).__name__}: it makes {temporal}k + 1 frames "
            f"(e.g. {lower} or {lower + temporal})"
        )
    multiple = _spatial_multiple(pipe)
    for key in ("height", "width"):
        if key in kwargs:
            v = _positive(key, kwargs[key])
            if v % multiple:
                raise ValueError(
                    f"{key}={v} does not fit {type(pipe).__name__}: expected a multiple of {multiple} "
                    f"(e.g. {max(multiple, v // multiple * multiple)})"
                )
    g = kwargs.get("guidance_scale")
    if g is not None and (not isinstance(g, (int, float)) or not np.isfinite(g) or g < 0):
        raise ValueError(f"guidance={g!r} is out of range: expected a number >= 0")
    return prompts, count, kwargs


def _generate_video(pipe: Any, prompt: str, seed: int, kwargs: dict[str, Any]) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    out = pipe(prompt=prompt, generator=gen, output_type="np", **kwargs)
    frames = out.frames if hasattr(out, "frames") else out[0]
    return np.asarray(frames[0], dtype=np.float32)


@contextlib.contextmanager
def _step_bar(pipe: Any, progress: bool):
    """The pipeline's own per-step bar, under the bar over samples (or off); restored afterwards."""
    had = hasattr(pipe, "_progress_bar_config")
    old = dict(getattr(pipe, "_progress_bar_config", {}) or {})
    if hasattr(pipe, "set_progress_bar_config"):
        if progress:
            pipe.set_progress_bar_config(**{**old, "leave": False, "position": 1, "desc": "steps"})
        else:
            pipe.set_progress_bar_config(**{**old, "disable": True})
    try:
        yield
    finally:
        if had:
            pipe._progress_bar_config = old
        elif hasattr(pipe, "_progress_bar_config"):
            del pipe._progress_bar_config


def _sample_done(out: Path, rec: dict[str, Any]) -> bool:
    sheet = rec.get("sheet")
    return (out / rec["file"]).exists() and isinstance(sheet, str) and (out / sheet).is_file()


def _video_run(
    pipe: Any,
    conditions: Any,
    out_dir: str | os.PathLike,
    method: str,
    opts: dict[str, Any],
    seed: Any,
    num: int | None,
    fps: Any,
    model: str | None,
    progress: bool,
    call_kwargs: dict[str, Any],
) -> dict[str, Any]:
    from PIL import Image
    from tqdm.auto import tqdm

    from .. import runs
    from ..runs.preflight import normalise_options
    from .io import MANIFEST_KEYS
    from .video import (
        MP4_HINT,
        contact_row,
        contact_sheet,
        mp4_available,
        save_png,
        write_mp4,
        write_png_frames,
    )

    prompts, count, kwargs = _video_settings(pipe, conditions, num, seed, fps, call_kwargs)
    out = runs.check_out_dir(out_dir)
    name = model or getattr(pipe, "name_or_path", None) or type(pipe).__name__
    config = {
        "model": str(name),
        "pipeline": type(pipe).__name__,
        "method": method,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        "method_config": normalise_options(method, opts),
        "prompts": prompts,
        "num_samples": count,
        "call": kwargs,
        "seed": seed,
        "fps": fps,
    }

    def identity(key: str, value: Any, cfg: dict[str, Any]) -> Any:
        if key != "options":
            return value
        try:
            return normalise_options(cfg.get("method"), value or {})
        except (ValueError, TypeError):
            return value

    runs.check_config(out, config, VIDEO_IDENTITY, normalise=identity, what="video generation run")
    manifest = out / "manifest.jsonl"
    t_start = time.perf_counter()
    # a model bigain cannot patch fails here, before any write
    with _compression(pipe, method, opts, str(name)):
        use_mp4 = mp4_available()
        if not use_mp4:
            warnings.warn(
                f"PyAV is not installed: writing PNG frames instead of MP4 ({MP4_HINT})", stacklevel=3
            )
        out.mkdir(parents=True, exist_ok=True)
        with runs.lock(out / ".lock", what=str(out)):
            runs.write_config(out, config, VIDEO_IDENTITY, normalise=identity, what="video generation run")
            (out / "samples").mkdir(exist_ok=True)
            (out / "sheets").mkdir(exist_ok=True)
            done = {i for i, r in read_manifest(manifest).items() if i < count and _sample_done(out, r)}
            todo = [i for i in range(count) if i not in done]
            failed = 0
            bar = tqdm(
                total=count,
                initial=len(done),
                desc=f"generating {count} videos",
                unit="video",
                disable=not progress,
                position=0,
            )
            with _step_bar(pipe, progress), runs.RecordWriter(manifest, MANIFEST_KEYS) as writer:
                for i in todo:
                    t0 = time.perf_counter()
                    prompt = prompts[i % len(prompts)]
                    rec = {"index": i, "prompt": prompt, "seed": seed + i}
                    frames = _generate_video(pipe, prompt, seed + i, kwargs)
                    if not np.isfinite(frames).all():
                        failed += 1
                        writer.append({**rec, "file": None, "error": "NaN/inf pixels in the sampled video"})
                        bar.update(1)
                        continue
                    if use_mp4:
                        file = f"samples/{i:06d}.mp4"
                        write_mp4(frames, out / file, fps)
                    else:
                        file = f"samples/{i:06d}"
                        write_png_frames(frames, out / file)
                    sheet = f"sheets/{i:06d}.png"
                    save_png(contact_row(frames), out / sheet)
                    writer.append(
                        {
                            **rec,
                            "file": file,
                            "sheet": sheet,
                            "frames": int(frames.shape[0]),
                            "size": [int(frames.shape[1]), int(frames.shape[2])],
                            "seconds": round(time.perf_counter() - t0, 3),
                        }
                    )
                    bar.update(1)
            bar.close()
            records = read_manifest(manifest)
            finished = [records[i] for i in range(count) if i in records and _sample_done(out, records[i])]
            if finished:
                rows = []
                for r in finished:
                    with Image.open(out / r["sheet"]) as im:
                        rows.append(im.convert("RGB"))
                save_png(contact_sheet(rows), out / "contact_sheet.png")
            summary = {
                "out": str(out),
                "model": config["model"],
                "pipeline": config["pipeline"],
                "method": method,
                "options": config["options"],
                "num_samples": count,
                "finished": len(finished),
                "generated_now": len(todo) - failed,
                "resumed": len(done),
                "failed": failed,
                "files": [r["file"] for r in finished],
                "contact_sheet": "contact_sheet.png" if finished else None,
                "format": "mp4" if use_mp4 else "png",
                "seconds": round(time.perf_counter() - t_start, 3),
            }
            runs.write_json(out / "summary.json", summary)
    if failed:
        raise NonFiniteImageError(
            f"{failed} of {count} videos have NaN/inf pixels (recorded as failed in {manifest}; "
            "a rerun tries them again)"
        )
    return summary
