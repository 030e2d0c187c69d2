"""The Triton fast paths against the PyTorch reference, on CPU through Triton's interpreter.

The reference path (`fast.using("off")`) is the ground truth: the fast path must give the same merge
and prune plans on inputs without ties and the same outputs up to rounding (it accumulates in float32).
Skipped where Triton is not installed; the rest of the suite never needs it.
"""

import os

import pytest
import torch

pytest.importorskip("triton")

from bigain import ops  # noqa: E402
from bigain.ops import fast  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def interpreter():
    old_env = os.environ.get("TRITON_INTERPRET")
    old_mode = fast.mode()
    fast.set_mode("interpret")
    yield
    fast.set_mode(old_mode)
    if old_env is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = old_env


def both(fn):
    """(reference result, fast result) of fn()."""
    with fast.using("off"):
        ref = fn()
    return ref, fn()


def reference_best(x, src, dst):
    unit = x.float() / x.float().norm(dim=-1, keepdim=True)
    b, _, c = x.shape
    a = torch.gather(unit, 1, src.expand(b, -1).unsqueeze(-1).expand(-1, -1, c))
    d = torch.gather(unit, 1, dst.expand(b, -1).unsqueeze(-1).expand(-1, -1, c))
    scores = a @ d.transpose(-1, -2)
    top2 = scores.topk(2, dim=-1).values
    best, nearest = scores.max(dim=-1)
    return best, nearest, top2[..., 0] - top2[..., 1]


def grid_partition(b, h, w, seed, sx=2, sy=2):
    gen = torch.Generator().manual_seed(seed)
    hsy, wsx = h // sy, w // sx
    choice = torch.randint(sx * sy, (b, hsy, wsx), generator=gen)
    return ops.partition(choice, h, w, sx, sy)


def test_dispatch_rules(monkeypatch):
    cpu = torch.zeros(2)
    assert fast.active(cpu)  # interpret mode runs on CPU tensors
    assert not fast.active(cpu.double())  # no float64 kernels: the reference runs
    with fast.using("auto"):
        assert not fast.active(cpu)  # auto: CUDA tensors only
    with fast.using("off"):
        assert not fast.active(cpu)
    with pytest.raises(ValueError, match="fast mode"):
        fast.set_mode("always")
    monkeypatch.setenv("BIGAIN_FAST", "0")
    assert fast._mode_from_env() == "off"
    monkeypatch.setenv("BIGAIN_FAST", "1")
    assert fast._mode_from_env() == "auto"


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("b,n,c,ns", [(2, 48, 40, 36), (1, 150, 24, 100), (2, 70, 80, 7)])
def test_best_match_fp32(shared, b, n, c, ns):
    gen = torch.Generator().manual_seed(n + c)
    x = torch.randn(b, n, c, generator=gen)
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(1 if shared else b)])
    src, dst = perm[:, :ns], perm[:, ns:]
    best, nearest = fast.kernels().best_match(x, src, dst)
    ref_best, ref_nearest, gap = reference_best(x, src, dst)
    torch.testing.assert_close(best, ref_best, atol=1e-6, rtol=1e-5)
    clear = gap > 1e-5
    assert clear.float().mean() > 0.9
    assert torch.equal(nearest[clear], ref_nearest[clear])


def test_best_match_fp16_and_strided_input():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(2, 90, 64 * 2, generator=gen)
    x = base[:, :, ::2].half()  # non-contiguous channels: the launcher makes rows contiguous
    perm = torch.stack([torch.randperm(90, generator=gen) for _ in range(2)])
    src, dst = perm[:, :60], perm[:, 60:]
    best, nearest = fast.kernels().best_match(x, src, dst)
    ref_best, ref_nearest, gap = reference_best(x, src, dst)
    torch.testing.assert_close(best, ref_best, atol=2e-3, rtol=2e-3)
    clear = gap > 5e-3
    assert torch.equal(nearest[clear], ref_nearest[clear])


@pytest.mark.parametrize("h,w", [(8, 8), (7, 5), (6, 10)])
@pytest.mark.parametrize("mode", ["mean", "prune"])
def test_merge_plan_matches_reference(h, w, mode):
    b, c = 2, 24
    gen = torch.Generator().manual_seed(h * w)
    metric = torch.randn(b, h * w, c, generator=gen)
    x = torch.randn(b, h * w, 40, generator=gen)
    dst, src = grid_partition(b, h, w, seed=h + w)
    r = int(0.6 * src.shape[1])
    ref, got = both(lambda: ops.bipartite_merge_plan(metric, dst, src, r, mode=mode))
    for name in ("kept_idx", "merged_idx", "dst_idx", "target", "inverse", "order"):
        assert torch.equal(getattr(ref, name), getattr(got, name)), name
    with fast.using("off"):
        ref_reduced = ref.reduce(x)
        ref_out = ref.expand(ref_reduced * 2)
    reduced = got.reduce(x)
    torch.testing.assert_close(reduced, ref_reduced, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.expand(reduced * 2), ref_out, atol=2e-6, rtol=1e-6)


