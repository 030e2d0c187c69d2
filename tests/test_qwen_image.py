"""Qwen-Image (`QwenImageTransformer2DModel`): grid from img_shapes, sigmas read on the 0-1000 scale,
the text stream left alone, complex rotary rows that follow merged tokens and downsampled keys (with
the processor's arithmetic bit for bit), and the calls that are refused.
(tests/test_coverage.py runs every method at its defaults on the "qwen-image" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import METHODS, rope_split_once_per_forward, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import QwenImageBackbone
from conftest import run_kw, seen_forward
from tiny_models import make_tiny_qwen_image, qwen_image_inputs


@pytest.fixture(scope="module")
def qwen():
    return make_tiny_qwen_image(layers=2)


def test_grid_sigmas_and_default_placement():
    model = make_tiny_qwen_image(layers=4)
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(model, qwen_image_inputs(2, h=6, w=10, sigma=(0.7, 0.3)))
    assert fwd.grid == ops.Grid.image(6, 10)
    torch.testing.assert_close(fwd.timesteps, torch.tensor([700.0, 300.0]))
    bigain.remove(model)
    # Qwen-Image's 60 blocks
    assert bigain.backbones.relative_placement(60) == (*range(3, 13), *range(15, 26))


def test_every_method_compresses_and_removal_is_exact_with_the_text_stream_untouched(qwen):
    kw = qwen_image_inputs(2)
    seen = []
    attn = qwen.transformer_blocks[1].attn
    handles = [
        getattr(attn, p).register_forward_hook(lambda m, a, o, p=p: seen.append((p, a[0].clone(), o.clone())))
        for p in ("add_q_proj", "add_k_proj", "add_v_proj")
    ]
    base = run_kw(qwen, kw)
    text_in = list(seen)
    try:
        for method in METHODS:
            seen.clear()
            opts = {"merge_mlp": True} if method in ("tome", "bigain-tm") else {}
            bigain.apply(qwen, method, blocks="all", **opts)
            out = run_kw(qwen, kw)
            bigain.remove(qwen)
            assert out.shape == base.shape and torch.isfinite(out).all()
            assert not torch.equal(out, base), method
            # the second block's text projections see every text token (changed only by block 0)
            assert [(p, a.shape, o.shape) for p, a, o in seen] == [(p, a.shape, o.shape) for p, a, o in text_in]
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(run_kw(qwen, kw), base)
    # in a compressed first block the text reaches its projections exactly as unpatched
    seen.clear()
    h = qwen.transformer_blocks[0].attn.add_k_proj.register_forward_hook(lambda m, a, o: seen.append(a[0].clone()))
    run_kw(qwen, kw)
    ref = seen.pop()
    for method in METHODS:
        bigain.apply(qwen, method, blocks=(0,))
        run_kw(qwen, kw)
        bigain.remove(qwen)
        assert torch.equal(seen.pop(), ref), method
    h.remove()


def test_rotary_positions_follow_reordered_tokens(qwen, monkeypatch):
    rows_follow_tokens(qwen, qwen_image_inputs(2), teeth=monkeypatch, merge_mlp=True)


def test_rotary_positions_follow_downsampled_keys(qwen):
    rows_follow_keys(qwen, qwen_image_inputs(2))


def test_the_rotation_is_the_processors_arithmetic_bit_for_bit(qwen):
    from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

    img, txt = tables = qwen.pos_embed([[(1, 6, 10)]] * 2, max_txt_seq_len=5, device=torch.device("cpu"))
    backbone, attn = QwenImageBackbone(), qwen.transformer_blocks[0].attn
    cos, sin = backbone.rope_rows(tables)
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 60, 2, 16, generator=g).to(dtype)
        xt = torch.randn(2, 5, 2, 16, generator=g).to(dtype)
        ref = apply_rotary_emb_qwen(x, img, use_real=False)
        assert torch.equal(backbone.rope(x, cos[5:], sin[5:], attn), ref)
        assert torch.equal(backbone.rope(xt, cos[:5], sin[:5], attn), apply_rotary_emb_qwen(xt, txt, use_real=False))
        # per-sample rows (merged tokens): the rows of each sample's tokens, in its order
        pos = torch.stack([torch.randperm(60, generator=g) for _ in range(2)])
        xs = torch.stack([x[b, pos[b]] for b in range(2)])
        got = backbone.rope(xs, cos[5:][pos], sin[5:][pos], attn)
        assert torch.equal(got, torch.stack([ref[b, pos[b]] for b in range(2)]))


def test_edit_calls_and_kv_with_a_padding_mask_are_refused_with_a_message(qwen):
    kw = qwen_image_inputs(2)
    kw["hidden_states"] = torch.cat([kw["hidden_states"], kw["hidden_states"][:, :24]], dim=1)
    kw["img_shapes"] = [[(1, 6, 10), (1, 4, 6)]] * 2
    bigain.apply(qwen, "tome", blocks="all")
    with pytest.raises(ValueError, match="2 images per sample in img_shapes"):
        run_kw(qwen, kw)
    bigain.remove(qwen)
    masked = qwen_image_inputs(2, mask=True)
    base = run_kw(qwen, masked)
    for method in ("todo", "bigain-td"):
        bigain.apply(qwen, method, blocks="all")
        with pytest.raises(ValueError, match="encoder_hidden_states_mask"):
            run_kw(qwen, masked)
        bigain.remove(qwen)
    for method in ("tome", "sito"):  # token methods reduce queries and keys alike: the mask still fits
        bigain.apply(qwen, method, blocks="all")
        out = run_kw(qwen, masked)
        bigain.remove(qwen)
        assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert torch.equal(run_kw(qwen, masked), base)


def test_the_rotary_rows_are_joined_once_per_forward_with_the_same_output(qwen, monkeypatch):
    # The [text; image] join of the two complex tables and its real/imaginary split are made once per
    # forward (the hooks' per-forward record), and the downsampled keys' rows gathered once, not per block.
    rope_split_once_per_forward(qwen, qwen_image_inputs(2), monkeypatch)
