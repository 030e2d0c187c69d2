"""Flux 2 (`Flux2Transformer2DModel`): the grid from the four-axis `img_ids` (non-square), sigmas read
on the 1000 scale, the default placement over double- then single-stream blocks, text tokens left
whole (also in the single-stream [text; image] sequence), merged tokens attending with their own
rotary rows (checked against the processor called on explicitly gathered tokens and rows, one sample
at a time), KV methods refused for the fused single-stream projection, reference-image calls refused,
Klein's KV-cached steps and fused double-stream projections taken.
(tests/test_coverage.py runs every method at its defaults on the "flux2" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import every_method_changes_the_output, rows_follow_tokens
from test_backbones import _PermuteConfig

import bigain
from bigain import ops
from bigain.backbones import Flux2Backbone, find_backbone
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import flux2_ids, flux2_inputs, make_tiny_flux2

TOKEN_METHODS = ["tome", "bigain-tm", "sito"]
KV_METHODS = ["todo", "bigain-td"]
TEXT, H, W = 5, 6, 10


def test_adapter_grid_timesteps_and_default_placement():
    f2 = make_tiny_flux2(layers=2, single_layers=3)
    assert isinstance(find_backbone(f2), Flux2Backbone)
    report = bigain.apply(f2, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1", "single_transformer_blocks.0"]
    fwd = seen_forward(f2, flux2_inputs(2, h=4, w=12, sigma=(0.7, 0.25)))
    assert fwd.grid == ops.Grid.image(4, 12)  # rows and columns from img_ids, not a square
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 250.0])  # sigma * 1000
    bigain.remove(f2)


def test_every_token_method_compresses_both_block_kinds_and_removal_is_exact():
    double, single = (0, 1), (2, 3)
    f2, kw = make_tiny_flux2(), flux2_inputs(2)
    every_method_changes_the_output(f2, kw, (double, single), methods=TOKEN_METHODS)


@pytest.mark.parametrize("method", KV_METHODS)
def test_kv_methods_are_refused_for_the_fused_single_stream_projection(method):
    f2 = make_tiny_flux2()
    for blocks in ("default", (0, 1)):
        with pytest.raises(ValueError, match=r"does not apply to Flux2Transformer2DModel: .*to_qkv_mlp_proj"):
            bigain.apply(f2, method, blocks=blocks)
        assert not bigain.is_patched(f2)


def _calls(f2):
    """Every attention call: its inputs before bigain's hooks (rotary tables included), its output
    after them, and the token plan of its block (which the post-hook still sees)."""
    calls, handles = [], []
    patches = {id(p.block.roles["attn"]): p for p in f2._bigain_patch.patches}

    def before(m, args, kwargs):
        calls.append({"attn": m, "kw": dict(kwargs)})

    def after(m, args, kwargs, out):
        patch = patches.get(id(m))
        calls[-1].update(out=out, plan=None if patch is None else patch.plan)

    for block in [*f2.transformer_blocks, *f2.single_transformer_blocks]:
        handles.append(block.attn.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(block.attn.register_forward_hook(after, with_kwargs=True))
    return calls, handles


def _reference(call):
    """The attention output the reduced call must give, made without bigain: per sample, the
    processor on [text; that sample's reduced image tokens] with the rotary rows of the tokens
    present (the merged token keeps its destination's row), expanded with the same plan."""
    attn, kw, plan = call["attn"], call["kw"], call["plan"]
    cos, sin = kw["image_rotary_emb"]
    positions = _plan_positions(plan)
    x, enc = kw["hidden_states"], kw.get("encoder_hidden_states")
    single = enc is None
    img = x[:, TEXT:] if single else x
    reduced = plan.reduce(img)
    outs, texts = [], []
    for b in range(x.shape[0]):
        rows = positions[b] + TEXT
        tables = (torch.cat([cos[:TEXT], cos[rows]]), torch.cat([sin[:TEXT], sin[rows]]))
        if single:
            y = attn.processor(attn, torch.cat([x[b : b + 1, :TEXT], reduced[b : b + 1]], dim=1), None, tables)
            texts.append(y[:, :TEXT])
            outs.append(y[:, TEXT:])
        else:
            y, t = attn.processor(attn, reduced[b : b + 1], enc[b : b + 1], None, tables)
            outs.append(y)
            texts.append(t)
    image = plan.expand(torch.cat(outs))
    text = torch.cat(texts)
    return torch.cat([text, image], dim=1) if single else (image, text)


@pytest.mark.parametrize("grid", [(H, W), (4, 12)])
@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_reduced_attention_matches_the_processor_on_gathered_tokens_and_rows(method, grid):
    f2 = make_tiny_flux2()
    kw = flux2_inputs(2, h=grid[0], w=grid[1])
    bigain.apply(f2, method, blocks="all")
    calls, handles = _calls(f2)
    run_kw(f2, kw)
    for h in handles:
        h.remove()
    assert len(calls) == 4 and all(c["plan"] is not None for c in calls)
    with torch.no_grad():
        for c in calls:
            ref = _reference(c)
            if isinstance(ref, tuple):  # double-stream: (image, text)
                for got, want in zip(c["out"], ref):
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            else:
                torch.testing.assert_close(c["out"], ref, rtol=1e-5, atol=1e-5)
    bigain.remove(f2)


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_text_tokens_are_untouched(method, monkeypatch):
    from diffusers.models.transformers import transformer_flux2 as tf2

    seen = []
    double, single = tf2.Flux2AttnProcessor.__call__, tf2.Flux2ParallelSelfAttnProcessor.__call__

    def spy_double(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        seen.append(("double", hidden_states, encoder_hidden_states, image_rotary_emb))
        return double(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def spy_single(self, attn, hidden_states, attention_mask=None, image_rotary_emb=None):
        seen.append(("single", hidden_states, None, image_rotary_emb))
        return single(self, attn, hidden_states, attention_mask, image_rotary_emb)

    f2 = make_tiny_flux2()
    kw = flux2_inputs(2)
    inputs = []
    for block in [*f2.transformer_blocks, *f2.single_transformer_blocks]:
        block.attn.register_forward_pre_hook(lambda m, a, k: inputs.append(k), with_kwargs=True)
    bigain.apply(f2, method, blocks="all")
    monkeypatch.setattr(tf2.Flux2AttnProcessor, "__call__", spy_double)
    monkeypatch.setattr(tf2.Flux2ParallelSelfAttnProcessor, "__call__", spy_single)
    run_kw(f2, kw)
    bigain.remove(f2)
    assert [s[0] for s in seen] == ["double", "double", "single", "single"]
    for (kind, hidden, enc, tables), given in zip(seen, inputs):
        assert tables is None  # bigain rotates the reduced tokens itself
        if kind == "single":  # [text; image]: the text first and whole, the image reduced
            assert torch.equal(hidden[:, :TEXT], given["hidden_states"][:, :TEXT])
            assert TEXT < hidden.shape[1] < TEXT + H * W
        else:
            assert enc is given["encoder_hidden_states"]
            assert hidden.shape[1] < H * W


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    rows_follow_tokens(make_tiny_flux2(), flux2_inputs(2), teeth=monkeypatch, merge_mlp=True)


def test_fused_double_stream_projections_take_token_methods():
    f2 = make_tiny_flux2()
    kw = flux2_inputs(2)
    base = run_kw(f2, kw)
    f2.fuse_qkv_projections()
    assert f2.transformer_blocks[0].attn.fused_projections
    bigain.apply(f2, _PermuteConfig(blocks="all", merge_mlp=True))
    torch.testing.assert_close(run_kw(f2, kw), base, rtol=1e-5, atol=1e-5)
    bigain.apply(f2, "tome", blocks="all")
    assert not torch.allclose(run_kw(f2, kw), base, atol=1e-6)
    bigain.remove(f2)


def _with_reference(kw: dict, first: bool) -> dict:
    """The call with a 3x4 reference image's tokens (t id 10) after the image (FLUX.2 editing) or
    before it (Klein's KV-cache extract step)."""
    g = torch.Generator().manual_seed(7)
    ref = torch.randn(2, 12, 16, generator=g)
    ref_ids = flux2_ids(3, 4, t=10).expand(2, -1, -1)
    x, ids = kw["hidden_states"], kw["img_ids"]
    pair = ((ref, x), (ref_ids, ids)) if first else ((x, ref), (ids, ref_ids))
    return dict(kw, hidden_states=torch.cat(pair[0], dim=1), img_ids=torch.cat(pair[1], dim=1))


@pytest.mark.parametrize("first", [False, True], ids=["edit", "klein-extract"])
def test_reference_image_tokens_are_refused(first):
    f2 = make_tiny_flux2()
    bigain.apply(f2, "tome", blocks="all")
    with pytest.raises(ValueError, match="reference-image tokens share the sequence"):
        run_kw(f2, _with_reference(flux2_inputs(2), first))
    bigain.remove(f2)


def test_klein_kv_cached_steps_take_token_methods():
    from diffusers.models.transformers.transformer_flux2 import (
        Flux2KVAttnProcessor,
        Flux2KVParallelSelfAttnProcessor,
    )

    f2 = make_tiny_flux2()
    for block in f2.transformer_blocks:
        block.attn.set_processor(Flux2KVAttnProcessor())
    for block in f2.single_transformer_blocks:
        block.attn.set_processor(Flux2KVParallelSelfAttnProcessor())
    kw = flux2_inputs(2)
    with torch.no_grad():  # the unpatched extract step fills the cache with the reference keys/values
        _, cache = f2(**_with_reference(kw, True), kv_cache_mode="extract", num_ref_tokens=12)
    cached = dict(kw, kv_cache=cache, kv_cache_mode="cached")
    base = run_kw(f2, cached)
    bigain.apply(f2, _PermuteConfig(blocks="all", merge_mlp=True))
    torch.testing.assert_close(run_kw(f2, cached), base, rtol=1e-5, atol=1e-5)
    bigain.apply(f2, "tome", blocks="all")
    out = run_kw(f2, cached)
    bigain.remove(f2)
    assert not torch.allclose(out, base, atol=1e-6)
    assert torch.equal(run_kw(f2, cached), base)


def test_img_ids_that_do_not_match_the_tokens_are_refused():
    f2 = make_tiny_flux2()
    bigain.apply(f2, "tome", blocks="all")
    kw = flux2_inputs(2)
    with pytest.raises(ValueError, match="img_ids describe a 6x4 grid but there are 60 tokens"):
        run_kw(f2, dict(kw, img_ids=kw["img_ids"][:, :54]))
    bigain.remove(f2)
