"""Property tests over grids, ratios, strides and dtypes: shapes kept, finite, ratio 0 is the identity."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bigain
from bigain import ops
from conftest import make_tiny_unet

dtypes = st.sampled_from([torch.float32, torch.bfloat16])
grids = st.tuples(st.integers(2, 13), st.integers(2, 13))
strides = st.tuples(st.integers(1, 3), st.integers(1, 3)).filter(lambda s: s[0] * s[1] >= 2)


@settings(max_examples=60, deadline=None)
@given(grid=grids, stride=strides, ratio=st.floats(0.0, 0.99), dtype=dtypes, rule=st.sampled_from(["rand", "paper", "reference"]), seed=st.integers(0, 2**31))
def test_merge_plan_properties(grid, stride, ratio, dtype, rule, seed):
    h, w = grid
    sx, sy = stride
    if h // sy == 0 or w // sx == 0:
        return
    g = torch.Generator().manual_seed(seed)
    n = h * w
    x = torch.randn(2, n, 8, generator=g).to(dtype)
    if rule == "rand":
        choice = ops.random_choice(h, w, sx, sy, g, x.device)
    else:
        choice = ops.score_choice(ops.laplacian_score(x, h, w), h, w, sx, sy, rule=rule)
    dst, src = ops.partition(choice, h, w, sx, sy)
    assert dst.shape[-1] == (h // sy) * (w // sx) and dst.shape[-1] + src.shape[-1] == n
    assert torch.equal(torch.sort(torch.cat([dst, src], -1).expand(2, n), -1).values, torch.arange(n).expand(2, n))
    r = int(n * ratio)
    plan = ops.bipartite_merge_plan(x, dst, src, r)
    red = plan.reduce(x)
    assert red.shape == (2, n - min(r, src.shape[-1]), 8) and red.dtype == dtype
    out = plan.expand(red)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    if r == 0:
        assert torch.equal(out, x)


@settings(max_examples=40, deadline=None)
@given(grid=grids, ratio=st.floats(0.0, 0.99), dtype=dtypes, seed=st.integers(0, 2**31))
def test_prune_plan_properties(grid, ratio, dtype, seed):
    h, w = grid
    g = torch.Generator().manual_seed(seed)
    n = h * w
    x = torch.randn(2, n, 8, generator=g).to(dtype)
    r = int(n * ratio)
    plan = ops.similarity_prune_plan(x, h, w, r, noise=torch.randn(2, n, generator=g))
    out = plan.expand(plan.reduce(x))
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    if r == 0:
        assert torch.equal(out, x)


@settings(max_examples=40, deadline=None)
@given(grid=grids, factor=st.integers(1, 4), alpha=st.floats(-0.5, 1.5), dtype=dtypes)
def test_kv_downsample_properties(grid, factor, alpha, dtype):
    h, w = grid
    if h // factor == 0 or w // factor == 0:
        return
    x = torch.randn(2, h * w, 8).to(dtype)
    kv = ops.downsample_tokens(x, h, w, factor, alpha)
    assert kv.shape == (2, (h // factor) * (w // factor), 8) and kv.dtype == dtype
    assert torch.isfinite(kv.float()).all()
    if factor == 1:
        assert torch.equal(kv, x)


_UNET = make_tiny_unet()


@settings(max_examples=12, deadline=None)
@given(
    size=st.tuples(st.integers(5, 20), st.integers(5, 20)),
    method=st.sampled_from(["tome", "bigain-tm", "sito", "todo", "bigain-td"]),
    ratio=st.sampled_from([0.0, 0.3, 0.7]),
    dtype=dtypes,
)
def test_patched_unet_properties(size, method, ratio, dtype):
    unet = _UNET.to(dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, *size, generator=g).to(dtype)
    t = torch.tensor([10, 700])
    c = torch.randn(2, 5, 32, generator=g).to(dtype)
    with torch.no_grad():
        base = unet(x, t, c).sample
        opts = {"ratio": ratio} if method in ("tome", "bigain-tm", "sito") else {"downsample_factor": 1 if ratio == 0 else 2}
        if method == "todo" and ratio == 0:
            opts = {"downsample_factor": 1, "on_empty": "ignore"}
        if method == "bigain-td" and ratio == 0:
            opts = {"downsample_factor": 1, "on_empty": "ignore"}
        with bigain.compressed(unet, method, max_downsample=2, **opts):
            out = unet(x, t, c).sample
    assert out.shape == base.shape and torch.isfinite(out.float()).all()
    if ratio == 0:
        assert torch.equal(out, base)
