"""HunyuanDiT (`HunyuanDiT2DModel`): the grid from the (B, C, H, W) latent (non-square), timesteps as
passed, the default placement, every method compressing and removal restoring the model bit for bit,
every block returning its full sequence so the long skips line up, the text (cross-attention keys)
left whole, and rotary rows (adjacent pairs on the heads-first layout) that follow merged tokens,
downsampled keys and the reduced queries of the cross-attention, checked against slow references
that call the processor on explicitly gathered tokens.
(tests/test_coverage.py runs every method at its defaults on the "hunyuan-dit" tiny config.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import HunyuanDiTBackbone, find_backbone
from conftest import run_kw, seen_forward
from tiny_models import hunyuan_dit_inputs, make_tiny_hunyuan_dit

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
H, W = 6, 10  # the token grid of hunyuan_dit_inputs()


def test_adapter_grid_timesteps_and_default_placement():
    m = make_tiny_hunyuan_dit(layers=4)
    assert isinstance(find_backbone(m), HunyuanDiTBackbone)
    report = bigain.apply(m, "tome")
    assert [b.name for b in report.blocks] == ["blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(m, hunyuan_dit_inputs(2, size=(8, 20), t=(700, 30)))
    assert fwd.grid == ops.Grid.image(4, 10)  # H and W over patch_size 2, not square
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(m)
    # Hunyuan-DiT's 40 blocks: 2-8 and 10-17, all before the long skips are read back
    assert bigain.backbones.relative_placement(40) == (2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17)


@pytest.mark.parametrize("blocks", ["all", None])
def test_every_method_compresses_and_removal_is_bit_exact(blocks):
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    base = run_kw(m, kw)
    for method in METHODS:
        bigain.apply(m, method, blocks=blocks)
        out = run_kw(m, kw)
        bigain.remove(m)
        assert out.shape == base.shape and torch.isfinite(out).all(), method
        assert not torch.equal(out, base), method
        assert torch.equal(run_kw(m, kw), base), method


@pytest.mark.parametrize(
    ("method", "options"),
    [(m, {}) for m in METHODS] + [("tome", {"merge_crossattn": True, "merge_mlp": True}), ("sito", {"merge_mlp": True})],
)
def test_blocks_return_full_sequences_so_the_long_skips_line_up(method, options):
    m = make_tiny_hunyuan_dit(layers=6)  # blocks 4 and 5 fuse the outputs of blocks 1 and 0
    kw = hunyuan_dit_inputs(2)
    outputs, skips = {}, {}

    def record(i):
        def hook(mod, args, kwargs, out):
            outputs[i] = out
            skips[i] = kwargs.get("skip")

        return hook

    bigain.apply(m, method, blocks="all", **options)
    handles = [b.register_forward_hook(record(i), with_kwargs=True) for i, b in enumerate(m.blocks)]
    try:
        out = run_kw(m, kw)
    finally:
        for h in handles:
            h.remove()
        bigain.remove(m)
    assert torch.isfinite(out).all()
    assert all(o.shape == (2, H * W, 32) for o in outputs.values())
    assert skips[4] is outputs[1] and skips[5] is outputs[0]  # full-length, in the model's token order
    assert all(skips[i] is None for i in range(4))


@pytest.mark.parametrize(("method", "options"), [(m, {}) for m in METHODS] + [("tome", {"merge_crossattn": True})])
def test_text_tokens_are_untouched(method, options):
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    attn2 = m.blocks[1].attn2
    seen = {}

    def record(name):
        return lambda mod, args: seen.setdefault(name, []).append(args[0])

    handles = [attn2.to_k.register_forward_pre_hook(record("k")), attn2.to_q.register_forward_pre_hook(record("q"))]
    run_kw(m, kw)
    base_text = seen.pop("k")[0]
    seen.clear()
    bigain.apply(m, method, blocks="all", **options)
    try:
        run_kw(m, kw)
    finally:
        for h in handles:
            h.remove()
        bigain.remove(m)
    assert base_text.shape[1] == 5 + 6 and torch.equal(seen["k"][0], base_text)
    queries = seen["q"][0].shape[1]
    assert queries < H * W if options.get("merge_crossattn") else queries == H * W


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    base = run_kw(m, kw)
    config = _PermuteConfig(blocks="all", merge_crossattn=True, merge_mlp=True)
    bigain.apply(m, config)
    permuted = run_kw(m, kw)
    bigain.remove(m)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    # The test has teeth: left in the calls, the tables rotate the reordered queries and keys with the
    # rows of the model's order (self-attention), or the reordered queries (cross-attention).
    for attr in ("cross_rope", "rope_kwarg"):
        with monkeypatch.context() as mp:
            mp.setattr(HunyuanDiTBackbone, attr, False if attr == "cross_rope" else None)
            bigain.apply(m, config)
            wrong = run_kw(m, kw)
            bigain.remove(m)
        assert (wrong - base).abs().max() > 1e-3, attr


def test_rotary_positions_follow_downsampled_keys(monkeypatch):
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    base = run_kw(m, kw)
    bigain.apply(m, _PermutedKeys(blocks="all"))
    permuted = run_kw(m, kw)
    bigain.remove(m)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(HunyuanDiTBackbone, "rope_kwarg", None)
    bigain.apply(m, _PermutedKeys(blocks="all"))
    wrong = run_kw(m, kw)
    bigain.remove(m)
    assert (wrong - base).abs().max() > 1e-3


def _capture(m, attn, kw, method, **options):
    """Run a patched forward; return the attention's input, its output and its block's plan (as the
    hooks made them), and what its to_k projected."""
    got = {}
    handles = [
        attn.register_forward_pre_hook(lambda mod, a, k: got.update(x=a[0] if a else k["hidden_states"]), with_kwargs=True),
        attn.register_forward_hook(lambda mod, a, out: got.update(out=out)),
        attn.to_k.register_forward_pre_hook(lambda mod, a: got.update(k_in=a[0])),
    ]
    bigain.apply(m, method, blocks="all", **options)
    patch = next(p for p in m._bigain_patch.patches if p.block.module is m.blocks[1])
    handles.append(attn.register_forward_hook(lambda mod, a, out: got.update(plan=getattr(patch, "plan", None))))
    try:
        run_kw(m, kw)
    finally:
        for h in handles:
            h.remove()
        bigain.remove(m)
    return got


def _processor_per_sample(attn, tokens, rows, **kwargs):
    """The model's own processor, sample by sample, with each sample's rotary rows."""
    cos, sin = rows
    return torch.cat(
        [
            attn.processor(
                attn, tokens[b : b + 1], image_rotary_emb=(cos[b], sin[b]),
                **{k: v[b : b + 1] for k, v in kwargs.items()},
            )
            for b in range(tokens.shape[0])
        ]
    )


@pytest.mark.parametrize("method", ["tome", "bigain-tm", "sito"])
def test_merged_self_attention_matches_the_processor_on_gathered_tokens(method):
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    cos, sin = kw["image_rotary_emb"]
    attn = m.blocks[1].attn1
    got = _capture(m, attn, kw, method)
    plan = got["plan"]
    pos = plan.keep_idx if hasattr(plan, "keep_idx") else torch.cat([plan.kept_idx, plan.dst_idx], dim=1)
    reduced = plan.reduce(got["x"])
    assert reduced.shape[1] < H * W
    with torch.no_grad():  # the unpatched processor on the reduced tokens, each with its own rows
        ref = plan.expand(_processor_per_sample(attn, reduced, (cos[pos], sin[pos])))
    torch.testing.assert_close(got["out"], ref, rtol=1e-5, atol=1e-6)


def test_merged_cross_attention_queries_match_the_processor_on_gathered_tokens():
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    cos, sin = kw["image_rotary_emb"]
    attn = m.blocks[1].attn2
    text = {}
    h = attn.register_forward_pre_hook(lambda mod, a, k: text.update(enc=k["encoder_hidden_states"]), with_kwargs=True)
    got = _capture(m, attn, kw, "tome", merge_crossattn=True)
    h.remove()
    plan = got["plan"]
    pos = torch.cat([plan.kept_idx, plan.dst_idx], dim=1)
    reduced = plan.reduce(got["x"])
    assert reduced.shape[1] < H * W and got["k_in"].shape[1] == 11
    with torch.no_grad():
        ref = plan.expand(
            _processor_per_sample(attn, reduced, (cos[pos], sin[pos]), encoder_hidden_states=text["enc"])
        )
    torch.testing.assert_close(got["out"], ref, rtol=1e-5, atol=1e-6)


def test_downsampled_keys_carry_the_rows_of_their_samples():
    from diffusers.models.embeddings import apply_rotary_emb

    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2)
    cos, sin = kw["image_rotary_emb"]
    attn = m.blocks[1].attn1
    got = _capture(m, attn, kw, "todo")
    # ToDo's keys: the nearest-exact 3x5 sample of the 6x10 grid, read off an index map
    index = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W)
    pos = F.interpolate(index, size=(H // 2, W // 2), mode="nearest-exact").flatten().long()
    x, src = got["x"], got["k_in"]
    assert torch.equal(src, x[:, pos])
    with torch.no_grad():  # attention written out: full queries, keys rotated with their samples' rows
        heads = attn.heads

        def split(t):
            return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

        q = apply_rotary_emb(attn.norm_q(split(attn.to_q(x))), (cos, sin))
        k = apply_rotary_emb(attn.norm_k(split(attn.to_k(src))), (cos[pos], sin[pos]))
        v = split(attn.to_v(src))
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        ref = attn.to_out[0](o)
    torch.testing.assert_close(got["out"], ref, rtol=1e-5, atol=1e-6)


def test_the_rotation_is_the_processors_arithmetic_bit_for_bit():
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = hunyuan_dit_inputs(2)["image_rotary_emb"]
    attn = make_tiny_hunyuan_dit(layers=2).blocks[0].attn1
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 2, H * W, 16).to(dtype)  # (B, heads, S, D), as the processor holds it
        expected = apply_rotary_emb(x, (cos, sin))
        assert torch.equal(HunyuanDiTBackbone().rope(x, cos, sin, attn), expected)
        # adjacent pairs, not CogView4's half-split channels
        assert not torch.equal(ops.rope_halves(x.transpose(1, 2), cos, sin).transpose(1, 2), expected)


def test_a_call_without_tables_runs_every_method():
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2, tables=False)
    base = run_kw(m, kw)
    for method in METHODS:
        bigain.apply(m, method, blocks="all", **({"merge_crossattn": True} if method == "tome" else {}))
        out = run_kw(m, kw)
        bigain.remove(m)
        assert torch.isfinite(out).all() and not torch.equal(out, base), method


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("tome", {"sx": 3, "sy": 3}, None),  # windows that do not divide the 4x10 grid
        ("bigain-td", {"downsample_factor": 8}, "option downsample_factor=8 does not fit the 4x10 token grid"),
    ],
)
def test_odd_grids_work_or_fail_naming_the_option_and_the_grid(method, options, message):
    m = make_tiny_hunyuan_dit()
    kw = hunyuan_dit_inputs(2, size=(8, 20))
    bigain.apply(m, method, blocks="all", **options)
    try:
        if message is None:
            assert torch.isfinite(run_kw(m, kw)).all()
        else:
            with pytest.raises(ValueError, match=message):
                run_kw(m, kw)
    finally:
        bigain.remove(m)


def test_reduced_cross_attention_queries_add_no_host_device_traffic():
    # tests/test_hotpath.py runs every method at its defaults; this adds the cross-attention's rows
    from test_hotpath import _case, _steady_traffic

    model, call = _case("hunyuan-dit")
    base = _steady_traffic(call)
    bigain.apply(model, "tome", blocks="all", merge_crossattn=True, merge_mlp=True)
    try:
        tr = _steady_traffic(call)
    finally:
        bigain.remove(model)
    assert (tr.h2d, tr.d2h) == (base.h2d, base.d2h) == (0, 0), tr.where
