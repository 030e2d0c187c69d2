"""`tome` against the real peer, tomesd 0.1.3 from PyPI: outputs must be bit-identical."""

from __future__ import annotations

import pytest
import tomesd
import torch

import bigain
from conftest import dit_inputs, make_tiny_dit, make_tiny_unet, unet_inputs

UNET_CASES = [
    dict(ratio=0.5, use_rand=False),
    dict(ratio=0.3, use_rand=False, sx=4, sy=2),
    dict(ratio=0.7, use_rand=False, max_downsample=2),
    dict(ratio=0.5, use_rand=False, merge_mlp=True, merge_crossattn=True, max_downsample=2),
    dict(ratio=0.6, use_rand=False, sx=3, sy=3),
    dict(ratio=0.5),  # use_rand=True: both draw from generators with the same state
    dict(ratio=0.7, max_downsample=2, merge_mlp=True),
]


def _run_pair(make, inputs, call, tomesd_kw, bigain_kw, seed=1234, steps=2):
    a, b = make(), make()
    with torch.no_grad():
        torch.manual_seed(seed)  # tomesd forks its generator from the global RNG at first use
        tomesd.apply_patch(a, **tomesd_kw)
        ya = [call(a, *inputs) for _ in range(steps)]
        bigain.apply(b, "tome", generator=torch.Generator().manual_seed(seed), **bigain_kw)
        yb = [call(b, *inputs) for _ in range(steps)]
    return ya, yb


def _unet_call(m, x, t, c):
    return m(x, t, c).sample


def _dit_call(m, x, t, y):
    return m(x, timestep=t, class_labels=y).sample


@pytest.mark.parametrize("kw", UNET_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("size", [16, (16, 24)])
def test_tome_bit_identical_to_tomesd_on_unet(kw, size):
    inputs = unet_inputs(2, size)
    ya, yb = _run_pair(make_tiny_unet, inputs, _unet_call, kw, kw)
    for a, b in zip(ya, yb):
        assert torch.equal(a, b)
    # and the patch does something
    with torch.no_grad():
        base = _unet_call(make_tiny_unet(), *inputs)
    assert not torch.equal(base, yb[0])


@pytest.mark.parametrize("kw", [dict(ratio=0.5, use_rand=False), dict(ratio=0.7), dict(ratio=0.4, merge_mlp=True)])
def test_tome_bit_identical_to_tomesd_on_dit(kw):
    # tomesd merges every DiT block once max_downsample >= 2 and uses the block input as metric
    inputs = dit_inputs(2)
    ya, yb = _run_pair(make_tiny_dit, inputs, _dit_call, dict(kw, max_downsample=2), dict(kw, blocks="all", metric="block"))
    for a, b in zip(ya, yb):
        assert torch.equal(a, b)


def test_random_stream_differs_across_calls_like_tomesd():
    inputs = unet_inputs(2)
    _, yb = _run_pair(make_tiny_unet, inputs, _unet_call, dict(ratio=0.5), dict(ratio=0.5))
    assert not torch.equal(yb[0], yb[1])
