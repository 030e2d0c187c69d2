"""Zero-shot diffusion classification (Li et al.'s diffusion classifier, BiGain protocol), optionally compressed.

- :class:`DiffusionClassifier`: the batched engine (``classify``, ``classify_batch``).
- :func:`reference_classify`: the same protocol as a plain loop (one class, one (t, ε) at a time).
- :func:`run_classification`: a resumable, shardable, multi-process run into a folder.
- :func:`bundle_from_pipeline`: a bundle for a diffusers SD-style or DiT pipeline.
- :mod:`bigain.classify.datasets`: ImageNet(-100), Oxford-IIIT Pets, COCO, Fashion-MNIST, prompt CSVs.
- :func:`cli_main`: ``bigain classify ...``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# the engine (torch, diffusers) loads on first use: `bigain classify` parses its arguments first
_EXPORTS = {
    "cli_main": ".cli",
    "load_dataset": ".datasets",
    "ClassifyResult": ".engine",
    "DiffusionClassifier": ".engine",
    "NonFiniteError": ".engine",
    "StageErrors": ".engine",
    "image_key_from_id": ".engine",
    "reference_classify": ".engine",
    "bundle_from_pipeline": ".pipeline",
    "prepare_x0": ".pipeline",
    "ConfigMismatchError": ".runner",
    "load_results": ".runner",
    "merge_results": ".runner",
    "read_records": ".runner",
    "run_classification": ".runner",
    "adaptive_plan": ".schedule",
    "calls_per_image": ".schedule",
    "stage_timesteps": ".schedule",
    "timestep_grid": ".schedule",
    "average_precision": ".summary",
    "recall_at_k": ".summary",
    "summarize": ".summary",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .cli import cli_main
    from .datasets import load_dataset
    from .engine import (
        ClassifyResult,
        DiffusionClassifier,
        NonFiniteError,
        StageErrors,
        image_key_from_id,
        reference_classify,
    )
    from .pipeline import bundle_from_pipeline, prepare_x0
    from .runner import ConfigMismatchError, load_results, merge_results, read_records, run_classification
    from .schedule import adaptive_plan, calls_per_image, stage_timesteps, timestep_grid
    from .summary import average_precision, recall_at_k, summarize

__all__ = [
    "ClassifyResult",
    "ConfigMismatchError",
    "DiffusionClassifier",
    "NonFiniteError",
    "StageErrors",
    "adaptive_plan",
    "average_precision",
    "bundle_from_pipeline",
    "calls_per_image",
    "cli_main",
    "image_key_from_id",
    "load_dataset",
    "load_results",
    "merge_results",
    "prepare_x0",
    "read_records",
    "recall_at_k",
    "reference_classify",
    "run_classification",
    "stage_timesteps",
    "summarize",
    "timestep_grid",
]
