"""bench's FLOP accounting on every adapter's layout: for each tiny config of the registry
(tests/tiny_models.py), the FLOPs counted with the real hooks of a patched forward (the bounds, and
every method the adapter takes, at its default placement) equal the arithmetic of `bench.video` on
the shapes of one unpatched forward. A new family whose layout the accounting misreads (tokens of
the text or padding counted as image, rotary tables or masks left at full length, fused projections)
fails here.

Counted on the meta device, except the configs whose model reads its own tensors on the host (those
run on the CPU, with PyTorch's math attention so that the counter sees its matmuls)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bigain.backbones import coverage
from bigain.bench import count_flops
from bigain.bench.video import Compression, breakdown, flops_left, method_flops_left
from bigain.methods import make_config
from bigain.patching import inspect_model
from bigain.patching.api import select_blocks
from tiny_models import Tiny, by_name, entries

pytestmark = pytest.mark.usefixtures("one_thread")

# Models whose own forward reads tensor values on the host, which the meta device has none of.
ON_CPU = {
    "hidream": "the mixture of experts counts tokens per expert (bincount, no meta kernel)",
    "lumina2": "the model reads each caption's length from the mask (.tolist())",
    "lumina2-mixed-captions": "the model reads each caption's length from the mask (.tolist())",
    "qwen-image-2.1": "the model repeats its image mask by tensor counts (repeat_interleave)",
    "hunyuan-video-1.5": "the model reads a tensor's value (.item())",
    "hunyuan-image": "the model finds its valid tokens with nonzero()",
    "mochi": "the model opens an autocast region on the input's device (no meta autocast)",
}

# Layouts the arithmetic does not model: it must refuse them (the bounds still count with hooks).
UNMODELLED = {
    "mochi": "each sample attends over its own unpadded text: the shapes give only the padded length",
}


def _to(v: Any, device: str, key: str = "") -> Any:
    """Inputs to `device`; timesteps and position ids stay on the CPU (the adapters read ids on the
    host, and a KV method's switch-off reads the timestep; `count_flops` moves them after)."""
    if isinstance(v, torch.Tensor):
        return v if key == "timestep" or "ids" in key else v.to(device)
    if isinstance(v, (list, tuple)):
        return type(v)(_to(x, device) for x in v)
    return v


def _case(entry: Tiny) -> tuple[torch.nn.Module, tuple, dict, Any]:
    args, kwargs = entry.inputs()
    kwargs = {k: v for k, v in kwargs.items() if k != "return_dict"}
    if entry.name in ON_CPU:
        return entry.build().eval(), args, kwargs, lambda: sdpa_kernel(SDPBackend.MATH)
    with torch.device("meta"):
        model = entry.build().eval()
    args = tuple(_to(a, "meta") for a in args)
    kwargs = {k: _to(v, "meta", k) for k, v in kwargs.items()}
    return model, args, kwargs, contextlib.nullcontext


def _methods(entry: Tiny) -> list[str]:
    return coverage.methods_for(coverage.backbone_for_class(entry.cls))


CONFIGS = [t.name for t in entries() if coverage.backbone_for_class(t.cls) is not None]


@pytest.mark.parametrize("config", CONFIGS)
def test_counted_flops_equal_the_arithmetic(config):
    entry = by_name(config)
    model, args, kwargs, mode = _case(entry)
    with mode():
        bd = breakdown(model, args, kwargs)
        assert bd.sites and all(s.calls for s in bd.sites), "every site runs"
        if config in UNMODELLED:
            assert any(s.form == "unknown" for s in bd.sites)
            with pytest.raises(ValueError, match="cannot compress"):
                flops_left(bd, None, Compression("merge", 0.5), "all")
            base = count_flops(model, args, kwargs=kwargs, explicit=False)
            assert count_flops(model, args, "ideal", kwargs=kwargs, explicit=False, ratio=0.5) < base
            return
        assert all(s.form != "unknown" for s in bd.sites), [(s.name, s.core, s.core_formula()) for s in bd.sites]

        def counted(method: str, **options: Any) -> int:
            return count_flops(model, args, method, kwargs=kwargs, explicit=False, **options)

        assert counted("none") == bd.total
        # the bounds' default placement is the adapter's (the arithmetic's None is the relative rule)
        default = [b.index for b, _ in select_blocks(inspect_model(model), make_config("tome"))]
        for where, chosen in (("all", "all"), (None, default)):
            assert counted("ceiling", blocks=where) == flops_left(bd, None, Compression("ceiling"), chosen), where
            for r in (0.5,):
                ideal = flops_left(bd, None, Compression("merge", r), chosen)
                assert counted("ideal", ratio=r, blocks=where) == ideal, (where, r)
        ideal = flops_left(bd, None, Compression("merge", 0.5), "all")
        assert ideal < bd.total
        for method in _methods(entry):  # each at its defaults and default placement
            assert counted(method) == method_flops_left(model, bd, method), method
            assert counted(method, blocks="all") == method_flops_left(model, bd, method, blocks="all"), method
