"""Classification runs in a folder: resumable, shardable, multi-process.

Folder layout::

    config.json          what the run is (a resume with a different identity is an error)
    results.jsonl        one JSON record per image (merged, sorted by index, at the end)
    results.<tag>.jsonl  per-shard / per-rank record files while a split run is going on
    summary.json/.md     written by the process that finishes last (rank 0)

Records are appended, flushed and fsynced one at a time. A rerun reads every results file,
drops a truncated last line (a write cut by SIGKILL), and scores only the images not yet there.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..runs import ConfigMismatchError, RecordWriter, RunLockedError
from ..runs.preflight import check_method_on_model, normalise_options
from .datasets import ClassificationDataset
from .engine import DiffusionClassifier, NonFiniteError, image_key_from_id
from .pipeline import attach_vae, pixels_to_x0, to_pixels
from .schedule import calls_per_image
from .summary import summarize, summary_markdown

__all__ = [
    "ConfigMismatchError",
    "NonFiniteError",
    "RunLockedError",
    "load_results",
    "merge_results",
    "read_records",
    "run_classification",
]

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
SUMMARY_MD = "summary.md"
MERGE_LOCK = ".merge.lock"
CONFIG_VERSION = 1
# fields of config.json that decide the numbers; a resume must agree on all of them
IDENTITY_KEYS = (
    "version",
    "model",
    "data",
    "dataset_size",
    "class_names",
    "classes",
    "prompts",
    "method",
    "method_options",
    "n_samples",
    "to_keep",
    "loss",
    "n_trials",
    "seed",
    "dtype",
    "pattern",
    "subset",
)
RECORD_KEYS = ("id", "index")


# --------------------------------------------------------------------------------------------
# record files (the run store in bigain.runs does the writing; these are classify's views)
# --------------------------------------------------------------------------------------------
def read_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int, int]:
    """(records, bytes of the valid prefix, file size) of one results file; a torn last line is
    dropped and lines that are not records are skipped with a warning (see bigain.runs)."""
    return runs.read_records(path, RECORD_KEYS)


def _result_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("results*.jsonl") if p.is_file())


def load_results(out: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every record of a run folder (all shards' result files) by image id. A scored record wins
    over a failed one (an image retried after its file was fixed); otherwise the first is kept."""
    out = Path(out)
    by_id: dict[str, dict[str, Any]] = {}
    for p in _result_files(out):
        for r in read_records(p)[0]:
            key = str(r["id"])
            if key not in by_id or (by_id[key].get("error") and not r.get("error")):
                by_id[key] = r
    return by_id


def _owner_lock(out: Path, results_name: str) -> Path:
    return out / f".lock.{results_name}"


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def _normalise_identity(key: str, value: Any, config: dict[str, Any]) -> Any:
    """Method options compare with their defaults filled in (an explicit default is the same run)."""
    if key != "method_options":
        return value
    try:
        return normalise_options(config.get("method"), value or {})
    except (ValueError, TypeError):
        return value


def _nothing_finished(out: Path) -> bool:
    """No image of the folder has a scored record (a run that failed before its first result)."""
    return not any(not r.get("error") for r in load_results(out).values())


