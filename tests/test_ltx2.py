"""LTX-2 (`LTX2VideoTransformer3DModel`): the grid from num_frames/height/width over the patch sizes,
(per-token) timesteps, the default placement, every method on both rotary layouts (LTX-2.0's
interleaved, LTX-2.3's split) with and without tokens appended after the grid, the audio stream and
the texts left whole, every video self-attention call equal to a slow reference (the processor's
arithmetic on explicitly gathered tokens and rotary rows), rotary rows that follow reordered tokens
and keys (also the audio-to-video attention's query rows under merge_crossattn), IC-LoRA's pairwise
self-attention mask gathered with the tokens, spatio-temporal guidance, and the refusals.
(tests/test_coverage.py runs every method at its defaults on the "ltx2" and "ltx2.3-split" configs.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import find_backbone
from bigain.backbones import ltx2 as ltx2_module
from bigain.backbones.ltx2 import LTX2Backbone
from bigain.methods.todo import ToDoConfig
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import ltx2_inputs, make_tiny_ltx2

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
LAYOUTS = [False, True]  # interleaved (LTX-2.0), split (LTX-2.3)
GRID = (2, 6, 10)


def _ic_lora_mask(batch: int, noisy: int, refs: int, strength: float = 0.3) -> torch.Tensor:
    """LTX2InContextPipeline (IC-LoRA)'s (B, S, S) multiplicative mask over [noisy tokens; one reference group]:
    full attention among the noisy tokens and within the group, `strength` between them."""
    total = noisy + refs
    mask = torch.zeros(1, total, total)
    mask[:, :noisy, :noisy] = 1.0
    mask[:, :noisy, noisy:] = strength
    mask[:, noisy:, :noisy] = strength
    mask[:, noisy:, noisy:] = 1.0
    return mask.expand(batch, -1, -1)


def test_adapter_grid_timesteps_and_default_placement():
    m = make_tiny_ltx2(layers=4)
    assert isinstance(find_backbone(m), LTX2Backbone)
    report = bigain.apply(m, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(m, ltx2_inputs(2, grid=(3, 4, 6), t=(700, 250)))
    assert fwd.grid == ops.Grid(3, 4, 6)
    assert fwd.timesteps.tolist() == [700.0, 250.0]  # the 0-1000 scale as passed
    # image-to-video's per-token timesteps (the first frame at 0): the row's step
    assert seen_forward(m, ltx2_inputs(2, per_token=True)).timesteps.tolist() == [700.0, 30.0]
    bigain.remove(m)
    assert bigain.backbones.relative_placement(48) == (*range(2, 11), *range(12, 21))  # LTX-2's 48 blocks


def test_the_grid_is_the_models_coordinate_grid_over_the_patch_sizes():
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    m = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=2, num_attention_heads=2, attention_head_dim=16,
        cross_attention_dim=32, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=8, audio_cross_attention_dim=16, num_layers=1, caption_channels=16,
    ).eval()
    kw = ltx2_inputs(2, grid=(2, 6, 10), coords=False)  # the model makes its coordinates, stepping by 2
    kw["hidden_states"] = torch.randn(2, 2 * 3 * 5, 4)
    bigain.apply(m, "tome", blocks="all")
    assert seen_forward(m, kw).grid == ops.Grid(2, 3, 5)
    bigain.remove(m)


@pytest.mark.parametrize("split", LAYOUTS)
@pytest.mark.parametrize(("grid", "appended"), [(GRID, 0), ((1, 4, 6), 0), (GRID, 6)])
def test_every_method_compresses_and_removal_is_exact(split, grid, appended):
    m = make_tiny_ltx2(split=split)
    kw = ltx2_inputs(2, grid=grid, appended=appended)
    base = run_kw(m, kw)
    for method in METHODS:
        bigain.apply(m, method, blocks="all")
        out = run_kw(m, kw)
        bigain.remove(m)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(m, kw), base)


@pytest.mark.parametrize("split", LAYOUTS)
def test_the_audio_stream_and_the_texts_are_left_whole(split):
    m = make_tiny_ltx2(split=split)
    kw = ltx2_inputs(2, appended=6)
    audio, video = 5, 2 * 6 * 10 + 6
    block = m.transformer_blocks[0]
    calls: dict[str, tuple] = {}  # each attention's call as the block makes it (before bigain's hooks)
    seen: dict[str, torch.Tensor] = {}  # what its projections get (after them)
    hooks = []
    names = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
    bigain.apply(m, "tome", blocks="all", merge_crossattn=True, merge_mlp=True)
    for name in names:
        mod = getattr(block, name)
        hooks.append(mod.register_forward_pre_hook(lambda _, a, k, name=name: calls.update({name: (a, k)}), with_kwargs=True))
        for proj in ("to_q", "to_k"):
            sub = getattr(mod, proj)
            hooks.append(sub.register_forward_pre_hook(lambda _, a, key=f"{name}.{proj}": seen.update({key: a[0]})))
    for name in ("ff", "audio_ff"):
        first = getattr(block, name).net[0]  # inside the feed-forward: after bigain's hooks on it
        hooks.append(first.register_forward_pre_hook(lambda _, a, name=name: seen.update({name: a[0]})))
    run_kw(m, kw)
    for h in hooks:
        h.remove()
    bigain.remove(m)

    def given(name, key):
        a, k = calls[name]
        return a[0] if key == "hidden_states" and a else k[key]

    kept = seen["attn1.to_q"].shape[1]
    assert kept < video and given("attn1", "hidden_states").shape[1] == video
    # the video-query sub-layers run on the merged grid tokens and the appended tokens
    for key in ("attn2.to_q", "audio_to_video_attn.to_q", "ff"):
        assert seen[key].shape[1] == kept, key
    # the audio stream whole
    for name in ("audio_attn1", "audio_attn2"):
        assert seen[f"{name}.to_q"] is given(name, "hidden_states")
    assert seen["video_to_audio_attn.to_q"] is given("video_to_audio_attn", "hidden_states")
    assert seen["audio_ff"].shape[1] == audio
    # the texts, the audio keys of the audio-to-video attention and the video keys of the
    # video-to-audio attention (every video token) are passed on as they came
    for name in ("attn2", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
        assert seen[f"{name}.to_k"] is given(name, "encoder_hidden_states"), name
    assert seen["video_to_audio_attn.to_k"].shape[1] == video


def _attention_calls(m, monkeypatch):
    """Record what every video self-attention gets before bigain's hooks, what its processor gets
    after them and returns, and the token plan of its block at that moment."""
    from diffusers.models.transformers import transformer_ltx2 as tl

    calls, handles = [], []
    attns = {id(b.attn1) for b in m.transformer_blocks}

    for cls in (tl.LTX2AudioVideoAttnProcessor, tl.LTX2PerturbedAttnProcessor):
        original = cls.__call__

        def spy(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                query_rotary_emb=None, key_rotary_emb=None, _original=original, **kw):
            out = _original(self, attn, hidden_states, encoder_hidden_states, attention_mask,
                            query_rotary_emb, key_rotary_emb, **kw)
            if id(attn) in attns:
                patch = next(p for p in m._bigain_patch.patches if p.block.roles["attn"] is attn)
                calls[-1].update(hidden=hidden_states, enc=encoder_hidden_states, mask=attention_mask,
                                 q_table=query_rotary_emb, out=out, plan=getattr(patch, "plan", None))
            return out

        monkeypatch.setattr(cls, "__call__", spy)

    def before(mod, args, kwargs):
        calls.append({"attn": mod, "x": kwargs["hidden_states"], "table": kwargs["query_rotary_emb"],
                      "mask0": kwargs.get("attention_mask")})

    for block in m.transformer_blocks:
        handles.append(block.attn1.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
    return calls, handles


def _rows(table: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rows `pos` (B, R) of each sample of a (B, S, D) or split (B, heads, S, r) table."""
    b = torch.arange(pos.shape[0])[:, None]
    if table.dim() == 3:
        return table[b, pos]
    return table.transpose(1, 2)[b, pos].transpose(1, 2)


