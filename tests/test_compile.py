"""`torch.compile(fullgraph=True)` captures patched models in one graph (tomesd and ToDo cannot).

Dynamo's full-graph capture is what breaks on host syncs, generators and data-dependent
shapes, so it is checked with the cheap "aot_eager" backend (which also runs AOT autograd's
functionalization); one case runs the default inductor backend end to end.
"""

from __future__ import annotations

import pytest
import torch

import bigain
from conftest import (
    dit_inputs,
    flux_inputs,
    make_tiny_dit,
    make_tiny_flux,
    make_tiny_sd3,
    make_tiny_unet,
    sd3_inputs,
    unet_inputs,
)

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]


@pytest.fixture(autouse=True)
def _reset():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("method", METHODS)
def test_fullgraph_unet(method):
    unet = make_tiny_unet()
    inputs = unet_inputs(2)
    opts = {"alpha_schedule": (0.8, 1.2)} if method == "bigain-td" else {}
    bigain.apply(unet, method, **opts)
    with torch.no_grad():
        with bigain.sample_keys(unet, inputs[1][:1].long()):  # the keys a compiled forward draws by
            eager = unet(*inputs).sample
        compiled = torch.compile(unet, fullgraph=True, backend="aot_eager")(*inputs).sample
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_fullgraph_dit(method):
    dit = make_tiny_dit(layers=3)
    x, t, y = dit_inputs(2)
    bigain.apply(dit, method)
    with torch.no_grad():
        out = torch.compile(dit, fullgraph=True, backend="aot_eager")(x, timestep=t, class_labels=y).sample
        # Compiled, random choices come from the keyed hash of the first timestep; eager with those keys
        # draws the same destinations.
        with bigain.sample_keys(dit, t[:1].long()):
            eager = dit(x, timestep=t, class_labels=y).sample
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backbone", ["sd3", "flux"])
@pytest.mark.parametrize("method", METHODS)
def test_fullgraph_mmdit(backbone, method):
    if backbone == "sd3":
        model, kw = make_tiny_sd3(dual=True), sd3_inputs(2)
    else:
        model, kw = make_tiny_flux(), flux_inputs(2)
    bigain.apply(model, method, blocks="all")
    with torch.no_grad():
        base_keys = torch.tensor([500])  # what the compiled forward keys its random choices by (first t)
        with bigain.sample_keys(model, base_keys):
            eager = model(**kw)[0]
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(**kw)[0]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_fullgraph_tome_random_uses_traceable_stream_with_keys():
    dit = make_tiny_dit(layers=2)
    x, t, y = dit_inputs(2)
    bigain.apply(dit, "tome")
    keys = torch.tensor([5, 6])
    with torch.no_grad(), bigain.sample_keys(dit, keys):
        eager = dit(x, timestep=t, class_labels=y).sample
        compiled = torch.compile(dit, fullgraph=True, backend="aot_eager")(x, timestep=t, class_labels=y).sample
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_inductor_end_to_end_bigain_tm():
    dit = make_tiny_dit(layers=2)
    x, t, y = dit_inputs(2)
    bigain.apply(dit, "bigain-tm", blocks="all")
    with torch.no_grad():
        eager = dit(x, timestep=t, class_labels=y).sample
        compiled = torch.compile(dit, fullgraph=True)(x, timestep=t, class_labels=y).sample
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
