"""CogView4 (`CogView4Transformer2DModel`): the grid from the (B, C, H, W) latent, the default
placement, every method compressing and removal restoring the model bit for bit, text tokens that
the methods leave whole, rotary rows (CogView4's half-split convention) that follow merged tokens and
downsampled keys on the [text; image] layout, host-made tables on another device, and the padded-text
mask refused by KV methods. (tests/test_coverage.py runs every method at its defaults on "cogview4".)"""

from __future__ import annotations

import pytest
import torch
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import CogView4Backbone
from conftest import run_kw, seen_forward
from tiny_models import cogview4_inputs, make_tiny_cogview4


def test_grid_timesteps_and_default_placement():
    cv = make_tiny_cogview4(layers=4)
    report = bigain.apply(cv, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(cv, cogview4_inputs(2, size=(6, 10), t=(700, 30)))
    assert fwd.grid == ops.Grid.image(3, 5)  # H and W over patch_size 2, not square
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(cv)
    assert bigain.backbones.relative_placement(30) == (2, 3, 4, 5, 6, 8, 9, 10, 11, 12)  # CogView4-6B


def test_every_method_compresses_and_removal_is_bit_exact():
    every_method_changes_the_output(make_tiny_cogview4(layers=2), cogview4_inputs(2))


@pytest.mark.parametrize("method", METHODS)
def test_text_tokens_are_untouched(method, monkeypatch):
    cv = make_tiny_cogview4(layers=2)
    kw = cogview4_inputs(2)
    attn = cv.transformer_blocks[0].attn1
    seen = {}
    linear = torch.nn.functional.linear

    def recording_linear(x, weight, bias=None):  # what to_q / to_k really get, inside the processor
        for name in ("to_q", "to_k"):
            if weight is getattr(attn, name).weight:
                seen[name] = x
        return linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", recording_linear)
    bigain.apply(cv, method, blocks="all")
    hooks = [
        attn.register_forward_pre_hook(
            lambda m, a, k: seen.update(text=k["encoder_hidden_states"]), with_kwargs=True
        ),
        attn.register_forward_hook(lambda m, a, k, out: seen.update(out=out), with_kwargs=True),
    ]
    try:
        run_kw(cv, kw)
    finally:
        for h in hooks:
            h.remove()
        bigain.remove(cv)
    text = seen["text"]
    assert text.shape[1] == 5
    assert torch.equal(seen["to_q"][:, :5], text) and torch.equal(seen["to_k"][:, :5], text)
    assert seen["out"][1].shape == text.shape
    assert seen["out"][0].shape[1] == 15  # the image part expanded back to the 3x5 grid
    reduced = seen["to_k" if method in ("todo", "bigain-td") else "to_q"].shape[1] - 5
    assert reduced < 15, method


@pytest.mark.parametrize("check", [rows_follow_tokens, rows_follow_keys])
def test_rotary_positions_follow_reordered_tokens_and_keys(check, monkeypatch):
    check(make_tiny_cogview4(layers=2), cogview4_inputs(2), teeth=monkeypatch)


def test_the_rotation_is_cogview4_arithmetic_bit_for_bit():
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = cogview4_inputs(2, tables=True)["image_rotary_emb"]
    attn = make_tiny_cogview4(layers=1).transformer_blocks[0].attn1
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 2, 5 + 15, 16).to(dtype)
        expected = x.clone()
        expected[:, :, 5:] = apply_rotary_emb(x[:, :, 5:], (cos, sin), use_real_unbind_dim=-2)
        assert torch.equal(CogView4Backbone().rope(x, cos, sin, attn), expected)
        # not the adjacent-pairs convention of Flux / CogVideoX
        assert not torch.equal(
            ops.rope_pairs(x[:, :, 5:].transpose(1, 2), cos, sin).transpose(1, 2), expected[:, :, 5:]
        )


def test_tables_made_on_the_host_follow_the_tokens_device(monkeypatch):
    # The pipeline passes no tables: the model makes them on the host, whatever the tokens' device.
    # Host rows indexed by device positions fail on a GPU; bigain moves the tables first.
    meta = torch.device("meta")
    cv = make_tiny_cogview4(layers=2).to(meta)
    kw = {k: (v.to(meta) if isinstance(v, torch.Tensor) else v) for k, v in cogview4_inputs(2).items()}
    devices = []
    rope = CogView4Backbone.rope

    def recording_rope(self, x, cos, sin, attn):
        devices.append((cos.device, sin.device))
        return rope(self, x, cos, sin, attn)

    monkeypatch.setattr(CogView4Backbone, "rope", recording_rope)
    for method in METHODS:
        bigain.apply(cv, method, blocks="all")
        try:
            assert run_kw(cv, kw).shape == (2, 4, 6, 10), method
        finally:
            bigain.remove(cv)
    assert len(devices) == 2 * 2 * len(METHODS)  # queries and keys of 2 blocks
    assert set(devices) == {(meta, meta)}


def test_a_padded_text_mask_runs_token_methods_and_is_refused_by_kv_methods():
    cv = make_tiny_cogview4(layers=2)
    kw = cogview4_inputs(2, mask=True)
    base = every_method_changes_the_output(cv, kw, methods=("tome", "bigain-tm", "sito"))
    for method in ("todo", "bigain-td"):
        bigain.apply(cv, method, blocks="all")
        try:
            with pytest.raises(ValueError, match="passes attention_mask"):
                run_kw(cv, kw)
        finally:
            bigain.remove(cv)
    assert torch.equal(run_kw(cv, kw), base)


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("tome", {"sx": 2, "sy": 2}, None),  # the 3x5 grid: odd, windows that do not divide it
        ("bigain-td", {"downsample_factor": 4}, "option downsample_factor=4 does not fit the 3x5 token grid"),
    ],
)
def test_odd_grids_work_or_fail_naming_the_option_and_the_grid(method, options, message):
    cv = make_tiny_cogview4(layers=2)
    kw = cogview4_inputs(2)
    bigain.apply(cv, method, blocks="all", **options)
    try:
        if message is None:
            assert torch.isfinite(run_kw(cv, kw)).all()
        else:
            with pytest.raises(ValueError, match=message):
                run_kw(cv, kw)
    finally:
        bigain.remove(cv)


def test_an_unknown_processor_is_refused_by_kv_methods():
    from diffusers.models.attention_processor import AttnProcessor2_0

    cv = make_tiny_cogview4(layers=2)
    bigain.apply(cv, "todo", blocks="all")
    cv.transformer_blocks[0].attn1.set_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match="AttnProcessor2_0 is not one bigain knows to join"):
        run_kw(cv, cogview4_inputs(2))
    bigain.remove(cv)
