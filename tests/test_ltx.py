"""LTX-Video (`LTXVideoTransformer3DModel`): grid from num_frames/height/width, timesteps (also
per-token), rotary rows that follow merged tokens and downsampled keys on LTX's (B, S, inner)
layout, windows that do not fit, and the calls with video_coords that are refused.
(tests/test_coverage.py runs every method at its defaults on the "ltx" and "ltx-i2v" tiny configs.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import LTXBackbone
from conftest import ltx_inputs, make_tiny_ltx, run_kw, seen_forward


def test_grid_timesteps_and_default_placement():
    ltx = make_tiny_ltx(layers=4)
    report = bigain.apply(ltx, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(ltx, ltx_inputs(2, grid=(3, 5, 7), t=(700, 30)))
    assert fwd.grid == ops.Grid(3, 5, 7)
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(ltx)
    # LTX-Video 2B's 28 blocks: the paper's own placement; 13B's 48: the same relative depths
    assert bigain.backbones.relative_placement(28) == (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
    assert bigain.backbones.relative_placement(48) == (*range(2, 11), *range(12, 21))


def test_per_token_timesteps_are_reduced_per_row():
    ltx = make_tiny_ltx(layers=2)
    bigain.apply(ltx, "bigain-td", blocks="all", alpha_schedule=(0.8, 1.2))
    kw = ltx_inputs(2, per_token=True, t=(700, 30))
    assert seen_forward(ltx, kw).timesteps.tolist() == [700.0, 30.0]  # the first frame's tokens are at 0
    kw1 = dict(kw, timestep=torch.tensor([[700.0], [30.0]]))  # (B, 1), as LTXConditionPipeline shapes it
    assert seen_forward(ltx, kw1).timesteps.tolist() == [700.0, 30.0]
    out = run_kw(ltx, kw)
    bigain.remove(ltx)
    assert torch.isfinite(out).all() and not torch.equal(out, run_kw(ltx, kw))


@pytest.mark.parametrize("size", [(3, 5, 7), (1, 4, 6), (2, 3, 3)])
def test_grids_the_windows_do_not_divide_work(size):
    every_method_changes_the_output(make_tiny_ltx(layers=2), ltx_inputs(2, grid=size))


@pytest.mark.parametrize(
    ("method", "options", "grid", "message"),
    [
        ("tome", {"st": 2}, (1, 4, 4), "option sx=2, sy=2, st=2 does not fit the 1x4x4 token grid"),
        ("sito", {"sy": 5}, (2, 4, 4), "option sx=2, sy=5, st=1 does not fit the 2x4x4 token grid"),
        ("bigain-td", {"downsample_factor": 4}, (2, 2, 4), "option downsample_factor=4 does not fit the 2x2x4 token grid"),
    ],
)
def test_windows_that_do_not_fit_fail_naming_the_option_and_the_grid(method, options, grid, message):
    ltx = make_tiny_ltx(layers=2)
    bigain.apply(ltx, method, blocks="all", **options)
    with pytest.raises(ValueError, match=message):
        run_kw(ltx, ltx_inputs(2, grid=grid))
    bigain.remove(ltx)


def test_a_grid_that_does_not_match_the_tokens_fails_naming_it():
    ltx = make_tiny_ltx(layers=2)
    bigain.apply(ltx, "tome", blocks="all")
    kw = dict(ltx_inputs(2, grid=(3, 4, 4)), width=5)
    with pytest.raises(ValueError, match="48 image tokens do not fit the 3x4x5 token grid of transformer_blocks.0"):
        run_kw(ltx, kw)
    bigain.remove(ltx)


def test_calls_with_video_coords_are_refused_with_a_message():
    ltx = make_tiny_ltx(layers=2)
    kw = ltx_inputs(2)
    kw.update(video_coords=torch.zeros(2, 3, 48))
    bigain.apply(ltx, "todo", blocks="all")
    with pytest.raises(ValueError, match="video_coords"):
        run_kw(ltx, kw)
    bigain.remove(ltx)


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    kw = ltx_inputs(2)
    rows_follow_tokens(make_tiny_ltx(layers=2), kw, teeth=monkeypatch, merge_crossattn=True, merge_mlp=True)


def test_rotary_positions_follow_downsampled_keys():
    rows_follow_keys(make_tiny_ltx(layers=2), ltx_inputs(2))


def test_the_rotation_is_ltx_arithmetic_bit_for_bit():
    from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

    ltx = make_tiny_ltx(layers=1)
    kw = ltx_inputs(2)
    cos, sin = ltx.rope(kw["hidden_states"], 3, 4, 4, kw["rope_interpolation_scale"])
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 48, 32).to(dtype)
        rows = LTXBackbone().rope_rows((cos, sin))
        assert torch.equal(LTXBackbone().rope(x, *rows, ltx.transformer_blocks[0].attn1), apply_rotary_emb(x, (cos, sin)))
