"""Kandinsky 5 (`Kandinsky5Transformer3DModel`): the grid from the channels-last (B, F, H, W, C)
latent (non-square, image-to-video's extra channels), the placement over the visual blocks, the text
blocks and the cross-attention's text left whole, rotary rows that follow merged tokens and
downsampled keys (checked against the processor itself on explicitly gathered rows, and Kandinsky's
rotation bit for bit), odd grids, and the sparse nabla attention refused.
(tests/test_coverage.py runs every method at its defaults on the "kandinsky5" and "kandinsky5-i2v"
tiny configs.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import find_backbone
from bigain.backbones.kandinsky import Kandinsky5Backbone
from bigain.patching.hooks import _plan_positions
from conftest import seen_forward
from tiny_models import kandinsky5_inputs, make_tiny_kandinsky5

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
GRID = (2, 6, 10)
N = 2 * 6 * 10


def run(model, kw) -> torch.Tensor:
    with torch.no_grad():
        return model(**kw, return_dict=False)  # the output tensor itself


@pytest.fixture(scope="module")
def k5():
    return make_tiny_kandinsky5()


def test_grid_timesteps_and_default_placement():
    model = make_tiny_kandinsky5(layers=4)
    assert isinstance(find_backbone(model), Kandinsky5Backbone)
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["visual_transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(model, kandinsky5_inputs(2, grid=(3, 4, 6), t=(700.0, 250.0)))
    assert fwd.grid == ops.Grid(3, 4, 6)  # frames, then H and W over patch 2
    assert fwd.timesteps.tolist() == [700.0, 250.0]
    bigain.remove(model)
    i2v = make_tiny_kandinsky5(layers=2, visual_cond=True)
    bigain.apply(i2v, "tome", blocks="all")
    assert seen_forward(i2v, kandinsky5_inputs(2, visual_cond=True)).grid == ops.Grid(*GRID)
    bigain.remove(i2v)
    # Kandinsky 5.0 Video Lite's 32 visual blocks
    assert bigain.backbones.relative_placement(32) == (2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13)


def test_every_method_changes_the_output_and_removal_is_exact(k5):
    kw = kandinsky5_inputs(2)
    base = run(k5, kw)
    for method in METHODS:
        opts = {"merge_mlp": True, "merge_crossattn": True} if method in ("tome", "bigain-tm") else {}
        bigain.apply(k5, method, blocks="all", **opts)
        out = run(k5, kw)
        bigain.remove(k5)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, base, atol=1e-5), method
    assert torch.equal(run(k5, kw), base)
    # a non-square grid of three frames; each sample gives what it gives alone (up to the bfloat16
    # rounding of the rotation, which batched matmuls' last bits can cross)
    kw3 = kandinsky5_inputs(2, grid=(3, 4, 6))
    bigain.apply(k5, "bigain-td", blocks="all")
    both = run(k5, kw3)
    first = run(k5, {**kw3, **{k: kw3[k][:1] for k in ("hidden_states", "encoder_hidden_states", "timestep", "pooled_projections")}})
    bigain.remove(k5)
    torch.testing.assert_close(both[:1], first, rtol=1e-3, atol=1e-3)


def _spy(model, monkeypatch):
    """Record every visual self- and cross-attention call: what the attention gets before bigain's
    hooks, what the processor gets after them and returns, the keys and values it makes, and the
    block's plan (token methods) or factor (KV methods)."""
    from diffusers.models.transformers.transformer_kandinsky import Kandinsky5AttnProcessor

    calls, handles = [], []
    original = Kandinsky5AttnProcessor.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states=None, rotary_emb=None, sparse_params=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, rotary_emb, sparse_params)
        if calls and calls[-1]["attn"] is attn:
            patch = getattr(model, "_bigain_patch", None)
            mine = [p for p in (patch.patches if patch else []) if p.block.roles["attn"] is attn]
            plan = getattr(mine[0], "plan", None) if mine else None
            calls[-1].update(
                hidden=hidden_states,
                enc=encoder_hidden_states,
                tables=rotary_emb,
                out=out,
                pos=None if plan is None else _plan_positions(plan),
                factor=mine[0].param if mine else None,
            )
        return out

    def before(m, args, kwargs):
        calls.append({"attn": m, "x": args[0], "enc_in": kwargs.get("encoder_hidden_states"), "tables_in": kwargs.get("rotary_emb")})

    monkeypatch.setattr(Kandinsky5AttnProcessor, "__call__", spy)
    for block in model.visual_transformer_blocks:
        for attn in (block.self_attention, block.cross_attention):
            handles.append(attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
            handles.append(attn.to_key.register_forward_hook(lambda m, a, out: calls[-1].update(keys=out)))
            handles.append(attn.to_value.register_forward_hook(lambda m, a, out: calls[-1].update(values=out)))
    return calls, handles, original


def _rotate(x, rot):
    """The processor's rotation, written out: (B, S, heads, D) times (B, S, 1, D/2, 2, 2) matrices."""
    pairs = x.reshape(*x.shape[:-1], -1, 1, 2).float()
    return (rot * pairs).sum(-1).reshape(x.shape).to(torch.bfloat16).type_as(x)


@pytest.mark.parametrize("method", METHODS)
def test_text_is_untouched_and_rows_follow_the_tokens(k5, method, monkeypatch):
    kw = kandinsky5_inputs(2)
    opts = {"merge_crossattn": True} if method in ("tome", "bigain-tm") else {}
    bigain.apply(k5, method, blocks="all", **opts)
    calls, handles, processor = _spy(k5, monkeypatch)
    run(k5, kw)
    for h in handles:
        h.remove()
    bigain.remove(k5)
    blocks = k5.visual_transformer_blocks
    assert len(calls) == 2 * len(blocks)
    kv = method in ("todo", "bigain-td")
    for c in calls:
        attn, x, hidden = c["attn"], c["x"], c["hidden"]
        if any(attn is b.cross_attention for b in blocks):
            # the text reaches the cross-attention whole (keys and values of every text token)
            assert c["enc"] is c["enc_in"] and c["enc"].shape[1] == 5 and c["keys"].shape[1] == 5
            assert c["tables"] is None
            assert (hidden.shape[1] < N) == bool(opts), method  # its queries reduced with merge_crossattn
            continue
        assert c["tables"] is None  # bigain rotates the queries and keys itself
        table = c["tables_in"]  # (B, S, 1, D/2, 2, 2)
        if not kv:
            queries = hidden.shape[1]
            assert queries < N and c["keys"].shape[1] == queries
            # A slow reference: the processor itself, given the rows of the tokens present.
            rows = torch.stack([table[b, c["pos"][b]] for b in range(table.shape[0])])
            ref = processor(attn.processor, attn, hidden, None, rows, None)
            assert torch.equal(c["out"], ref)
        else:
            assert hidden is x and c["enc"].shape[1] < N
            pos = bigain.make_config(method).kv_positions(ops.Grid(*GRID), c["factor"], x.device)
            heads = attn.num_heads
            q = attn.to_query(x).unflatten(-1, (heads, -1))
            q = _rotate(attn.query_norm(q.float()).type_as(q), table)
            k = c["keys"].unflatten(-1, (heads, -1))
            k = _rotate(attn.key_norm(k.float()).type_as(k), table[:, pos])
            v = c["values"].unflatten(-1, (heads, -1))
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            ref = attn.out_layer(o.transpose(1, 2).flatten(2))
            torch.testing.assert_close(c["out"], ref, rtol=1e-5, atol=1e-5)


def test_text_blocks_are_not_compression_sites(k5):
    report = bigain.apply(k5, "tome", blocks="all")
    bigain.remove(k5)
    assert all(b.name.startswith("visual_transformer_blocks.") for b in report.blocks)
    assert len(report.blocks) == len(k5.visual_transformer_blocks)


def test_rotary_positions_follow_reordered_tokens_and_keys(k5, monkeypatch):
    kw = kandinsky5_inputs(2)
    base = run(k5, kw)
    for config in (_PermuteConfig(blocks="all"), _PermutedKeys(blocks="all")):
        bigain.apply(k5, config)
        permuted = run(k5, kw)
        bigain.remove(k5)
        # bf16-rounded rotations of reordered tokens: equal up to the order of sums
        torch.testing.assert_close(permuted, base, rtol=1e-4, atol=1e-4)
    # The test has teeth: left in the call, the rows of the model's order rotate the reordered tokens.
    monkeypatch.setattr(Kandinsky5Backbone, "rope_kwarg", None)
    bigain.apply(k5, _PermuteConfig(blocks="all"))
    wrong = run(k5, kw)
    bigain.remove(k5)
    assert (wrong - base).abs().max() > 1e-2


def test_the_rotation_is_kandinsky_arithmetic_bit_for_bit(k5):
    attn = k5.visual_transformer_blocks[0].self_attention
    table = k5.visual_rope_embeddings((2, *GRID), [torch.arange(2), torch.arange(6), torch.arange(10)]).flatten(1, 3)
    cos, sin = Kandinsky5Backbone().rope_rows(table)
    x = torch.randn(2, N, 2, 16)
    assert torch.equal(Kandinsky5Backbone().rope(x, cos, sin, attn), _rotate(x, table))
    pos = torch.stack([torch.randperm(N)[:40] for _ in range(2)])
    rows = torch.stack([table[b, pos[b]] for b in range(2)])
    y = x[:, :40]
    assert torch.equal(Kandinsky5Backbone().rope(y, cos[pos], sin[pos], attn), _rotate(y, rows))


@pytest.mark.parametrize(
    ("method", "options", "grid", "message"),
    [
        ("tome", {"sx": 2, "sy": 2}, (2, 3, 5), None),  # odd rows and columns: windows that do not divide them
        ("tome", {"st": 2}, (1, 6, 10), "option sx=2, sy=2, st=2 does not fit the 1x6x10 token grid"),
        ("bigain-td", {"downsample_factor": 4}, (2, 3, 5), "option downsample_factor=4 does not fit the 2x3x5 token grid"),
    ],
)
def test_odd_grids_work_or_fail_naming_the_option_and_the_grid(k5, method, options, grid, message):
    kw = kandinsky5_inputs(2, grid=grid)
    bigain.apply(k5, method, blocks="all", **options)
    try:
        if message is None:
            assert torch.isfinite(run(k5, kw)).all()
        else:
            with pytest.raises(ValueError, match=message):
                run(k5, kw)
    finally:
        bigain.remove(k5)


def test_sparse_nabla_attention_is_refused(k5):
    nabla = make_tiny_kandinsky5(layers=2)
    nabla.register_to_config(attention_type="nabla")
    with pytest.raises(ValueError, match="nabla attention"):
        bigain.apply(nabla, "tome")
    # a call with sparse_params (the pipeline passes them to a nabla model only) is refused too
    bigain.apply(k5, "todo", blocks="all")
    try:
        with pytest.raises(ValueError, match="cannot take fewer queries or keys"):
            run(k5, {**kandinsky5_inputs(2), "sparse_params": {"to_fractal": True}})
    finally:
        bigain.remove(k5)