def _reference(attn, xq, kv, mask, q_table, k_table):
    """LTX2AudioVideoAttnProcessor's arithmetic, step by step, with keys and values made from `kv`
    and the queries and keys rotated by their own tables (diffusers' rotary functions)."""
    from diffusers.models.transformers.transformer_ltx2 import (
        apply_interleaved_rotary_emb,
        apply_split_rotary_emb,
    )

    rotate = apply_split_rotary_emb if attn.rope_type == "split" else apply_interleaved_rotary_emb
    b, heads = xq.shape[0], attn.heads
    q = rotate(attn.norm_q(attn.to_q(xq)), q_table)
    k = rotate(attn.norm_k(attn.to_k(kv)), k_table)
    v = attn.to_v(kv)

    def split(t):
        return t.view(b, t.shape[1], heads, -1).transpose(1, 2)

    bias = None if mask is None else mask[:, None]
    o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias)
    o = o.transpose(1, 2).flatten(2)
    if attn.to_gate_logits is not None:
        gates = 2.0 * torch.sigmoid(attn.to_gate_logits(xq))
        o = (o.unflatten(2, (heads, -1)) * gates[..., None]).flatten(2)
    return attn.to_out[0](o)


@pytest.mark.parametrize("split", LAYOUTS)
@pytest.mark.parametrize("appended", [0, 6])
@pytest.mark.parametrize("method", ["tome", "sito", "todo"])
def test_every_video_self_attention_equals_a_slow_reference(method, appended, split, monkeypatch):
    m = make_tiny_ltx2(split=split)
    n = 2 * 6 * 10
    bigain.apply(m, method, blocks="all")
    calls, handles = _attention_calls(m, monkeypatch)
    run_kw(m, ltx2_inputs(2, appended=appended))
    for handle in handles:
        handle.remove()
    bigain.remove(m)
    assert len(calls) == 2
    for c in calls:
        attn, x, table = c["attn"], c["x"], c["table"]
        b, s = x.shape[:2]
        assert s == n + appended
        rest = torch.arange(n, s).expand(b, -1)  # the appended tokens keep their rows
        assert c["q_table"] is None  # the processor does not rotate: bigain did, with the rows below
        if method == "todo":  # every query, keys and values from the nearest-exact samples
            pos = ToDoConfig().kv_positions(ops.Grid(*GRID), 2, torch.device("cpu")).expand(b, -1)
            assert c["hidden"] is x
            kv = torch.cat([x[:, :n][:, pos[0]], x[:, n:]], dim=1)
            xq, q_rows, k_rows = x, torch.arange(s).expand(b, -1), torch.cat([pos, rest], dim=1)
        else:  # the plan's tokens for queries, keys and values
            plan = c["plan"]
            xq = kv = torch.cat([plan.reduce(x[:, :n]), x[:, n:]], dim=1)
            assert torch.equal(c["hidden"], kv)  # the appended tokens after the grid's, whole
            q_rows = k_rows = torch.cat([_plan_positions(plan), rest], dim=1)
        cos, sin = table
        with torch.no_grad():
            ref = _reference(
                attn, xq, kv, None, (_rows(cos, q_rows), _rows(sin, q_rows)), (_rows(cos, k_rows), _rows(sin, k_rows))
            )
        torch.testing.assert_close(c["out"], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split", LAYOUTS)
@pytest.mark.parametrize("appended", [0, 6])
def test_rotary_positions_follow_reordered_tokens(split, appended, monkeypatch):
    # merge_crossattn: the audio-to-video attention's queries are reordered too, and their rows with them
    m = make_tiny_ltx2(split=split)
    kw = ltx2_inputs(2, appended=appended)
    base = run_kw(m, kw)
    bigain.apply(m, _PermuteConfig(blocks="all", merge_crossattn=True, merge_mlp=True))
    permuted = run_kw(m, kw)
    bigain.remove(m)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    # The test has teeth: left in the self-attention call, the tables rotate the reordered tokens with
    # the rows of the model's order, and the output changes; so does the audio-to-video attention's
    # query table left unreordered.
    with monkeypatch.context() as mp:
        mp.setattr(LTX2Backbone, "rope_kwarg", None)
        bigain.apply(m, _PermuteConfig(blocks="all"))
        wrong = run_kw(m, kw)
        bigain.remove(m)
    assert (wrong - base).abs().max() > 1e-3
    monkeypatch.setattr(ltx2_module, "_gather_rows", lambda table, pos: table)
    bigain.apply(m, _PermuteConfig(blocks="all", merge_crossattn=True))
    wrong = run_kw(m, kw)
    bigain.remove(m)
    assert (wrong - base).abs().max() > 1e-3


@pytest.mark.parametrize("split", LAYOUTS)
@pytest.mark.parametrize("appended", [0, 6])
def test_rotary_positions_follow_downsampled_keys(split, appended, monkeypatch):
    m = make_tiny_ltx2(split=split)
    kw = ltx2_inputs(2, appended=appended)
    base = run_kw(m, kw)
    bigain.apply(m, _PermutedKeys(blocks="all"))
    permuted = run_kw(m, kw)
    bigain.remove(m)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(LTX2Backbone, "rope_kwarg", None)
    bigain.apply(m, _PermutedKeys(blocks="all"))
    wrong = run_kw(m, kw)
    bigain.remove(m)
    assert (wrong - base).abs().max() > 1e-3


@pytest.mark.parametrize("split", LAYOUTS)
def test_the_rotation_is_ltx2_arithmetic(split):
    from diffusers.models.transformers.transformer_ltx2 import (
        apply_interleaved_rotary_emb,
        apply_split_rotary_emb,
    )

    m = make_tiny_ltx2(layers=1, split=split)
    kw = ltx2_inputs(2)
    tables = m.rope(kw["video_coords"])
    rotate = apply_split_rotary_emb if split else apply_interleaved_rotary_emb
    bb, attn = LTX2Backbone(), m.transformer_blocks[0].attn1
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 120, 32).to(dtype)
        assert torch.equal(bb.rope(x, *bb.rope_rows(tables), attn), rotate(x, tables))


