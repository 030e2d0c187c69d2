"""Cosmos (`CosmosTransformer3DModel`): the grid from the (B, C, F, H, W) latent over (p_t, p_h, p_w)
(also with video-to-world's condition channel), the three timestep conventions (Cosmos 2's noise
fraction, Cosmos 1.0's EDM noise conditioning, per-frame timesteps), the text of the
cross-attention left whole, rotary rows (CogView4's half split on (B, heads, S, D)) that follow
merged tokens and downsampled keys, the processor on gathered tokens as the reference, and grids the
windows do not divide.
(tests/test_coverage.py runs every method at its defaults on the "cosmos2" and "cosmos2-video2world"
tiny configs.)"""

from __future__ import annotations

import math

import pytest
import torch
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import relative_placement
from bigain.backbones.cosmos import CosmosBackbone
from conftest import run_kw, seen_forward
from tiny_models import cosmos_inputs, make_tiny_cosmos

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
VIDEO = 3 * 6 * 10


def test_grid_timesteps_and_default_placement():
    cosmos = make_tiny_cosmos(layers=3)
    report = bigain.apply(cosmos, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]
    fwd = seen_forward(cosmos, cosmos_inputs(2, latent=(2, 8, 14), t=(0.7, 0.03)))
    assert fwd.grid == ops.Grid(2, 4, 7)
    torch.testing.assert_close(fwd.timesteps, torch.tensor([700.0, 30.0]))  # 1000 * the noise fraction
    # video-to-world: per-frame timesteps, the first frame nearly clean: the row's noisiest frame
    fwd = seen_forward(cosmos, cosmos_inputs(2, t=(0.7, 0.03), per_frame=True))
    torch.testing.assert_close(fwd.timesteps, torch.tensor([700.0, 30.0]))
    bigain.remove(cosmos)
    assert relative_placement(28) == (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
    assert relative_placement(36) == (*range(2, 8), *range(9, 16))


def test_cosmos_1_edm_timesteps_are_read_on_the_same_scale():
    cosmos = make_tiny_cosmos(learnable=True)
    bigain.apply(cosmos, "todo")
    sigmas = (80.0, 0.5)
    c = [0.25 * math.log(s) for s in sigmas]  # EDMEulerScheduler.precondition_noise
    fwd = seen_forward(cosmos, cosmos_inputs(2, t=c))
    expected = [1000.0 * s / (s + 1.0) for s in sigmas]
    torch.testing.assert_close(fwd.timesteps, torch.tensor(expected))
    assert fwd.timesteps[0] > 980.0 and abs(fwd.timesteps[1] - 1000.0 / 3) < 1e-2
    bigain.remove(cosmos)


@pytest.mark.parametrize("learnable", [False, True])
def test_every_method_compresses_and_removal_is_exact(learnable):
    cosmos = make_tiny_cosmos(learnable=learnable)
    kw = cosmos_inputs(2, t=(-0.5, 0.2) if learnable else (0.7, 0.03))
    base = run_kw(cosmos, kw)
    for method in METHODS:
        token = {"merge_crossattn": True, "merge_mlp": True} if method in ("tome", "sito") else {}
        bigain.apply(cosmos, method, blocks="all", **token)
        out = run_kw(cosmos, kw)
        bigain.remove(cosmos)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(cosmos, kw), base)


