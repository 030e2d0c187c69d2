"""CogVideoX (`CogVideoXTransformer3DModel`): the grid from the (B, F, C, H, W) latent (also with
CogVideoX 1.5's temporal patch), the default placement, text tokens that the methods leave whole,
rotary rows that follow merged tokens and downsampled keys on CogVideoX's [text; video] layout, odd
grids and windows that do not fit, and removal. (tests/test_coverage.py runs every method at its
defaults on the "cogvideox" (rotary) and "cogvideox-sincos" tiny configs.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import CogVideoXBackbone
from conftest import run_kw, seen_forward
from tiny_models import cogvideox_inputs, make_tiny_cogvideox


def test_grid_timesteps_and_default_placement():
    cog = make_tiny_cogvideox(layers=4)
    report = bigain.apply(cog, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(cog, cogvideox_inputs(2, frames=3, size=(6, 10), t=(700, 30)))
    assert fwd.grid == ops.Grid(3, 3, 5)  # frames before channels; H and W over patch_size 2
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(cog)
    assert bigain.backbones.relative_placement(30) == (2, 3, 4, 5, 6, 8, 9, 10, 11, 12)  # CogVideoX-2B


def test_temporal_patch_of_cogvideox_1_5():
    cog = make_tiny_cogvideox(layers=2, patch_size_t=2)
    kw = cogvideox_inputs(2, frames=4, patch_size_t=2)
    bigain.apply(cog, "tome", blocks="all")
    assert seen_forward(cog, kw).grid == ops.Grid(2, 3, 5)
    bigain.remove(cog)
    every_method_changes_the_output(cog, kw)


@pytest.mark.parametrize("method", METHODS)
def test_text_tokens_are_untouched(method, monkeypatch):
    cog = make_tiny_cogvideox(layers=2)
    kw = cogvideox_inputs(2)
    attn = cog.transformer_blocks[0].attn1
    seen = {}
    linear = torch.nn.functional.linear

    def recording_linear(x, weight, bias=None):  # what to_q / to_k really get, inside the processor
        for name in ("to_q", "to_k"):
            if weight is getattr(attn, name).weight:
                seen[name] = x
        return linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", recording_linear)
    bigain.apply(cog, method, blocks="all")
    hooks = [  # torch hooks run outside bigain's: they see the block's call and the block's result
        attn.register_forward_pre_hook(lambda m, a, k: seen.update(text=k["encoder_hidden_states"]), with_kwargs=True),
        attn.register_forward_hook(lambda m, a, k, out: seen.update(out=out), with_kwargs=True),
    ]
    try:
        run_kw(cog, kw)
    finally:
        for h in hooks:
            h.remove()
        bigain.remove(cog)
    text = seen["text"]
    assert text.shape[1] == 5
    # queries and keys carry every text token first, as the block gave them; the output's text part is whole
    assert torch.equal(seen["to_q"][:, :5], text) and torch.equal(seen["to_k"][:, :5], text)
    assert seen["out"][1].shape == text.shape
    assert seen["out"][0].shape[1] == 45  # the video part expanded back to the 3x3x5 grid
    reduced = seen["to_k" if method in ("todo", "bigain-td") else "to_q"].shape[1] - 5
    assert reduced < 45, method


@pytest.mark.parametrize("check", [rows_follow_tokens, rows_follow_keys])
def test_rotary_positions_follow_reordered_tokens_and_keys(check, monkeypatch):
    check(make_tiny_cogvideox(layers=2), cogvideox_inputs(2), teeth=monkeypatch)


def test_the_rotation_is_cogvideox_arithmetic_bit_for_bit():
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = cogvideox_inputs(2)["image_rotary_emb"]
    attn = make_tiny_cogvideox(layers=1).transformer_blocks[0].attn1
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 2, 5 + 45, 16).to(dtype)
        expected = x.clone()
        expected[:, :, 5:] = apply_rotary_emb(x[:, :, 5:], (cos, sin))
        assert torch.equal(CogVideoXBackbone().rope(x, cos, sin, attn), expected)


@pytest.mark.parametrize(
    ("method", "options", "frames", "message"),
    [
        ("tome", {"sx": 2, "sy": 2}, 3, None),  # the 3x3x5 grid: odd, windows that do not divide it
        ("tome", {"st": 2}, 1, "option sx=2, sy=2, st=2 does not fit the 1x3x5 token grid"),
        ("bigain-td", {"downsample_factor": 4}, 2, "option downsample_factor=4 does not fit the 2x3x5 token grid"),
    ],
)
def test_odd_grids_work_or_fail_naming_the_option_and_the_grid(method, options, frames, message):
    cog = make_tiny_cogvideox(layers=2)
    kw = cogvideox_inputs(2, frames=frames)
    bigain.apply(cog, method, blocks="all", **options)
    try:
        if message is None:
            assert torch.isfinite(run_kw(cog, kw)).all()
        else:
            with pytest.raises(ValueError, match=message):
                run_kw(cog, kw)
    finally:
        bigain.remove(cog)


def test_an_unknown_processor_is_refused_by_kv_methods():
    from diffusers.models.attention_processor import AttnProcessor2_0

    cog = make_tiny_cogvideox(layers=2)
    bigain.apply(cog, "todo", blocks="all")
    cog.transformer_blocks[0].attn1.set_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match="AttnProcessor2_0 is not one bigain knows to join"):
        run_kw(cog, cogvideox_inputs(2))
    bigain.remove(cog)