@pytest.mark.parametrize("method", ["tome", "bigain-tm", "sito"])
def test_ic_lora_self_attention_mask_is_gathered_with_the_tokens(method):
    m = make_tiny_ltx2()
    n, refs = 2 * 6 * 10, 12
    kw = ltx2_inputs(2, appended=refs)
    kw["video_self_attention_mask"] = _ic_lora_mask(2, n, refs)
    base = run_kw(m, kw)
    assert (base - run_kw(m, dict(kw, video_self_attention_mask=None))).abs().max() > 1e-3  # the mask matters
    bigain.apply(m, _PermuteConfig(blocks="all", merge_crossattn=True, merge_mlp=True))
    permuted = run_kw(m, kw)
    bigain.remove(m)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    bigain.apply(m, method, blocks="all")
    out = run_kw(m, kw)
    bigain.remove(m)
    assert torch.isfinite(out).all() and not torch.equal(out, base)


def test_ic_lora_mask_equals_a_slow_reference(monkeypatch):
    m = make_tiny_ltx2()
    n, refs = 2 * 6 * 10, 12
    kw = ltx2_inputs(2, appended=refs)
    kw["video_self_attention_mask"] = _ic_lora_mask(2, n, refs)
    bigain.apply(m, "tome", blocks="all")
    calls, handles = _attention_calls(m, monkeypatch)
    run_kw(m, kw)
    for handle in handles:
        handle.remove()
    bigain.remove(m)
    for c in calls:
        x, mask0, plan = c["x"], c["mask0"], c["plan"]
        b = x.shape[0]
        pos = torch.cat([_plan_positions(plan), torch.arange(n, n + refs).expand(b, -1)], dim=1)
        mask = mask0[torch.arange(b)[:, None, None], pos[:, :, None], pos[:, None, :]]
        assert torch.equal(c["mask"], mask)
        xq = torch.cat([plan.reduce(x[:, :n]), x[:, n:]], dim=1)
        cos, sin = c["table"]
        rows = (_rows(cos, pos), _rows(sin, pos))
        with torch.no_grad():
            ref = _reference(c["attn"], xq, xq, mask, rows, rows)
        torch.testing.assert_close(c["out"], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["todo", "bigain-td"])
