"""Operators and host<->device traffic per compressed block call, counted on the meta device.

On a GPU every non-view operator is at least one kernel launch; at the sizes where the GPU waits on
launches (small images, small batches) what a method adds per block is what it costs. Counting on
the meta device needs no GPU and no weights: the full-size architectures cost nothing to run there.
What is counted: a steady-state forward (after one warm-up forward, which fills the per-device
caches) of the patched model, minus the same forward of the unpatched model, divided by the number
of compressed block calls; `tomesd` is counted the same way where it applies (U-Nets).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .dispatch import Traffic, count_traffic
from .models import build_model, example_inputs, model_spec

META = torch.device("meta")


@dataclass
class OpCount:
    """One method on one model: operators added per compressed block call, and transfers."""

    model: str
    method: str
    options: dict[str, Any]
    blocks: int
    ops_per_block: float
    h2d: int  # host -> device copies per forward (steady state)
    d2h: int  # device -> host reads per forward (steady state)
    added: dict[str, int] = field(default_factory=dict)  # operators added per forward, by name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _forward(model: torch.nn.Module, inputs: dict[str, Any]) -> Any:
    latent_key = next(iter(inputs))
    kwargs = {k: v for k, v in inputs.items() if k != latent_key}
    return model(inputs[latent_key], **kwargs)


def _meta_inputs(name: str, pixels: int, batch: int, tiny: bool) -> dict[str, Any]:
    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(META)
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    return {k: move(v) for k, v in example_inputs(name, pixels, batch, tiny=tiny).items()}


def _steady(model: torch.nn.Module, inputs: dict[str, Any], prepare: Any = None) -> Traffic:
    with torch.no_grad():
        if prepare is not None:
            prepare(model)
        count_traffic(lambda: _forward(model, inputs))  # warm-up: per-device caches
        return count_traffic(lambda: _forward(model, inputs))


def count_model(
    name: str,
    methods: list[tuple[str, dict[str, Any]]],
    pixels: int = 512,
    batch: int = 2,
    tiny: bool = False,
) -> list[OpCount]:
    """Count every (method, options) on the benchmark model `name` (random weights on the meta
    device). `method` "tomesd" applies tomesd's patch (U-Nets); "none" is the baseline."""
    import bigain

    inputs = _meta_inputs(name, pixels, batch, tiny)
    base = _steady(build_model(name, META, tiny=tiny), inputs)
    out = []
    for method, options in methods:
        model = build_model(name, META, tiny=tiny)
        if method == "tomesd":
            import tomesd

            if model_spec(name, tiny).family != "unet":
                continue
            tomesd.apply_patch(model, **options)
            blocks = sum(1 for m in model.modules() if type(m).__name__.startswith("ToMe"))
        elif method == "none":
            blocks = 0
        else:
            report = bigain.apply(model, method, **options)
            blocks = report.num_blocks
            if model_spec(name, tiny).family == "flux":
                s = inputs["img_ids"].shape[0]
                side = int(round(s**0.5))
                bigain.set_grid(model, (side, s // side))
        tr = _steady(model, inputs)
        added = Counter(tr.ops)
        added.subtract(base.ops)
        extra = tr.num_ops - base.num_ops
        out.append(
            OpCount(
                name,
                method,
                dict(options),
                blocks,
                extra / blocks if blocks else float(extra),
                tr.h2d - base.h2d,
                tr.d2h - base.d2h,
                {k: v for k, v in sorted(added.items()) if v},
            )
        )
    return out