@pytest.mark.parametrize("method", METHODS)
def test_text_is_untouched(method, monkeypatch):
    cosmos = make_tiny_cosmos()
    kw = cosmos_inputs(2)
    cross, selfs = [], []
    for b in cosmos.transformer_blocks:
        b.attn2.to_k.register_forward_hook(lambda m, a, out: cross.append(out.shape[1]))
        b.attn2.to_q.register_forward_hook(lambda m, a, out: cross.append(-out.shape[1]))
        b.attn1.to_k.register_forward_hook(lambda m, a, out: selfs.append(out.shape[1]))
    token = {"merge_crossattn": True} if method not in ("todo", "bigain-td") else {}
    bigain.apply(cosmos, method, blocks="all", **token)
    run_kw(cosmos, kw)
    bigain.remove(cosmos)
    assert cross[1::2] == [5, 5, 5]  # the text keys of the cross-attention: every token
    queries = [-q for q in cross[0::2]]
    if method in ("todo", "bigain-td"):
        assert queries == [VIDEO] * 3 and all(k < VIDEO for k in selfs)  # video keys downsampled
    else:
        assert all(q < VIDEO for q in queries) and all(k < VIDEO for k in selfs)


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    cosmos = make_tiny_cosmos()
    kw = cosmos_inputs(2)
    base = run_kw(cosmos, kw)
    bigain.apply(cosmos, _PermuteConfig(blocks="all", merge_mlp=True, merge_crossattn=True))
    permuted = run_kw(cosmos, kw)
    bigain.remove(cosmos)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(CosmosBackbone, "rope_kwarg", None)  # teeth: the model's rows on reordered tokens
    bigain.apply(cosmos, _PermuteConfig(blocks="all"))
    wrong = run_kw(cosmos, kw)
    bigain.remove(cosmos)
    assert (wrong - base).abs().max() > 1e-3


def test_rotary_positions_follow_downsampled_keys():
    cosmos = make_tiny_cosmos()
    kw = cosmos_inputs(2)
    base = run_kw(cosmos, kw)
    bigain.apply(cosmos, _PermutedKeys(blocks="all"))
    permuted = run_kw(cosmos, kw)
    bigain.remove(cosmos)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pruned_attention_is_the_processor_on_the_gathered_tokens(dtype, monkeypatch):
    """The slow reference: the processor called on the kept tokens with their rows of the model's
    tables gives, bit for bit, the patched self-attention's output at those tokens."""
    cosmos = make_tiny_cosmos(layers=1).to(dtype)
    kw = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in cosmos_inputs(2).items()}
    attn = cosmos.transformer_blocks[0].attn1
    seen, out, plans = {}, {}, []
    bigain.apply(cosmos, "sito", blocks="all")
    patch = cosmos._bigain_patch.patches[0]
    make_plan = patch._make_plan

    def keep_plan(x):
        make_plan(x)
        plans.append(patch.plan)

    monkeypatch.setattr(patch, "_make_plan", keep_plan)
    h1 = attn.register_forward_pre_hook(lambda m, a, k: seen.setdefault("call", (a, dict(k))), with_kwargs=True)
    h2 = attn.register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    run_kw(cosmos, kw)
    h1.remove()
    h2.remove()
    bigain.remove(cosmos)
    args, kwargs = seen["call"]
    x = args[0]
    cos, sin = kwargs["image_rotary_emb"]
    keep = plans[0].keep_idx
    assert keep.shape[1] < x.shape[1]
    with torch.no_grad():
        for i in range(2):
            ref = attn.processor(attn, x[i : i + 1, keep[i]], image_rotary_emb=(cos[keep[i]], sin[keep[i]]))
            assert torch.equal(plans[0].reduce(out["y"])[i : i + 1], ref)


def test_video2world_condition_channel_and_per_frame_timesteps():
    cosmos = make_tiny_cosmos(in_channels=5)
    kw = cosmos_inputs(2, condition=True, per_frame=True)
    base = run_kw(cosmos, kw)
    for method in METHODS:
        bigain.apply(cosmos, method, blocks="all")
        out = run_kw(cosmos, kw)
        bigain.remove(cosmos)
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(cosmos, kw), base)


@pytest.mark.parametrize("latent", [(3, 10, 14), (1, 6, 6), (2, 6, 10)])
def test_grids_the_windows_do_not_divide_work(latent):
    cosmos = make_tiny_cosmos()
    kw = cosmos_inputs(2, latent=latent)
    base = run_kw(cosmos, kw)
    for method in METHODS:
        bigain.apply(cosmos, method, blocks="all")
        out = run_kw(cosmos, kw)
        bigain.remove(cosmos)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(cosmos, kw), base)
