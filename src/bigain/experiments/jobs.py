"""The jobs of a sweep: classify and generate per setting (resumable run folders), speed, FLOPs.

Every job writes its own run folder under the sweep folder (``classify/LABEL``,
``generate/LABEL`` for sample seed 0 and ``generate/LABEL-seedS`` for the others), through the
classifier's and the generator's own resumable runners, so a killed or time-boxed sweep continues
where it stopped when the same command runs again, and ``worker=(i, n)`` lets n processes share
the jobs. One failing setting is logged to ``failures.jsonl`` and does not stop the others; the
sweep then ends with :class:`SweepFailed` (exit status 1) naming the failed jobs, and a later run
in which a job succeeds removes that job's failure records.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from .grid import Setting, default_settings, generation_folders, job_list, worker_share

FAILURES_FILE = "failures.jsonl"


class SweepFailed(RuntimeError):
    """Some jobs of a sweep failed (each is in failures.jsonl); the others finished."""


def interleaved_speed(
    bundle: Any,
    settings: list[Setting],
    batch_size: int,
    dtype: str = "fp32",
    repeats: int = 5,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Median denoiser forward time per setting, round-robin in one process (side by side).
    `progress` shows a bar over the (repeats + 1) x settings forwards (minutes on a CPU)."""
    from tqdm.auto import tqdm

    import bigain

    from ..bench.timing import sync_fn
    from ..precision import autocast

    device = next(bundle.denoiser.parameters()).device
    c, h, w = bundle.sample_shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, c, h, w, generator=g).to(device)
    t = torch.randint(25, 975, (batch_size,), generator=g).to(device)
    y = torch.randint(0, bundle.num_classes, (batch_size,), generator=g).to(device)
    times: dict[str, list[float]] = {s.label: [] for s in settings}
    sync = sync_fn(device)
    bar = tqdm(total=(repeats + 1) * len(settings), desc="speed", unit="forward", disable=not progress)
    with bar, torch.no_grad(), autocast(device, dtype):
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
                bar.update(1)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    base = med.get("none", next(iter(med.values())))
    return {k: {"forward_s": v, "rows_per_s": batch_size / v, "speedup": base / v} for k, v in med.items()}


def count_setting_flops(bundle: Any, settings: list[Setting]) -> dict[str, float | None]:
    """FLOPs of one denoiser forward on one sample per setting (None where counting fails)."""
    from ..bench import count_flops

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


def record_speed(
    out_dir: Path, speed: dict[str, dict[str, float]], bundle: Any, batch_size: int, dtype: str
) -> None:
    """Merge one device's interleaved timings into speed.json (one entry per device kind)."""
    from .. import runs

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
    runs.write_json(path, allspeed)


def _cpu_name() -> str:
    from ..bench.timing import machine_info

    info = machine_info()
    return f"{info['cpu']}, {info['cpu_count']} cores"


def can_generate(bundle: Any) -> bool:
    """The sweep's generation runner samples in the denoiser's own space: pixel-space models only."""
    return "vae" not in bundle.extras and "encode" not in bundle.extras


def load_inputs(model: Any, data: Any, device: str, dtype: str) -> tuple[Any, Any]:
    """(bundle, dataset) from names (``builtin:...``, folders, hub ids) or ready objects.

    A text-conditional pipeline folder (e.g. Stable Diffusion) gets one prompt per class of the
    data set; a latent model gets its VAE for encoding the test images.
    """
    from ..classify.cli import load_model_for
    from ..classify.datasets import load_dataset

    dataset = load_dataset(data) if isinstance(data, str) else data
    bundle = load_model_for(model, dataset, device, dtype) if isinstance(model, str) else model
    return bundle, dataset


