"""Generation through a user's diffusers pipeline (SD text-to-image, DiT class-to-image)."""

from __future__ import annotations

from typing import Any

import torch

from .run import generation_options


def pipeline_defaults(pipe: Any) -> dict[str, Any]:
    """The paper's protocol: SD Euler 50 steps CFG 7.5; DiT DDIM 50 steps CFG 4.0."""
    if hasattr(pipe, "transformer") and type(pipe.transformer).__name__ == "DiTTransformer2DModel":
        return {"num_inference_steps": 50, "guidance_scale": 4.0, "scheduler": "ddim"}
    return {"num_inference_steps": 50, "guidance_scale": 7.5, "scheduler": "euler"}


def _set_scheduler(pipe: Any, name: str) -> None:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "dpm": DPMSolverMultistepScheduler}[name]
    if not isinstance(pipe.scheduler, cls):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)


def run_pipeline(
    pipe: Any,
    conditions: list[Any],
    method: str = "none",
    method_options: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 4,
    **call_kwargs: Any,
) -> list[Any]:
    """Call `pipe` on prompts (SD) or class ids (DiT) under a bigain method; returns PIL images.

    Batch b uses a generator seeded with seed + b, as in the paper's generation scripts.
    """
    import bigain

    defaults = pipeline_defaults(pipe)
    sched = call_kwargs.pop("scheduler", defaults.pop("scheduler"))
    _set_scheduler(pipe, sched)
    kwargs = {**defaults, **call_kwargs}
    is_dit = (
        "guidance_scale" in kwargs and hasattr(pipe, "transformer") and not isinstance(conditions[0], str)
    )
    images: list[Any] = []
    with bigain.compressed(pipe, method, **generation_options(method, method_options)):
        for b, start in enumerate(range(0, len(conditions), batch_size)):
            part = conditions[start : start + batch_size]
            gen = torch.Generator().manual_seed(seed + b)
            if is_dit:
                out = pipe(class_labels=part, generator=gen, **kwargs)
            else:
                out = pipe(prompt=part, generator=gen, **kwargs)
            images.extend(out.images)
    return images
