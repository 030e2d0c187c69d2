"""Wan (`WanTransformer3DModel`): grid and timesteps from the inputs, rotary positions that follow
merged tokens and downsampled keys, windows that do not fit, Wan 2.2's per-token timesteps, and
First Block Cache stacking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from test_backbones import _PermuteConfig

import bigain
from bigain import ops
from bigain.methods import ToDoConfig
from conftest import make_tiny_wan, run_kw, seen_forward, wan_inputs

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]


def test_grid_from_the_latent_and_patch_size_and_default_placement():
    wan = make_tiny_wan(layers=4)
    report = bigain.apply(wan, "tome")
    assert [b.name for b in report.blocks] == ["blocks.1"]  # relative depth: floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(wan, wan_inputs(2, grid=(3, 5, 7), t=(700, 30)))
    assert fwd.grid == ops.Grid(3, 5, 7)
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(wan)


def test_wan22_per_token_timesteps_are_reduced_per_row():
    wan = make_tiny_wan(layers=4)
    bigain.apply(wan, "bigain-td", alpha_schedule=(0.8, 1.2))
    kw = wan_inputs(2, per_token=True, t=(700, 30))
    fwd = seen_forward(wan, kw)
    assert fwd.timesteps.tolist() == [700.0, 30.0]  # the first frame's tokens are at 0
    out = run_kw(wan, kw)
    bigain.remove(wan)
    assert torch.isfinite(out).all() and not torch.equal(out, run_kw(wan, kw))


@pytest.mark.parametrize("size", [(3, 5, 7), (1, 4, 6), (2, 3, 3)])
def test_grids_the_windows_do_not_divide_work(size):
    wan = make_tiny_wan(layers=2)
    kw = wan_inputs(2, grid=size)
    base = run_kw(wan, kw)
    for method in METHODS:
        bigain.apply(wan, method, blocks="all")
        out = run_kw(wan, kw)
        bigain.remove(wan)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(wan, kw), base)


@pytest.mark.parametrize(
    ("method", "options", "grid", "message"),
    [
        ("tome", {"st": 2}, (1, 4, 4), "option sx=2, sy=2, st=2 does not fit the 1x4x4 token grid"),
        ("bigain-tm", {"sx": 3}, (2, 4, 2), "option sx=3, sy=2, st=1 does not fit the 2x4x2 token grid"),
        ("sito", {"sy": 5}, (2, 4, 4), "option sx=2, sy=5, st=1 does not fit the 2x4x4 token grid"),
        ("todo", {"frame_factor": 2}, (1, 4, 4), "option frame_factor=2 does not fit the 1x4x4 token grid"),
        ("bigain-td", {"downsample_factor": 4}, (2, 2, 4), "option downsample_factor=4 does not fit the 2x2x4 token grid"),
    ],
)
def test_windows_that_do_not_fit_fail_naming_the_option_and_the_grid(method, options, grid, message):
    wan = make_tiny_wan(layers=2)
    bigain.apply(wan, method, blocks="all", **options)
    with pytest.raises(ValueError, match=message):
        run_kw(wan, wan_inputs(2, grid=grid))
    bigain.remove(wan)


def test_temporal_windows_and_frame_factor_compress_video_grids():
    wan = make_tiny_wan(layers=2)
    kw = wan_inputs(2, grid=(4, 4, 4))
    base = run_kw(wan, kw)
    for method, options in (
        ("tome", {"st": 2, "ratio": 0.8}),
        ("bigain-tm", {"st": 2, "temporal": True}),
        ("sito", {"st": 2}),
        ("todo", {"frame_factor": 2}),
        ("bigain-td", {"frame_factor": 2, "downsample_factor": 1}),
    ):
        report = bigain.apply(wan, method, blocks="all", **options)
        assert report.num_blocks == 2
        out = run_kw(wan, kw)
        bigain.remove(wan)
        assert torch.isfinite(out).all() and not torch.equal(out, base), method


def test_rotary_positions_follow_reordered_tokens():
    wan = make_tiny_wan(layers=2)
    kw = wan_inputs(2)
    base = run_kw(wan, kw)
    bigain.apply(wan, _PermuteConfig(blocks="all", merge_crossattn=True, merge_mlp=True))
    permuted = run_kw(wan, kw)
    bigain.remove(wan)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


@dataclass
class _PermutedKeys(ToDoConfig):
    """A key/value source with every token, in another order (attention must not care if the keys'
    rotary positions follow them)."""

    name: ClassVar[str] = "test-permuted-keys"

    def kv_source(self, tokens, grid, factor, t, prepared=None):
        return tokens[:, self.kv_positions(grid, factor, tokens.device)]

    def kv_positions(self, grid, factor, device):
        return torch.randperm(grid.tokens, generator=torch.Generator().manual_seed(grid.tokens)).to(device)


def test_rotary_positions_follow_downsampled_keys():
    wan = make_tiny_wan(layers=2)
    kw = wan_inputs(2)
    base = run_kw(wan, kw)
    bigain.apply(wan, _PermutedKeys(blocks="all"))
    permuted = run_kw(wan, kw)
    bigain.remove(wan)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    # and ToDo's own keys get the rows of their nearest-exact samples: rows 5, 7, 13, 15 of a 4x4 frame
    pos = ToDoConfig().kv_positions(ops.Grid(2, 4, 4), 2, torch.device("cpu"))
    assert pos.tolist() == [5, 7, 13, 15, 21, 23, 29, 31]


def test_i2v_image_context_is_left_alone():
    wan = make_tiny_wan(layers=2, i2v=True)
    kw = wan_inputs(2, i2v=True)
    base = run_kw(wan, kw)
    for method in METHODS:
        bigain.apply(wan, method, blocks="all", **({"merge_crossattn": True} if method == "tome" else {}))
        out = run_kw(wan, kw)
        bigain.remove(wan)
        assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert torch.equal(run_kw(wan, kw), base)


def test_wan_stacks_with_first_block_cache_in_both_orders():
    from diffusers.hooks import FirstBlockCacheConfig

    wan = make_tiny_wan(layers=4)
    kw = wan_inputs(2)
    kw2 = dict(kw, hidden_states=kw["hidden_states"] + 0.01)

    def run(x):
        with torch.no_grad(), wan.cache_context("cond"):
            return wan(**x)[0]

    base = run(kw)
    bigain.apply(wan, "bigain-tm", blocks="all")
    ours = run(kw)
    wan.enable_cache(FirstBlockCacheConfig(threshold=1e9))  # reuse the tail after the first call
    first, second = run(kw), run(kw2)
    assert torch.equal(first, ours)
    assert not torch.equal(second, ours)
    wan.disable_cache()
    assert torch.equal(run(kw), ours)
    bigain.remove(wan)
    assert torch.equal(run(kw), base)

    # The other order: the cache first, bigain on top, bigain off again.
    wan.enable_cache(FirstBlockCacheConfig(threshold=1e9))
    cached_only = run(kw)
    wan.disable_cache()
    wan.enable_cache(FirstBlockCacheConfig(threshold=1e9))
    bigain.apply(wan, "todo", blocks="all")
    assert not torch.equal(run(kw), cached_only)
    bigain.remove(wan)
    wan.disable_cache()
    assert torch.equal(run(kw), base)
