"""EasyAnimate (`EasyAnimateTransformer3DModel`): the grid from the (B, C, F, H, W) latent
(non-square), the default placement, MMDiT blocks and blocks past `mmdit_layers` (which join
[text; video] before the projections), the text left whole, rotary rows that follow merged tokens and
downsampled keys (checked against the processor itself on explicitly gathered rows), KV methods
refused on models with shared-projection blocks, odd grids.
(tests/test_coverage.py runs every method at its defaults on the "easyanimate" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import find_backbone
from bigain.backbones.easyanimate import EasyAnimateBackbone
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import easyanimate_inputs, make_tiny_easyanimate

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
TOKEN_METHODS = ["tome", "bigain-tm", "sito"]
N, TEXT = 2 * 6 * 10, 5


@pytest.fixture(scope="module")
def ea():
    return make_tiny_easyanimate()


@pytest.fixture(scope="module")
def mixed():
    return make_tiny_easyanimate(mmdit_layers=2)  # blocks 2 and 3 join [text; video] before the projections


def test_grid_timesteps_and_default_placement():
    model = make_tiny_easyanimate(layers=4)
    assert isinstance(find_backbone(model), EasyAnimateBackbone)
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(model, easyanimate_inputs(2, grid=(3, 4, 6), t=(700.0, 250.0)))
    assert fwd.grid == ops.Grid(3, 4, 6)  # every latent frame; H and W over patch 2
    assert fwd.timesteps.tolist() == [700.0, 250.0]
    bigain.remove(model)
    assert bigain.backbones.relative_placement(48) == (*range(2, 11), *range(12, 21))  # V5.1-12B


def test_every_method_changes_the_output_and_removal_is_exact(ea, mixed):
    kw = easyanimate_inputs(2)
    for model, methods in ((ea, METHODS), (mixed, TOKEN_METHODS)):
        base = run_kw(model, kw)
        for method in methods:
            for blocks in ((0, 1), (2, 3)):
                opts = {"merge_mlp": True} if method in ("tome", "bigain-tm") else {}
                bigain.apply(model, method, blocks=blocks, **opts)
                out = run_kw(model, kw)
                bigain.remove(model)
                assert out.shape == base.shape and torch.isfinite(out).all()
                assert not torch.allclose(out, base, atol=1e-5), (method, blocks)
        assert torch.equal(run_kw(model, kw), base)


@pytest.mark.parametrize("method", ["todo", "bigain-td"])
def test_kv_methods_are_refused_where_text_and_video_share_projections(mixed, method):
    bigain.apply(mixed, method, blocks=(0, 1))
    try:
        with pytest.raises(ValueError, match="blocks past mmdit_layers"):
            run_kw(mixed, easyanimate_inputs(2))
    finally:
        bigain.remove(mixed)


def _spy(model, monkeypatch):
    """Record every attention call: what it gets before bigain's hooks, what the processor gets after
    them and returns, the keys to_k makes, and the block's plan."""
    from diffusers.models.transformers.transformer_easyanimate import EasyAnimateAttnProcessor2_0

    calls, handles = [], []
    original = EasyAnimateAttnProcessor2_0.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        patch = getattr(model, "_bigain_patch", None)
        mine = [p for p in (patch.patches if patch else []) if p.block.roles["attn"] is attn]
        plan = getattr(mine[0], "plan", None) if mine else None
        calls[-1].update(hidden=hidden_states, text=encoder_hidden_states, tables=image_rotary_emb, out=out,
                         pos=None if plan is None else _plan_positions(plan))
        return out

    def before(m, args, kwargs):
        calls.append({"attn": m, "x": kwargs["hidden_states"], "text_in": kwargs["encoder_hidden_states"],
                      "tables_in": kwargs["image_rotary_emb"]})

    monkeypatch.setattr(EasyAnimateAttnProcessor2_0, "__call__", spy)
    for block in model.transformer_blocks:
        handles.append(block.attn1.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        handles.append(block.attn1.to_k.register_forward_hook(lambda m, a, out: calls[-1].update(keys=out)))
    return calls, handles, original


@pytest.mark.parametrize("method", METHODS)
def test_text_is_untouched_and_rows_follow_the_tokens(ea, mixed, method, monkeypatch):
    kv = method in ("todo", "bigain-td")
    for model in (ea,) if kv else (ea, mixed):
        bigain.apply(model, method, blocks="all")
        calls, handles, processor = _spy(model, monkeypatch)
        run_kw(model, easyanimate_inputs(2))
        for h in handles:
            h.remove()
        bigain.remove(model)
        monkeypatch.undo()
        assert len(calls) == len(model.transformer_blocks)
        for c in calls:
            attn, x, hidden = c["attn"], c["x"], c["hidden"]
            mmdit = attn.add_q_proj is not None
            assert c["text"] is c["text_in"] and c["text"].shape[1] == TEXT  # the text whole
            assert c["out"][1].shape[1] == TEXT  # and its output part
            assert c["tables"] is None  # bigain rotates the queries and keys itself
            if kv:
                assert hidden is x and c["keys"].shape[1] < N  # to_k sees the downsampled video alone
                continue
            queries = hidden.shape[1]
            assert queries < N and c["keys"].shape[1] == (queries if mmdit else TEXT + queries)
            # A slow reference: the processor itself, per sample, given the rows of the tokens present.
            cos, sin = c["tables_in"]
            for b, pos in enumerate(c["pos"]):
                ref = processor(attn.processor, attn, hidden[b : b + 1], c["text"][b : b + 1], None, (cos[pos], sin[pos]))
                torch.testing.assert_close(c["out"][0][b : b + 1], ref[0], rtol=1e-6, atol=1e-6)
                torch.testing.assert_close(c["out"][1][b : b + 1], ref[1], rtol=1e-6, atol=1e-6)


def test_rotary_positions_follow_reordered_tokens_and_keys(ea, mixed, monkeypatch):
    kw = easyanimate_inputs(2)
    for model, configs in ((ea, (_PermuteConfig, _PermutedKeys)), (mixed, (_PermuteConfig,))):
        base = run_kw(model, kw)
        for config in configs:
            bigain.apply(model, config(blocks="all"))
            permuted = run_kw(model, kw)
            bigain.remove(model)
            torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    # The test has teeth: left in the call, the tables rotate the reordered tokens with the model's rows.
    monkeypatch.setattr(EasyAnimateBackbone, "rope_kwarg", None)
    base = run_kw(ea, kw)
    bigain.apply(ea, _PermuteConfig(blocks="all"))
    wrong = run_kw(ea, kw)
    bigain.remove(ea)
    assert (wrong - base).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("method", "options", "grid", "message"),
    [
        ("tome", {"sx": 2, "sy": 2}, (2, 3, 5), None),  # odd rows and columns: windows that do not divide them
        ("tome", {"st": 2}, (1, 6, 10), "option sx=2, sy=2, st=2 does not fit the 1x6x10 token grid"),
        ("bigain-td", {"downsample_factor": 4}, (2, 3, 5), "option downsample_factor=4 does not fit the 2x3x5 token grid"),
    ],
)
def test_odd_grids_work_or_fail_naming_the_option_and_the_grid(ea, method, options, grid, message):
    kw = easyanimate_inputs(2, grid=grid)
    bigain.apply(ea, method, blocks="all", **options)
    try:
        if message is None:
            assert torch.isfinite(run_kw(ea, kw)).all()
        else:
            with pytest.raises(ValueError, match=message):
                run_kw(ea, kw)
    finally:
        bigain.remove(ea)
