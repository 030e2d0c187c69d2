"""Details where bigain can reproduce the authors' arithmetic exactly: SiTo's float16 similarities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bigain import ops


def ref_sito_half(metric, h, w, r, noise, sx=2, sy=2, beta=1.0, noise_alpha=0.1):
    """SiTo with the metric cast to float16 before the cosine similarity, by loops.

    Every float16 tensor operation is written as exact arithmetic followed by one rounding to
    float16 (what a float16 kernel that accumulates in float32 returns, up to boundary cases).
    Returns (kept ids, destination ids, whether the pruning cut falls on a tie).
    """
    f16 = np.float16
    m = metric.numpy().astype(f16)
    n, c = m.shape
    unit = np.empty_like(m)
    for i in range(n):
        norm = f16(np.sqrt(sum(float(v) * float(v) for v in m[i])))
        for k in range(c):
            unit[i, k] = f16(float(m[i, k]) / float(norm))
    sim = [
        [float(f16(sum(float(unit[i, k]) * float(unit[j, k]) for k in range(c)))) for j in range(n)]
        for i in range(n)
    ]
    eps = noise.numpy().astype(f16)
    score = []
    for i in range(n):
        s = float(f16(beta * float(f16(sum(sim[i])))))
        s = float(f16(s + float(f16(np.float32(noise_alpha) * np.float32(eps[i])))))
        score.append(s)
    dst = []
    for i in range(h // sy):
        for j in range(w // sx):
            cells = [(i * sy + dy) * w + j * sx + dx for dy in range(sy) for dx in range(sx)]
            vals = [score[q] for q in cells]
            dst.append(cells[vals.index(max(vals))])
    src = [i for i in range(n) if i not in set(dst)]
    redundancy = {a: max(sim[a][d] for d in dst) for a in src}
    ranked = sorted(redundancy.values(), reverse=True)
    tie_at_cut = 0 < r < len(ranked) and ranked[r - 1] == ranked[r]
    pruned = set(sorted(src, key=lambda a: -redundancy[a])[:r])
    return {i for i in range(n) if i not in pruned}, set(dst), tie_at_cut


def _features(seed: int, h: int = 8, w: int = 8, c: int = 32, spread: float = 0.3):
    """Tokens scattered around one shared direction: near-ties that float16 rounds differently."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 1, c, generator=g)
    metric = base + spread * torch.randn(1, h * w, c, generator=g)
    return metric, torch.randn(1, h * w, generator=g)


@pytest.mark.parametrize("seed", [2, 4])
def test_sito_float16_similarity_reproduces_the_authors_kept_tokens(seed):
    h = w = 8
    r = 24
    metric, noise = _features(seed)
    kept, dst, tie_at_cut = ref_sito_half(metric[0], h, w, r, noise[0])
    assert not tie_at_cut, "fixed input must not put a tie at the pruning cut"
    half = ops.similarity_prune_plan(metric, h, w, r, noise=noise, similarity_dtype=torch.float16)
    assert set(half.keep_idx[0].tolist()) == kept
    assert dst <= set(half.keep_idx[0].tolist())
    # the option matters on this input: float32 similarities keep a different set
    full = ops.similarity_prune_plan(metric, h, w, r, noise=noise)
    assert set(full.keep_idx[0].tolist()) != kept


