"""FLOP counting of one denoiser forward with `torch.utils.flop_counter.FlopCounterMode`.

On CPU, FlopCounterMode does not count scaled_dot_product_attention, so attention is switched to
diffusers' explicit `AttnProcessor` (matmul + softmax) while counting, as the paper's FLOP counts do.
Counting only needs shapes: a model built on the meta device (`build_model(..., device="meta")`)
with meta inputs gives the same count as a real forward, in milliseconds. On the meta device SDPA
runs as its matmul decomposition, which the counter sees: models whose attention processors call
SDPA (the video transformers) are counted with `explicit=False` there.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..methods import MethodConfig, make_config
from .bounds import BOUNDS
from .patch import TOMESD, patched


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[int]:
    """Give every diffusers attention module an explicit-softmax `AttnProcessor`; restore on exit.

    Works per module (DiTTransformer2DModel has no `set_attn_processor`). Only plain self/cross-attention
    processors are switched: joint attentions (SD3, Flux) keep their own processor, whose SDPA call the
    FLOP counter counts as it is. Yields how many modules were switched.
    """
    from diffusers.models.attention_processor import AttnProcessor

    saved = []
    for m in model.modules():
        if type(getattr(m, "processor", None)).__name__ in ("AttnProcessor2_0", "AttnProcessor"):
            saved.append((m, m.processor))
            m.set_processor(AttnProcessor())
    try:
        yield len(saved)
    finally:
        for m, proc in saved:
            m.set_processor(proc)


def call_model(model: nn.Module, inputs: Any, kwargs: dict[str, Any] | None = None) -> Any:
    """Call with a dict, a tuple/list (positional) or a single tensor, plus optional extra keywords.

    A dict's first entry (the latent) is passed positionally, the rest as keywords: tomesd's hook
    reads the latent size from the first positional argument.
    """
    kwargs = kwargs or {}
    if isinstance(inputs, dict):
        items = list(inputs.items())
        return model(items[0][1], **dict(items[1:]), **kwargs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs, **kwargs)
    return model(inputs, **kwargs)


def count_flops(
    model: nn.Module,
    inputs: Any,
    method: str | None = None,
    *,
    kwargs: dict[str, Any] | None = None,
    explicit: bool = True,
    **options: Any,
) -> int:
    """FLOPs of one forward of `model` on `inputs`, optionally patched with `method` (bigain name or
    "tomesd") and its options. The model is left as it was.

    `inputs` as in `call_model`; `kwargs` are extra keyword inputs (e.g. class labels).
    explicit=True (default) counts attention through diffusers' `AttnProcessor`, since SDPA is not
    counted on CPU; the patch is applied first, so the methods' hooks see the same modules.
    """
    return int(_count(model, inputs, method, kwargs, explicit, options).get_total_flops())


def flops_by_module(
    model: nn.Module,
    inputs: Any,
    method: str | None = None,
    *,
    kwargs: dict[str, Any] | None = None,
    explicit: bool = True,
    **options: Any,
) -> tuple[int, dict[str, int]]:
    """As `count_flops`, plus the FLOPs of every submodule that ran, by qualified name as in
    `model.named_modules()` ("" is the model). A module's count includes its children's and adds up
    over its calls in the forward."""
    counter = _count(model, inputs, method, kwargs, explicit, options)
    by_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = key.split(".", 1)[1] if "." in key else ""  # keys are "<ModelClass>.<qualified name>"
        by_module[name] = int(sum(ops.values()))
    return int(counter.get_total_flops()), by_module


def _count(
    model: nn.Module,
    inputs: Any,
    method: str | None,
    kwargs: dict[str, Any] | None,
    explicit: bool,
    options: dict[str, Any],
) -> FlopCounterMode:
    if _on_meta(model) and method not in (None, "none", TOMESD, *BOUNDS):
        method, options = _meta_config(method, options, inputs, kwargs), {}
    attention = explicit_attention(model) if explicit else contextlib.nullcontext()
    with (
        torch.no_grad(),
        _inputs_to_meta(model),  # before the patch: its hooks read host inputs first
        patched(model, method, **options),
        _host_timesteps(model, inputs, kwargs),
        attention,
    ):
        counter = FlopCounterMode(display=False)
        with counter:
            call_model(model, inputs, kwargs)
    return counter


def _host_timesteps(model: nn.Module, inputs: Any, kwargs: dict[str, Any] | None) -> Any:
    """The harness holds its timesteps on the host: say them to the patch (bigain never reads a
    timestep tensor), so a KV method's switch-off at t <= stop_t counts as it runs. Flux takes sigmas."""
    import bigain

    t = _timestep(inputs, kwargs)
    if t is None or t.device.type != "cpu" or not bigain.is_patched(model):
        return contextlib.nullcontext()
    scale = 1000.0 if type(model).__name__.startswith("Flux") else 1.0
    return bigain.host_timesteps(model, [float(v) * scale for v in t.reshape(-1).tolist()])


def _on_meta(model: nn.Module) -> bool:
    param = next(model.parameters(), None)
    return param is not None and param.device.type == "meta"


def _timestep(inputs: Any, kwargs: dict[str, Any] | None = None) -> torch.Tensor | None:
    if kwargs and kwargs.get("timestep") is not None:
        return torch.as_tensor(kwargs["timestep"])
    if isinstance(inputs, dict):
        t = inputs.get("timestep")
    elif isinstance(inputs, (tuple, list)) and len(inputs) > 1:
        t = inputs[1]
    else:
        t = None
    return None if t is None else torch.as_tensor(t)


def _meta_config(
    method: Any, options: dict[str, Any], inputs: Any, kwargs: dict[str, Any] | None = None
) -> MethodConfig | None:
    """KV methods decide on the host whether they are off (all timesteps <= stop_t), which a meta
    timestep cannot answer: decide here from the CPU timestep instead (same FLOPs either way)."""
    cfg = make_config(method, **options)
    stop = getattr(cfg, "stop_t", None)
    if cfg.mechanism != "kv" or stop is None:
        return cfg
    t = _timestep(inputs, kwargs)
    if t is not None and t.device.type != "meta" and bool((t <= stop).all()):
        return None  # the operator is off at this timestep: the forward is the baseline's
    return dataclasses.replace(cfg, stop_t=None)


@contextlib.contextmanager
def _inputs_to_meta(model: nn.Module) -> Iterator[None]:
    """For a meta-device model: move CPU input tensors (the timestep; Flux's `img_ids`, whose values
    the adapter reads on the host; in lists too, as Z-Image takes its latents) to meta just before
    the model's own forward. Entered before the patch, as a wrapper of the instance's `forward`: the
    patch's denoiser hooks wrap it in turn and so still see the host values (a torch pre-hook would
    run before them)."""
    if not _on_meta(model):
        yield
        return

    def to_meta(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to("meta") if v.device.type != "meta" else v
        if isinstance(v, (list, tuple)):
            return type(v)(to_meta(x) for x in v)
        return v

    inner = model.__dict__.get("forward")
    call = model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        return call(*(to_meta(a) for a in args), **{k: to_meta(v) for k, v in kwargs.items()})

    model.forward = forward
    try:
        yield
    finally:
        if inner is None:
            del model.forward
        else:
            model.forward = inner