def test_kv_methods_refuse_the_ic_lora_mask(method):
    m = make_tiny_ltx2()
    kw = ltx2_inputs(2, appended=12)
    kw["video_self_attention_mask"] = _ic_lora_mask(2, 2 * 6 * 10, 12)
    bigain.apply(m, method, blocks="all")
    with pytest.raises(ValueError, match="video_self_attention_mask"):
        run_kw(m, kw)
    bigain.remove(m)
    run_kw(m, kw)


def test_spatio_temporal_guidance():
    m = make_tiny_ltx2(split=True)  # the perturbed-attention processor
    kw = dict(ltx2_inputs(2), spatio_temporal_guidance_blocks=[0])
    base = run_kw(m, kw)
    assert (base - run_kw(m, ltx2_inputs(2))).abs().max() > 1e-3  # the guidance perturbs block 0
    # token methods: the values of the merged tokens, expanded like the attention output
    bigain.apply(m, _PermuteConfig(blocks="all"))
    torch.testing.assert_close(run_kw(m, kw), base, rtol=1e-5, atol=1e-5)
    bigain.remove(m)
    # KV methods: refused on the perturbed block, taken on the others
    bigain.apply(m, "todo", blocks="all")
    with pytest.raises(ValueError, match=r"cannot run on transformer_blocks.0: spatio-temporal guidance"):
        run_kw(m, kw)
    bigain.remove(m)
    bigain.apply(m, "todo", blocks=(1,))
    out = run_kw(m, kw)
    bigain.remove(m)
    assert torch.isfinite(out).all() and not torch.equal(out, base)


def test_calls_without_the_grid_are_refused_with_a_message():
    m = make_tiny_ltx2()
    kw = ltx2_inputs(2)
    del kw["num_frames"], kw["height"], kw["width"]
    bigain.apply(m, "tome", blocks="all")
    with pytest.raises(ValueError, match="needs num_frames, height and width"):
        run_kw(m, kw)
    bigain.remove(m)
    run_kw(m, kw)  # the model itself takes it (its coordinates are given)


def test_a_grid_that_does_not_match_the_tokens_fails_naming_it():
    m = make_tiny_ltx2()
    bigain.apply(m, "tome", blocks="all")
    kw = dict(ltx2_inputs(2), width=11)
    with pytest.raises(ValueError, match="120 image tokens do not fit the 2x6x11 token grid of transformer_blocks.0"):
        run_kw(m, kw)
    bigain.remove(m)