def run_sweep(
    model: Any = "builtin:fashion-dit",
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
    *,
    data: Any = "builtin:fashion-mnist",
    seeds: tuple[int, ...] = (0,),
    fid_features: str = "auto",
    fid_reference: str | None = None,
    fid_boot: int = 1000,
) -> dict[str, Any]:
    """Run (this worker's share of) a sweep's jobs, then measure speed and write the report.

    `model` is a name (``builtin:fashion-dit``, a diffusers folder such as a Stable Diffusion
    checkpoint, a hub id) or a ready `DiffusionBundle`; `data` a data-set name
    (``builtin:fashion-mnist``, an ImageNet-style folder of class folders, ...) or a
    `ClassificationDataset`. ``worker=(i, n)`` takes jobs i, i+n, ...; every job's run folder
    resumes. ``phases`` picks among classify, generate, speed and report. ``seeds`` are the sample
    seeds of the generation jobs. Generation needs a pixel-space model (the samples are scored
    with `fid_features`: ``fashion-cnn`` on Fashion-MNIST, else ``inception`` against
    `fid_reference`, a `FeatureStats` file).
    """
    from .. import runs
    from ..classify.runner import run_classification
    from ..generate import SamplerConfig, balanced_labels, generate_run
    from ..runs.preflight import check_method_on_model
    from .checks import PHASES, check_settings, check_work
    from .grid import check_grid, infer_baselines

    start = time.time()
    deadline = None if deadline_minutes is None else start + 60 * deadline_minutes
    if settings is not None and not settings:
        raise ValueError("settings is empty: nothing to run (pass None for the default grid)")
    bad = sorted(set(phases) - set(PHASES))
    if bad or not phases:
        raise ValueError(f"phases={tuple(phases)!r}: expected a non-empty subset of {PHASES}")
    settings = infer_baselines(settings or default_settings())
    check_grid(settings)
    check_settings(settings)  # every setting's options, before anything is loaded or written
    check_work(tuple(phases), images, gen, tuple(seeds))
    SamplerConfig(
        "ddim", steps, guidance, seeds[0], gen_batch, dtype
    )  # raises for a bad steps/guidance/dtype
    out_dir = runs.check_out_dir(out)
    bundle, dataset = load_inputs(model, data, device, dtype)
    for s in settings:  # one forward per setting on the loaded model: a misfit fails before any write
        try:
            check_method_on_model(bundle, s.method, s.options)
        except ValueError as e:
            raise ValueError(f"setting {s.label}: {e}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    model_name = model if isinstance(model, str) else getattr(bundle, "name", "bundle")
    data_name = data if isinstance(data, str) else getattr(dataset, "root", type(dataset).__name__)
    if {"classify", "generate"} & set(phases):  # only runs that produce results describe them
        runs.write_json(
            out_dir / "sweep_config.json",
            {
                "model": model_name,
                "data": data_name,
                "images": images,
                "gen": gen,
                "seeds": list(seeds),
                "steps": steps,
                "guidance": guidance,
                "dtype": dtype,
                "settings": [vars(s) for s in settings],
            },
        )
    labels = balanced_labels(bundle.num_classes, gen)
    todo = worker_share(job_list(settings, phases, seeds), worker)
    if not can_generate(bundle) and any(p == "generate" for p, _, _ in todo):
        print(
            "[sweep] generation skipped: this is a latent model (sample it with bigain.generate.run_pipeline)"
        )
        todo = [j for j in todo if j[0] != "generate"]
    failed: list[str] = []
    for phase, s, seed in todo:
        if deadline is not None and time.time() >= deadline:
            print("[sweep] deadline reached; rerun the same command to finish", flush=True)
            break
        tag = f"{phase} {s.label}" + (f" seed {seed}" if phase == "generate" else "")
        print(f"[sweep] {tag}", flush=True)
        t_job = time.time()
        try:
            if phase == "classify":
                run_classification(
                    bundle,
                    dataset,
                    out_dir / "classify" / s.label,
                    limit=images,
                    method=s.method,
                    method_options=s.options,
                    batch_size=batch_size,
                    dtype=dtype,
                    pattern=s.pattern,
                    progress=progress,
                    model_name=model_name,
                    data_name=data_name,
                    images_per_group=images_per_group,
                )
            else:
                folder = out_dir / "generate" / generation_folders(s.label, (seed,))[seed]
                scored = folder / "metrics.json"
                if scored.is_file() and json.loads(scored.read_text()).get("complete"):
                    # scored and complete: a folder brought back without its PNGs is not redone
                    print(f"[sweep] {tag}: already complete", flush=True)
                    clear_failures(out_dir, phase, s.label, seed)
                    continue
                generate_run(
                    bundle,
                    folder,
                    labels,
                    s.method,
                    s.options,
                    SamplerConfig("ddim", steps, guidance, seed, gen_batch, dtype),
                    progress=progress,
                )
        except Exception as e:  # one failing setting must not cost the others (the report shows it missing)
            failed.append(_failed(out_dir, phase, s.label, seed, e))
        else:
            clear_failures(out_dir, phase, s.label, seed)
        print(f"[sweep] {tag} ended after {time.time() - t_job:.1f} s", flush=True)
    timed = [s for s in settings if s.pattern == "per-sample"]
    if "speed" in phases:
        rows = speed_batch or batch_size
        print(f"[sweep] speed: {len(timed)} settings, {rows} rows per forward", flush=True)
        try:
            speed = interleaved_speed(bundle, timed, rows, dtype, progress=progress)
            record_speed(out_dir, speed, bundle, rows, dtype)
        except Exception as e:  # keep going: the report still has accuracy and FID
            failed.append(_failed(out_dir, "speed", "*", 0, e))
        else:
            clear_failures(out_dir, "speed", "*", 0)
    if "report" not in phases:
        _raise_failed(out_dir, failed, len(todo))
        return {"seconds": time.time() - start}
    print("[sweep] report: FLOPs, sample scores and paired tests", flush=True)
    from .report import build_report

    report = build_report(
        out_dir,
        settings,
        count_setting_flops(bundle, timed),
        seeds=seeds,
        data=data_name,
        fid_features=fid_features,
        fid_reference=fid_reference,
        fid_boot=fid_boot,
        device=device,
    )
    report["seconds"] = time.time() - start
    runs.write_json(out_dir / "summary.json", report, nonfinite="null")
    _raise_failed(out_dir, failed, len(todo))
    return report


def _failed(out_dir: Path, phase: str, label: str, seed: int, e: BaseException) -> str:
    """Record a failed job in failures.jsonl (traceback included) and say so in one line."""
    from .. import runs

    msg = " ".join(f"{type(e).__name__}: {e}".split())
    tag = f"{phase} {label}" + (f" seed {seed}" if phase == "generate" else "")
    print(f"[sweep] {tag} failed: {msg}", file=sys.stderr, flush=True)
    if os.environ.get("BIGAIN_DEBUG", "").strip().lower() not in ("", "0", "false", "no"):
        traceback.print_exc()
    record = {
        "phase": phase,
        "setting": label,
        "seed": seed,
        "error": msg,
        "traceback": traceback.format_exc(),
    }
    with runs.RecordWriter(out_dir / FAILURES_FILE, required=("phase", "setting")) as w:
        w.append(runs.strict_json(record, nonfinite="null"))
    return f"{tag} ({msg[:200]})"


def clear_failures(out_dir: Path, phase: str, label: str, seed: int) -> None:
    """Drop the failure records of a job that has now succeeded (the file goes when it is empty)."""
    from .. import runs

    path = Path(out_dir) / FAILURES_FILE
    if not path.is_file():
        return
    records = runs.read_records(path, ("phase", "setting"))[0]
    keep = [
        r for r in records if not (r["phase"] == phase and r["setting"] == label and r.get("seed", 0) == seed)
    ]
    if len(keep) == len(records):
        return
    if keep:
        runs.atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep))
    else:
        path.unlink(missing_ok=True)


def _raise_failed(out_dir: Path, failed: list[str], jobs: int) -> None:
    if failed:
        shown = "; ".join(failed[:3]) + (f"; and {len(failed) - 3} more" if len(failed) > 3 else "")
        raise SweepFailed(
            f"{len(failed)} sweep job(s) failed: {shown}. Tracebacks in {Path(out_dir) / FAILURES_FILE}; "
            "fix the cause and rerun the same command (finished jobs are kept)"
        )
