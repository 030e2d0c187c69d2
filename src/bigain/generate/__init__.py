"""Sampling with any bigain method: class-conditional bundles (embedded models, DiT) and diffusers
pipelines (text-to-image in memory; text-to-video into resumable run folders with MP4s and contact sheets)."""

from .io import make_grid, save_images, to_uint8_image
from .pipeline import is_video_pipeline, pipeline_defaults, run_pipeline
from .run import balanced_labels, generate_run, generation_options, read_manifest, read_png
from .sampler import SAMPLERS, SamplerConfig, make_scheduler, sample

__all__ = [
    "SAMPLERS",
    "SamplerConfig",
    "balanced_labels",
    "generate_run",
    "generation_options",
    "is_video_pipeline",
    "make_grid",
    "make_scheduler",
    "pipeline_defaults",
    "read_manifest",
    "read_png",
    "run_pipeline",
    "sample",
    "save_images",
    "to_uint8_image",
]