def _check_or_write_config(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    return runs.write_config(
        out,
        config,
        IDENTITY_KEYS,
        normalise=_normalise_identity,
        what="classification run",
        replaceable=lambda: _nothing_finished(out),
    )


# --------------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------------
def _dist_context(distributed: bool | None) -> tuple[int, int, bool]:
    """(rank, world size, whether we initialised the process group ourselves)."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if distributed is False or world <= 1:
        return 0, 1, False
    dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
    return dist.get_rank(), dist.get_world_size(), True


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# --------------------------------------------------------------------------------------------
# merging and summary
# --------------------------------------------------------------------------------------------
def merge_results(
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    *,
    multi_label: bool | None = None,
    expected: int | None = None,
) -> dict[str, Any] | None:
    """Merge every results file of a run folder into ``results.jsonl`` (sorted by index, no
    duplicates) and write ``summary.json``/``summary.md``. Part files whose writer has finished
    are removed. Returns the summary (None if a writer of ``results.jsonl`` itself is running)."""
    out = Path(out_dir)
    config = json.loads((out / CONFIG_FILE).read_text())
    class_names = list(class_names if class_names is not None else config["class_names"])
    multi_label = bool(config.get("multi_label", False)) if multi_label is None else multi_label
    expected = config.get("expected") if expected is None else expected
    with runs.lock(out / MERGE_LOCK, blocking=True):
        try:
            with runs.lock(_owner_lock(out, RESULTS_FILE)):
                records = sorted(load_results(out).values(), key=lambda r: r["index"])
                text = "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n" for r in records)
                runs.atomic_write(out / RESULTS_FILE, text)
        except RunLockedError:
            warnings.warn(f"{out}: another process is writing {RESULTS_FILE}; not merging now", stacklevel=2)
            return None
        for p in _result_files(out):
            if p.name == RESULTS_FILE:
                continue
            with contextlib.suppress(RunLockedError), runs.lock(_owner_lock(out, p.name)):
                p.unlink(missing_ok=True)
                _owner_lock(out, p.name).unlink(missing_ok=True)
        # the summary covers this run's images (a rerun with a smaller --limit keeps the other records)
        in_scope = [r for r in records if expected is None or r["index"] < expected]
        summary = summarize(in_scope, class_names, multi_label=multi_label, expected=expected)
        summary["model"], summary["data"], summary["method"] = (
            config.get("model"),
            config.get("data"),
            config.get("method"),
        )
        runs.write_json(out / SUMMARY_FILE, summary, nonfinite="null")
        runs.atomic_write(out / SUMMARY_MD, summary_markdown(summary, config, class_names))
    return summary


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _candidates(bundle: Any, dataset: ClassificationDataset) -> list[int]:
    """The model label of each data-set class."""
    ids = dataset.model_class_ids
    if ids is not None and len(set(ids)) == len(ids) and max(ids) < bundle.num_classes:
        return list(ids)
    if bundle.num_classes == dataset.num_classes:
        return list(range(dataset.num_classes))
    raise ValueError(
        f"the model has {bundle.num_classes} classes but the data set {dataset.name!r} has {dataset.num_classes} "
        "and gives no mapping to the model's labels (for a text-conditional pipeline, build the bundle "
        "from the data set's prompts)"
    )


def _results_name(shard: tuple[int, int], rank: int, world: int) -> str:
    tag = ""
    if shard[1] > 1:
        tag += f".shard{shard[0]}of{shard[1]}"
    if world > 1:
        tag += f".rank{rank}of{world}"
    return f"results{tag}.jsonl" if tag else RESULTS_FILE


def _label_json(label: Any) -> Any:
    return list(label) if isinstance(label, (tuple, list)) else int(label)


def run_classification(
    bundle: Any,
    dataset: ClassificationDataset,
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    shard: tuple[int, int] = (0, 1),
    method: str | None = None,
    method_options: dict[str, Any] | None = None,
    n_samples: Sequence[int] = (5, 20),
    to_keep: Sequence[int] = (5, 1),
    loss: str = "l2",
    n_trials: int = 1,
    batch_size: int = 32,
    dtype: str = "fp32",
    seed: int = 0,
    pattern: str = "per-sample",
    images_per_group: int | None = None,
    progress: bool = True,
    distributed: bool | None = None,
    model_name: str | None = None,
    data_name: str | None = None,
    subset: Sequence[int] | None = None,
    retry_failed: bool = True,
) -> dict[str, Any] | None:
    """Classify a data set into a run folder; resume if the folder already holds this run.

    Settings are checked before anything is written: the method and its options are tried on the
    loaded model (one forward), so a setting that does not fit leaves no folder behind. One process
    writes a results file at a time (a second one is refused with :class:`RunLockedError`).
    Images whose record holds an error (unreadable file, non-finite denoiser output) are tried
    again on resume unless ``retry_failed=False``. A group of images that all give a non-finite
    denoiser error stops the run with :class:`NonFiniteError`.

    ``shard=(i, n)`` scores images ``i, i+n, i+2n, ...`` of the first ``limit``. Under
    ``accelerate launch``/``torchrun`` (or an initialised torch.distributed group) the images are
    further split by rank; rank 0 merges the result files and writes the summary at the end.
    ``subset`` (dataset positions, e.g. a fixed 2,000-image ImageNet subset) restricts the run to
    those images, in that order, before ``limit`` and the shards apply.
    Returns the summary (None on ranks other than 0).
    """
    method_options = dict(method_options or {})
    i_shard, n_shard = int(shard[0]), int(shard[1])
    if n_shard < 1 or not 0 <= i_shard < n_shard:
        raise ValueError(f"shard={shard}: expected (i, n) with 0 <= i < n")
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit} must be >= 0")
    out = runs.check_out_dir(out_dir)  # nothing is written before the settings are checked
    full_size = len(dataset)
    subset_id = None
    if subset is not None:
        subset = [int(i) for i in subset]
        dataset = dataset.subset(subset)
        subset_id = hashlib.sha256(json.dumps(subset).encode()).hexdigest()[:16] + f"/{len(subset)}"
    rank, world, own_group = _dist_context(distributed)
    try:
        candidates = _candidates(bundle, dataset)
        attach_vae(bundle)
        clf = DiffusionClassifier(
            bundle,
            classes=candidates,
            n_samples=n_samples,
            to_keep=to_keep,
            loss=loss,
            batch_size=batch_size,
            dtype=dtype,
            seed=seed,
            pattern=pattern,
            n_trials=n_trials,
        )
        total = len(dataset) if limit is None else min(limit, len(dataset))
        method_name = None if method in (None, "none") else str(method)
        if not method_name and method_options:
            raise ValueError(f"method options {sorted(method_options)} given without a method")
        config = {
            "version": CONFIG_VERSION,
            "model": model_name or getattr(bundle, "name", type(bundle).__name__),
            "data": data_name or dataset.root or dataset.name,
            "dataset_size": full_size,
            "subset": subset_id,
            "class_names": list(dataset.class_names),
            "classes": candidates,
            "prompts": list(bundle.extras.get("prompts", [])) if hasattr(bundle, "extras") else [],
            "method": method_name or "none",
            "method_options": method_options if method_name else {},
            "method_config": normalise_options(method_name, method_options),
            "n_samples": list(clf.n_samples),
            "to_keep": list(clf.to_keep),
            "loss": loss,
            "n_trials": n_trials,
            "seed": seed,
            "dtype": str(dtype),
            "pattern": pattern,
            "multi_label": dataset.multi_label,
            "expected": total,
            "batch_size": batch_size,
            "calls_per_image": calls_per_image(len(candidates), clf.plan),
        }
        # a folder of another run is refused first; then the method is tried on the model; then we write
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the replacement is reported once, when it is written
            runs.check_config(
                out,
                config,
                IDENTITY_KEYS,
                normalise=_normalise_identity,
                what="classification run",
                replaceable=lambda: _nothing_finished(out),
            )
        check_method_on_model(bundle, method_name, method_options)
        out.mkdir(parents=True, exist_ok=True)
        results_name = _results_name((i_shard, n_shard), rank, world)
        with runs.lock(_owner_lock(out, results_name), what=f"{out} ({results_name})"):
            stored = _check_or_write_config(out, config)
            if rank == 0 and stored.get("expected") != total:  # a resume with another limit
                runs.write_json(out / CONFIG_FILE, {**stored, "expected": total})
            _barrier(world)

            mine = list(range(total))[i_shard::n_shard][rank::world]
            records = load_results(out)
            done = {k for k, r in records.items() if not (retry_failed and r.get("error"))}
            todo = [i for i in mine if str(dataset[i].id) not in done]
            rows_per_image = config["calls_per_image"]
            group = images_per_group or max(1, min(64, math.ceil(8 * batch_size / max(1, rows_per_image))))
            with RecordWriter(out / results_name, RECORD_KEYS) as writer:
                ctx = contextlib.nullcontext()
                if method_name:
                    import bigain

                    ctx = bigain.compressed(bundle, method_name, **method_options)
                with ctx:
                    _score(
                        clf,
                        bundle,
                        dataset,
                        todo,
                        len(mine),
                        group,
                        writer,
                        progress,
                        rank,
                        world,
                        rows_per_image,
                    )
        _barrier(world)
        summary = None
        if rank == 0:
            summary = merge_results(out, dataset.class_names, multi_label=dataset.multi_label, expected=total)
        _barrier(world)
        return summary
    finally:
        if own_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _score(
    clf: DiffusionClassifier,
    bundle: Any,
    dataset: ClassificationDataset,
    todo: list[int],
    n_mine: int,
    group: int,
    writer: RecordWriter,
    progress: bool,
    rank: int,
    world: int,
    rows_per_image: int,
) -> None:
    from tqdm.auto import tqdm

    desc = "classify" if world == 1 else f"classify[rank {rank}]"
    # Images finish a group at a time (a group shares its forwards). The bar advances by the share
    # of an image each forward completes, so its rate and ETA are right from the first forward
    # instead of jumping from "one image in a group's time" to the truth once the group lands.
    bar = tqdm(
        total=n_mine,
        initial=n_mine - len(todo),
        desc=desc,
        unit="img",
        disable=not progress,
        position=rank if world > 1 else None,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
    )
    finished = [n_mine - len(todo)]  # images with a record
    group_end = [finished[0]]  # where the bar may advance to within the current group

    def on_rows(n: int) -> None:
        bar.update(max(0.0, min(n / max(1, rows_per_image), group_end[0] - bar.n)))

    def record_done() -> None:
        finished[0] += 1
        bar.update(max(0.0, finished[0] - bar.n))

    old_progress, clf.progress = clf.progress, (on_rows if progress else clf.progress)
    try:
        for lo in range(0, len(todo), group):
            positions = todo[lo : lo + group]
            group_end[0] = finished[0] + len(positions) - 0.5  # the last half image lands with the records
            ok, x0s = [], []
            for pos in positions:
                s = dataset[pos]
                try:
                    x0s.append(to_pixels(bundle, dataset.load_image(s)))
                    ok.append((pos, s))
                except Exception as e:  # noqa: BLE001 - any unreadable image is recorded and the run goes on
                    writer.write(
                        {
                            "index": pos,
                            "id": s.id,
                            "label": _label_json(s.label),
                            "path": s.path,
                            "error": f"{type(e).__name__}: {e}",
                            "prediction": None,
                        }
                    )
                    record_done()
            if not ok:
                continue
            x0 = pixels_to_x0(bundle, torch.stack(x0s))
            results = clf.classify_batch(x0, [image_key_from_id(s.id) for _, s in ok])
            if len(results) > 1 and all(r.error for r in results):
                raise NonFiniteError(
                    f"all {len(results)} images of a batch gave a non-finite denoiser error: "
                    f"{results[0].error.split(': ', 1)[-1]}"
                )
            for (pos, s), r in zip(ok, results):
                label = _label_json(s.label)
                if r.error:
                    writer.write(
                        {
                            "index": pos,
                            "id": s.id,
                            "label": label,
                            "path": s.path,
                            "error": r.error,
                            "prediction": None,
                            "calls": r.calls,
                        }
                    )
                    record_done()
                    continue
                correct = (r.prediction in label) if isinstance(label, list) else (r.prediction == label)
                writer.write(
                    {
                        "index": pos,
                        "id": s.id,
                        "label": label,
                        "prediction": r.prediction,
                        "correct": bool(correct),
                        "ranking": r.ranking,
                        "stages": [st.to_dict() for st in r.stages],
                        "seconds": r.seconds,
                        "calls": r.calls,
                        "error": None,
                    }
                )
                record_done()
    finally:
        clf.progress = old_progress
        bar.close()
