"""SANA-Video (`SanaVideoTransformer3DModel`): the grid from the (B, C, F, H, W) latent (non-square),
image-to-video's per-token timesteps read per row, the default placement, token methods on the linear
self-attention with the rotary rows of the tokens present handed to its processor (checked against
the processor itself on explicitly gathered rows), the text and its mask left whole in the
cross-attention, KV methods refused with the reason, odd grids.
(tests/test_coverage.py runs every method the adapter takes at its defaults on the "sana-video" and
"sana-video-i2v" tiny configs.)"""

from __future__ import annotations

import pytest
import torch
from test_backbones import _PermuteConfig

import bigain
from bigain import ops
from bigain.backbones import find_backbone
from bigain.backbones import sana_video as adapter
from bigain.backbones.sana_video import SanaVideoBackbone
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import make_tiny_sana_video, sana_video_inputs

TOKEN_METHODS = ["tome", "bigain-tm", "sito"]
N = 2 * 6 * 10


@pytest.fixture(scope="module")
def sv():
    return make_tiny_sana_video()


def test_grid_timesteps_and_default_placement():
    model = make_tiny_sana_video(layers=4)
    assert isinstance(find_backbone(model), SanaVideoBackbone)
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(model, sana_video_inputs(2, grid=(3, 4, 6), t=(700.0, 250.0)))
    assert fwd.grid == ops.Grid(3, 4, 6)
    assert fwd.timesteps.tolist() == [700.0, 250.0]
    # image-to-video: per-token timesteps, 0 on the conditioning frame, read as the row's step
    fwd = seen_forward(model, sana_video_inputs(2, t=(700.0, 250.0), i2v=True))
    assert fwd.timesteps.tolist() == [700.0, 250.0]
    bigain.remove(model)
    assert bigain.backbones.relative_placement(20) == tuple(range(1, 9))  # SANA-Video 2B


def test_token_methods_change_the_output_and_removal_is_exact(sv):
    for kw in (sana_video_inputs(2), sana_video_inputs(2, grid=(3, 4, 6), i2v=True)):
        base = run_kw(sv, kw)
        for method in TOKEN_METHODS:
            opts = {"merge_crossattn": True} if method != "sito" else {}
            bigain.apply(sv, method, blocks="all", **opts)
            out = run_kw(sv, kw)
            bigain.remove(sv)
            assert out.shape == base.shape and torch.isfinite(out).all()
            assert not torch.allclose(out, base, atol=1e-5), method
        assert torch.equal(run_kw(sv, kw), base)


@pytest.mark.parametrize("method", ["todo", "bigain-td"])
def test_kv_methods_are_refused_on_the_linear_attention(sv, method):
    with pytest.raises(ValueError, match="self-attention is linear"):
        bigain.apply(sv, method)
    assert not hasattr(sv, "_bigain_patch") or sv._bigain_patch is None


def _spy(model, monkeypatch):
    """Record every self-attention call: what the attention gets before bigain's hooks, what the
    processor gets after them and returns, and the block's plan; and every cross-attention call's
    text and mask as the processor gets them."""
    from diffusers.models.transformers.transformer_sana_video import (
        SanaAttnProcessor2_0,
        SanaLinearAttnProcessor3_0,
    )

    calls, cross = [], []
    original = SanaLinearAttnProcessor3_0.__call__
    original_cross = SanaAttnProcessor2_0.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        patch = getattr(model, "_bigain_patch", None)
        mine = [p for p in (patch.patches if patch else []) if p.block.roles["attn"] is attn]
        plan = getattr(mine[0], "plan", None) if mine else None
        calls[-1].update(hidden=hidden_states, tables=rotary_emb, out=out, pos=None if plan is None else _plan_positions(plan))
        return out

    def spy_cross(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
        cross.append({"hidden": hidden_states, "text": encoder_hidden_states, "mask": attention_mask})
        return original_cross(self, attn, hidden_states, encoder_hidden_states, attention_mask)

    def before(m, args, kwargs):
        calls.append({"attn": m, "x": args[0], "tables_in": kwargs["rotary_emb"]})

    monkeypatch.setattr(SanaLinearAttnProcessor3_0, "__call__", spy)
    monkeypatch.setattr(SanaAttnProcessor2_0, "__call__", spy_cross)
    handles = [b.attn1.register_forward_pre_hook(before, with_kwargs=True, prepend=True) for b in model.transformer_blocks]
    return calls, cross, handles, original


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_rows_follow_the_tokens_and_the_text_is_untouched(sv, method, monkeypatch):
    kw = sana_video_inputs(2)
    _, base_cross, handles, _ = _spy(sv, monkeypatch)
    run_kw(sv, kw)
    for h in handles:
        h.remove()
    monkeypatch.undo()
    opts = {"merge_crossattn": True} if method != "sito" else {}
    bigain.apply(sv, method, blocks="all", **opts)
    calls, cross, handles, processor = _spy(sv, monkeypatch)
    run_kw(sv, kw)
    for h in handles:
        h.remove()
    bigain.remove(sv)
    assert len(calls) == len(sv.transformer_blocks) == len(cross)
    for c in calls:
        queries = c["hidden"].shape[1]
        assert queries < N and c["pos"].shape[1] == queries
        cos, sin = c["tables"]
        assert cos.shape == (2, queries, 1, 16) and sin.shape == cos.shape
        # A slow reference: the processor itself, given each sample's rows of the tokens present.
        full_cos, full_sin = c["tables_in"]
        rows = (torch.stack([full_cos[0, p] for p in c["pos"]]), torch.stack([full_sin[0, p] for p in c["pos"]]))
        ref = processor(c["attn"].processor, c["attn"], c["hidden"], None, None, rows)
        assert torch.equal(c["out"], ref)
    for got, ref in zip(cross, base_cross):
        # the cross-attention gets the text and its padding mask as the model made them
        assert torch.equal(got["text"], ref["text"]) and torch.equal(got["mask"], ref["mask"])
        assert (got["hidden"].shape[1] < N) == bool(opts)


def test_rotary_positions_follow_reordered_tokens(sv, monkeypatch):
    kw = sana_video_inputs(2)
    base = run_kw(sv, kw)
    bigain.apply(sv, _PermuteConfig(blocks="all"))
    permuted = run_kw(sv, kw)
    bigain.remove(sv)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    # The test has teeth: the rows of the model's order (not the tokens') rotate the reordered tokens.
    monkeypatch.setattr(adapter, "_positions", lambda plan: torch.arange(plan.inverse.shape[1]).expand(2, -1))
    bigain.apply(sv, _PermuteConfig(blocks="all"))
    wrong = run_kw(sv, kw)
    bigain.remove(sv)
    assert (wrong - base).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("options", "grid", "message"),
    [
        ({"sx": 2, "sy": 2}, (2, 3, 5), None),  # odd rows and columns: windows that do not divide them
        ({"st": 2}, (1, 6, 10), "option sx=2, sy=2, st=2 does not fit the 1x6x10 token grid"),
    ],
)
def test_odd_grids_work_or_fail_naming_the_option_and_the_grid(sv, options, grid, message):
    kw = sana_video_inputs(2, grid=grid)
    bigain.apply(sv, "tome", blocks="all", **options)
    try:
        if message is None:
            assert torch.isfinite(run_kw(sv, kw)).all()
        else:
            with pytest.raises(ValueError, match=message):
                run_kw(sv, kw)
    finally:
        bigain.remove(sv)