def test_sito_similarity_dtype_default_is_float32_and_validated():
    metric, noise = _features(2)
    default = ops.similarity_prune_plan(metric, 8, 8, 24, noise=noise)
    explicit = ops.similarity_prune_plan(metric, 8, 8, 24, noise=noise, similarity_dtype=torch.float32)
    assert torch.equal(default.keep_idx, explicit.keep_idx) and torch.equal(default.inverse, explicit.inverse)
    with pytest.raises(ValueError, match="similarity_dtype"):
        ops.similarity_prune_plan(metric, 8, 8, 24, noise=noise, similarity_dtype=torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_blend_with_per_row_alpha_equals_python_float_arithmetic(dtype):
    # The reference computes alpha * nearest + (1 - alpha) * average with a Python float alpha.
    alphas = [0.8, 0.9, 1.2, 0.8 * (475 / 999) + 1.2 * (1 - 475 / 999), -0.3]
    x = torch.randn(len(alphas), 6, 8, 8, generator=torch.Generator().manual_seed(5)).to(dtype)
    got = ops.blend_downsample(x, 2, torch.tensor(alphas, dtype=torch.float64))
    for row, a in enumerate(alphas):
        xr = x[row : row + 1]
        expected = a * ops.nearest_exact(xr, 2) + (1 - a) * ops.average(xr, 2)
        assert torch.equal(got[row : row + 1], expected), (dtype, a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sito_similarity_dtype_holds_under_autocast(dtype):
    # The classifier and sampler run the denoiser under autocast; the similarities must still be
    # computed in the dtype asked for, not in the autocast dtype.
    metric, noise = _features(4)
    plain = ops.similarity_prune_plan(metric, 8, 8, 24, noise=noise, similarity_dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = ops.similarity_prune_plan(metric, 8, 8, 24, noise=noise, similarity_dtype=dtype)
    assert torch.equal(plain.keep_idx, cast.keep_idx) and torch.equal(plain.inverse, cast.inverse)


def test_sito_config_similarity_dtype_reaches_the_plan():
    from bigain import make_config
    from bigain.methods.base import Draw

    cfg = make_config("sito", noise_alpha=0.0, similarity_dtype="float16")
    assert cfg.similarity_dtype == "fp16"
    assert make_config("sito").similarity_dtype == "fp32"
    metric, _ = _features(0)
    got = cfg.plan(metric, ops.Grid.image(8, 8), 24, Draw(salt=0))
    kept, _, tie_at_cut = ref_sito_half(metric[0], 8, 8, 24, torch.zeros(64), noise_alpha=0.0)
    assert not tie_at_cut and set(got.keep_idx[0].tolist()) == kept
    default = make_config("sito", noise_alpha=0.0).plan(metric, ops.Grid.image(8, 8), 24, Draw(salt=0))
    assert set(default.keep_idx[0].tolist()) != kept
    with pytest.raises(ValueError, match="similarity_dtype"):
        make_config("sito", similarity_dtype="fp8")


# Timesteps a sampler or the classifier may pass: every integer t, and Euler's float32 ladder.
_TIMESTEPS = [float(t) for t in range(1000)] + torch.linspace(999, 0, 50).tolist()


def test_bigain_td_alpha_schedule_equals_python_float_arithmetic():
    from bigain import make_config

    start, end = 0.8, 1.2
    cfg = make_config("bigain-td", alpha_schedule=(start, end))
    t = torch.tensor(_TIMESTEPS, dtype=torch.float32)
    alpha = cfg.alpha_for(t)
    python = [start * (s / 999) + end * (1 - s / 999) for s in t.tolist()]
    assert alpha.tolist() == python
    # the blend weights as float32 kernels see them: f32(alpha) and f32(1 - alpha)
    assert torch.equal(alpha.to(torch.float32), torch.tensor(python, dtype=torch.float32))
    assert torch.equal(
        (1 - alpha).to(torch.float32), torch.tensor([1 - a for a in python], dtype=torch.float32)
    )
    assert torch.equal(cfg.alpha_for(t.to(torch.int64)[:1000]), alpha[:1000])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bigain_td_kv_source_per_row_schedule_equals_reference_blend(dtype):
    from bigain import make_config

    start, end = 0.8, 1.2
    cfg = make_config("bigain-td", alpha_schedule=(start, end))
    ts = [975.0, 525.0, 25.0, 979.591796875]
    h = w = 8
    tokens = torch.randn(len(ts), h * w, 6, generator=torch.Generator().manual_seed(7)).to(dtype)
    got = cfg.kv_source(tokens, ops.Grid.image(h, w), 2, torch.tensor(ts))
    for row, s in enumerate(ts):
        a = start * (s / 999) + end * (1 - s / 999)
        grid = ops.tokens_to_map(tokens[row : row + 1], h, w)
        expected = ops.map_to_tokens(a * ops.nearest_exact(grid, 2) + (1 - a) * ops.average(grid, 2))
        assert torch.equal(got[row : row + 1], expected), (dtype, s)


def _unet_outputs(method: str | None, timesteps, host=None, **options) -> torch.Tensor:
    import contextlib

    import bigain
    from conftest import make_tiny_unet

    unet = make_tiny_unet()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 16, 16, generator=g)
    cond = torch.randn(2, 5, 32, generator=g)
    if method is not None:
        bigain.apply(unet, method, **options)
    hint = contextlib.nullcontext() if host is None else bigain.host_timesteps(unet, host)
    with torch.no_grad(), hint:
        return unet(x, timesteps, encoder_hidden_states=cond).sample


@pytest.mark.parametrize("method", ["todo", "bigain-td"])
def test_kv_switch_off_only_when_every_row_is_at_or_below_stop_t(method):
    base = _unet_outputs(None, torch.tensor([0, 500]))
    off = _unet_outputs(None, torch.tensor([0, 0]))
    # every row at t = 0, known on the host (Python numbers, or told by host_timesteps): off
    assert torch.equal(_unet_outputs(method, 0), _unet_outputs(None, 0))
    assert torch.equal(_unet_outputs(method, torch.tensor([0, 0]), host=[0, 0]), off)
    # a timestep tensor alone is never read (a read would stall a GPU): the forward stays compressed
    assert not torch.equal(_unet_outputs(method, torch.tensor([0, 0])), off)
    # a batch that mixes t = 0 with t > 0 is compressed in every row, the t = 0 row included
    mixed = _unet_outputs(method, torch.tensor([0, 500]), host=[0, 500])
    assert not torch.equal(mixed[0], base[0]) and not torch.equal(mixed[1], base[1])
    # stop_t=None never switches off; a higher stop_t switches off more
    assert not torch.equal(_unet_outputs(method, 0, stop_t=None), _unet_outputs(None, 0))
    assert torch.equal(_unet_outputs(method, torch.tensor([0, 500]), host=[0, 500], stop_t=500), base)
