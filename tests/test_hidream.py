"""HiDream-I1 (`HiDreamImageTransformer2DModel`): the grid from the (B, C, H, W) latent (non-square
latents padded by the model to a fixed length), the timesteps as passed, the default placement over
double- then single-stream blocks, every method on both block kinds, the padding and the text left
whole, the padded-key mask cut with the image keys, every attention call equal to a slow reference
(the processor's arithmetic on explicitly gathered tokens and rotary rows), rotary rows that follow
reordered tokens and keys, merged tokens through the mixture-of-experts feed-forward, and the
refusals. (tests/test_coverage.py runs every method at its defaults on the "hidream" tiny config.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_checks import every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import find_backbone
from bigain.backbones.hidream import HiDreamBackbone
from bigain.methods.todo import ToDoConfig
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import hidream_inputs, make_tiny_hidream

PADDED, SQUARE = (12, 20), (12, 12)  # 6x10 tokens padded to 64; 6x6 tokens, no padding
TEXT_DOUBLE = 5 + 4 + 4  # T5, the last Llama layer, the block's own Llama layer


def test_adapter_grid_timesteps_and_default_placement():
    m = make_tiny_hidream(layers=2, single_layers=3)
    assert isinstance(find_backbone(m), HiDreamBackbone)
    report = bigain.apply(m, "tome")
    assert [b.name for b in report.blocks] == ["double_stream_blocks.1", "single_stream_blocks.0"]
    fwd = seen_forward(m, hidream_inputs(2, size=(8, 20), t=(700, 250), layers=5))
    assert fwd.grid == ops.Grid.image(4, 10)  # rows and columns of the latent over the patch, not a square
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 250.0])  # the 0-1000 scale as passed
    bigain.remove(m)


@pytest.mark.parametrize("size", [PADDED, SQUARE])
def test_every_method_compresses_both_block_kinds_and_removal_is_exact(size):
    double, single = (0, 1), (2, 3)
    every_method_changes_the_output(make_tiny_hidream(), hidream_inputs(2, size=size), (double, single))


def _attention_calls(m, monkeypatch):
    """Record what every attention gets before bigain's hooks, what its processor gets after them
    and returns, and the token plan of its block at that moment."""
    from diffusers.models.transformers.transformer_hidream_image import HiDreamAttnProcessor

    calls, handles = [], []
    original = HiDreamAttnProcessor.__call__

    def spy(self, attn, hidden_states, hidden_states_masks=None, encoder_hidden_states=None, image_rotary_emb=None):
        out = original(self, attn, hidden_states, hidden_states_masks, encoder_hidden_states, image_rotary_emb)
        patch = next(p for p in m._bigain_patch.patches if p.block.roles["attn"] is attn)
        calls[-1].update(
            hidden=hidden_states, mask=hidden_states_masks, text=encoder_hidden_states,
            table=image_rotary_emb, out=out, plan=getattr(patch, "plan", None),
        )
        return out

    def before(mod, args, kwargs):
        calls.append(
            {"attn": mod, "x": args[0], "mask0": args[1], "text0": args[2] if len(args) > 2 else None,
             "table0": kwargs["image_rotary_emb"]}
        )

    monkeypatch.setattr(HiDreamAttnProcessor, "__call__", spy)
    for block in [*m.double_stream_blocks, *m.single_stream_blocks]:
        handles.append(block.block.attn1.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
    return calls, handles


def _rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rotary rows `rows` (B, R) of each sample of a (B, S, 1, D/2, 2, 2) table."""
    return table[torch.arange(table.shape[0])[:, None], rows]


def _reference(attn, x, kv, mask, text, q_table, k_table):
    """HiDreamAttnProcessor's arithmetic, step by step, with keys and values made from `kv` and the
    queries and keys rotated by their own tables."""
    from diffusers.models.transformers.transformer_hidream_image import apply_rope

    b, heads = x.shape[0], attn.heads

    def split(t):
        return t.view(b, t.shape[1], heads, -1)

    q = split(attn.q_rms_norm(attn.to_q(x)))
    k = split(attn.k_rms_norm(attn.to_k(kv)))
    v = split(attn.to_v(kv))
    if mask is not None:
        k = k * mask.view(b, -1, 1, 1)
    if not attn.single:
        q = torch.cat([q, split(attn.q_rms_norm_t(attn.to_q_t(text)))], dim=1)
        k = torch.cat([k, split(attn.k_rms_norm_t(attn.to_k_t(text)))], dim=1)
        v = torch.cat([v, split(attn.to_v_t(text))], dim=1)
    q = apply_rope(q, q, q_table)[0]
    k = apply_rope(k, k, k_table)[0]
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    o = o.transpose(1, 2).reshape(b, -1, q.shape[2] * q.shape[3])
    if attn.single:
        return attn.to_out(o)
    return attn.to_out(o[:, : x.shape[1]]), attn.to_out_t(o[:, x.shape[1] :])