def test_merge_of_many_sources_into_one_destination():
    """One destination close to everything: its segment is long; the mean must still be exact."""
    b, n, c = 2, 64, 16
    gen = torch.Generator().manual_seed(11)
    metric = torch.randn(b, n, c, generator=gen) * 0.05
    metric[:, :, 0] += 1.0  # all tokens point roughly the same way ...
    dst = torch.tensor([[0, 1, 2, 3]])
    metric[:, 0] = 0.0
    metric[:, 0, 0] = 1.0  # ... and token 0 is exactly that way
    src = torch.arange(4, n).unsqueeze(0)
    with fast.using("off"):
        plan = ops.bipartite_merge_plan(metric, dst, src, r=50)
    assert int((plan.target == 0).sum(dim=1).min()) >= 10
    x = torch.randn(b, n, 33, generator=gen)
    ref, got = both(lambda: plan.reduce(x))
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    kept, dsts, merged_sorted, bounds = plan.segments
    assert torch.equal(bounds[:, -1], torch.full((b,), 50))
    for row in range(b):
        for d in range(4):  # destination d's run holds exactly its merged sources, in merge order
            run = merged_sorted[row, bounds[row, d] : bounds[row, d + 1]]
            assert torch.equal(run, plan.merged_idx[row][plan.target[row] == d])


def test_merge_plan_edge_ratios_and_fp16():
    b, h, w = 2, 6, 6
    gen = torch.Generator().manual_seed(5)
    metric = torch.randn(b, h * w, 32, generator=gen)
    x = torch.randn(b, h * w, 24, generator=gen).half()
    dst, src = grid_partition(b, h, w, seed=1)
    for r in (0, src.shape[1]):  # nothing merged; every source merged
        ref, got = both(lambda r=r: ops.bipartite_merge_plan(metric, dst, src, r))
        assert torch.equal(ref.inverse, got.inverse)
        with fast.using("off"):
            ref_reduced = ref.reduce(x)
        reduced = got.reduce(x)
        assert reduced.dtype == torch.float16
        torch.testing.assert_close(reduced, ref_reduced, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(got.expand(reduced), ref.expand(ref_reduced), atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("h,w,s", [(8, 8, 2), (7, 5, 2), (6, 10, 2), (9, 6, 3), (5, 9, 4)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3)])
def test_kv_downsample_matches_reference(h, w, s, dtype, tol):
    b, c = 2, 20
    x = torch.randn(b, h * w, c, generator=torch.Generator().manual_seed(h * w + s)).to(dtype)
    for alpha in (1.0, 0.0, 0.5, 1.5, torch.tensor([0.25, 2.0])):
        ref, got = both(lambda alpha=alpha: ops.downsample_tokens(x, h, w, s, alpha))
        assert got.shape == ref.shape == (b, (h // s) * (w // s), c)
        assert got.dtype == dtype
        torch.testing.assert_close(got, ref, atol=tol, rtol=tol)


def test_kv_nearest_is_the_exact_element():
    # alpha == 1 copies one token per window: bit-identical, at offset floor(s/2) on divisible grids.
    x = torch.randn(1, 8 * 12, 8)
    got = ops.downsample_tokens(x, 8, 12, 2, 1.0)
    grid = x.view(1, 8, 12, 8)
    assert torch.equal(got, grid[:, 1::2, 1::2].reshape(1, -1, 8))


@pytest.mark.parametrize("h,w", [(7, 6)])
def test_sito_plan_matches_reference(h, w):
    b, c = 2, 16
    gen = torch.Generator().manual_seed(h * w)
    metric = torch.randn(b, h * w, c, generator=gen)
    noise = torch.randn(b, h * w, generator=gen)
    r = (h * w) // 2
    ref, got = both(lambda: ops.similarity_prune_plan(metric, h, w, r, noise=noise))
    assert torch.equal(ref.keep_idx, got.keep_idx)
    assert torch.equal(ref.inverse, got.inverse)
    x = torch.randn(b, h * w, 12, generator=gen)
    ref_out, out = both(lambda: ref.expand(ref.reduce(x)))
    assert torch.equal(out, ref_out)


def test_compiled_code_takes_the_reference_path(monkeypatch):
    """Under torch.compile the ops trace their PyTorch code (no graph break), even in a fresh process."""
    monkeypatch.setattr(fast, "_triton_available", None)
    # Inductor's own Triton helpers must not be defined under the interpreter (test_keyed compiles them).
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    h = w = 8
    metric = torch.randn(2, h * w, 16, generator=torch.Generator().manual_seed(0))
    dst, src = grid_partition(2, h, w, seed=2)

    def step(m):
        plan = ops.bipartite_merge_plan(m, dst, src, 24)
        return plan.expand(plan.reduce(m) * 2), ops.downsample_tokens(m, h, w, 2, 0.5)

    compiled = torch.compile(step, fullgraph=True)(metric)
    with fast.using("off"):
        reference = step(metric)
    for got, ref in zip(compiled, reference):
        torch.testing.assert_close(got, ref)