@pytest.mark.parametrize("size", [PADDED, SQUARE])
@pytest.mark.parametrize("method", ["tome", "bigain-tm", "sito", "todo"])
def test_every_attention_call_equals_a_slow_reference(method, size, monkeypatch):
    m = make_tiny_hidream()
    h, w = size[0] // 2, size[1] // 2
    n = h * w
    bigain.apply(m, method, blocks="all")
    calls, handles = _attention_calls(m, monkeypatch)
    run_kw(m, hidream_inputs(2, size=size))
    for handle in handles:
        handle.remove()
    bigain.remove(m)
    assert len(calls) == 4
    for c in calls:
        attn, x, mask0, table = c["attn"], c["x"], c["mask0"], c["table0"]
        b, length = x.shape[:2]
        s = table.shape[1]  # rows of [image; padding; text]
        padded = 64 if size == PADDED else n  # the model's image tokens, padding included
        if c["text0"] is not None:  # double-stream: [image; padding], the text apart
            assert length == padded and c["text0"].shape[1] == s - padded == TEXT_DOUBLE
        else:  # single-stream: [image; padding; text]
            assert length == s
        rest = torch.arange(n, s).expand(b, -1)  # padding and text keep their rows
        if method == "todo":  # every query, keys and values from the nearest-exact samples
            pos = ToDoConfig().kv_positions(ops.Grid.image(h, w), 2, torch.device("cpu")).expand(b, -1)
            assert c["hidden"] is x
            kv = torch.cat([x[:, :n][:, pos[0]], x[:, n:]], dim=1)
            q_rows, k_rows, kept = torch.arange(s).expand(b, -1), torch.cat([pos, rest], dim=1), pos.shape[1]
        else:  # the plan's tokens for queries, keys and values
            plan = c["plan"]
            pos = _plan_positions(plan)
            kv = torch.cat([plan.reduce(x[:, :n]), x[:, n:]], dim=1)
            assert torch.equal(c["hidden"], kv)  # the padding (and the text) after the image, whole
            q_rows = k_rows = torch.cat([pos, rest], dim=1)
            kept = pos.shape[1]
            x = kv
        if c["text0"] is not None:
            assert c["text"] is c["text0"]  # the double-stream text is not touched
        mask = None if mask0 is None else torch.cat([torch.ones(b, kept), mask0[:, n:]], dim=1)
        if mask0 is None:
            assert c["mask"] is None
        else:  # the image entries (all 1) shortened with the image keys; padding 0, text 1
            assert torch.equal(c["mask"], mask)
        # the processor got an identity rotation in the table's place: bigain rotated q and k itself
        assert c["table"].shape[1] == 1 and torch.equal(c["table"][0, 0, 0, 0], torch.eye(2))
        with torch.no_grad():
            ref = _reference(attn, x, kv, mask, c["text0"], _rows(table, q_rows), _rows(table, k_rows))
        got = c["out"]
        for r, g in zip(ref if isinstance(ref, tuple) else (ref,), got if isinstance(got, tuple) else (got,)):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [PADDED, SQUARE])
def test_rotary_positions_follow_reordered_tokens(size, monkeypatch):
    # merge_mlp: the mixture of experts routes each token by itself, so a reordered token is
    # routed as in the model's order
    rows_follow_tokens(make_tiny_hidream(), hidream_inputs(2, size=size), teeth=monkeypatch, merge_mlp=True)


@pytest.mark.parametrize("size", [PADDED, SQUARE])
def test_rotary_positions_follow_downsampled_keys(size, monkeypatch):
    rows_follow_keys(make_tiny_hidream(), hidream_inputs(2, size=size), teeth=monkeypatch)


@pytest.mark.parametrize("method", ["tome", "sito"])
def test_merged_tokens_go_through_the_mixture_of_experts(method):
    m = make_tiny_hidream()
    kw = hidream_inputs(2)
    base = run_kw(m, kw)
    seen = []
    ff = m.double_stream_blocks[1].block.ff_i
    handle = ff.gate.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    bigain.apply(m, method, blocks=(1,), merge_mlp=True)
    out = run_kw(m, kw)
    bigain.remove(m)
    handle.remove()
    assert seen[0] < 64 and seen[0] > 64 - 60  # the router sees the reduced image tokens and the padding
    assert torch.isfinite(out).all() and not torch.equal(out, base)


def test_the_pre_patchified_call_is_refused():
    m = make_tiny_hidream()
    kw = hidream_inputs(2)
    x, masks, sizes, ids = m.patchify(kw["hidden_states"])  # (B, 64, 16) tokens of the padded 6x10 grid
    kw = dict(kw, hidden_states=x, hidden_states_masks=masks, img_sizes=sizes, img_ids=ids)
    bigain.apply(m, "tome", blocks="all")
    with pytest.raises(ValueError, match="pre-patchified call"):
        run_kw(m, kw)
    bigain.remove(m)
    run_kw(m, kw)  # the model itself takes it


def test_a_mask_bigain_cannot_cut_is_refused():
    m = make_tiny_hidream()
    bigain.apply(m, "todo", blocks="all")
    handle = m.double_stream_blocks[0].block.attn1.register_forward_pre_hook(
        lambda mod, a, k: ((a[0], a[1][:, None]) + tuple(a[2:]), k), with_kwargs=True
    )
    with pytest.raises(ValueError, match=r"hidden_states_masks \(2, 1, 64\) is not the \(B, 64\) mask over its input"):
        run_kw(m, hidream_inputs(2))
    handle.remove()
    bigain.remove(m)
