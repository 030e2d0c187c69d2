"""Backbone adapters on tiny random models: placements, text tokens stay untouched, rotary positions
follow merged tokens, and bigain stacks with diffusers' First Block Cache. (Every method on every tiny
model, at its defaults and removed exactly: tests/test_coverage.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import bigain
from bigain import ops
from bigain.methods import ToMeConfig
from bigain.ops import nearest_positions
from bigain.patching import registry
from bigain.patching.hooks import apply_rope
from conftest import (
    flux_inputs,
    make_tiny_dit,
    make_tiny_flux,
    make_tiny_sd3,
    make_tiny_sdxl_unet,
    sd3_inputs,
)
from tiny_models import by_name

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]


def _case(name: str):
    """(model, zero-argument forward returning the output tensor) of a tiny config in tests/tiny_models.py."""
    entry = by_name(name)
    model = entry.build()
    return model, lambda: entry.forward(model)


def test_removal_leaves_no_hook_state():
    model, call = _case("sd3.5")
    before = {n: set(vars(m)) for n, m in model.named_modules()}
    bigain.apply(model, "tome", blocks="all", merge_mlp=True)
    bigain.remove(model)
    assert {n: set(vars(m)) for n, m in model.named_modules()} == before


def test_torch_hook_fallback_gives_the_same_numbers(monkeypatch):
    """diffusers without a hook registry: the same functions run as torch hooks."""
    model, call = _case("flux")
    with torch.no_grad():
        bigain.apply(model, "bigain-tm", blocks="all")
        via_registry = call()
        bigain.remove(model)
        monkeypatch.setattr(registry, "USE_DIFFUSERS_REGISTRY", False)
        bigain.apply(model, "bigain-tm", blocks="all")
        assert not any(hasattr(m, "_diffusers_hook") for m in model.modules())
        via_torch = call()
        bigain.remove(model)
        base = call()
    assert torch.equal(via_registry, via_torch)
    assert not torch.equal(base, via_torch)


def test_sdxl_compresses_at_defaults_on_its_first_attention_level():
    unet = make_tiny_sdxl_unet()
    for method in ("tome", "todo"):
        report = bigain.apply(unet, method)
        assert report.levels == [2] and report.num_blocks == 4, str(report)  # down, mid, 2x up
    bigain.remove(unet)
    # An explicit max_downsample=1 still means level 1 only, which SDXL lacks: a clear error.
    with pytest.raises(ValueError, match="would compress nothing"):
        bigain.apply(unet, "tome", max_downsample=1)


def test_default_placements():
    assert bigain.inspect_model(make_tiny_dit(layers=12)).default_blocks == (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
    assert bigain.backbones.relative_placement(28) == (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
    assert bigain.backbones.relative_placement(24) == tuple(range(1, 11))  # SD3-medium's 24 blocks
    assert bigain.inspect_model(make_tiny_sd3()).default_blocks == (1,)
    assert bigain.inspect_model(make_tiny_flux()).default_blocks == (1, 2)


def _count_inputs(module, store, key):
    """Record the token count `module` works on (its output, so bigain's own input hooks have run)."""

    def hook(m, args, output):
        store.setdefault(key, output.shape[1])

    return module.register_forward_hook(hook)


@pytest.mark.parametrize("method", ["tome", "sito"])
def test_mmdit_token_methods_reduce_image_stream_only(method):
    sd3 = make_tiny_sd3(dual=True)
    kw = sd3_inputs(2)
    block = sd3.transformer_blocks[0]
    seen: dict[str, int] = {}
    handles = [_count_inputs(block.attn.to_q, seen, "img_q"), _count_inputs(block.attn.add_q_proj, seen, "txt_q"),
               _count_inputs(block.attn2.to_q, seen, "attn2_q")]
    bigain.apply(sd3, method, blocks=[0], ratio=0.5)
    with torch.no_grad():
        sd3(**kw)
    for h in handles:
        h.remove()
    assert seen["txt_q"] == 5  # text tokens untouched
    assert seen["img_q"] == 64 - 32 and seen["attn2_q"] == 64 - 32  # SD3.5's attn2 on the same reduced tokens


def test_mmdit_kv_methods_downsample_image_keys_only():
    for model, kw, attn in (
        (m := make_tiny_sd3(), sd3_inputs(2), m.transformer_blocks[0].attn),
        (f := make_tiny_flux(), flux_inputs(2, h=6, w=8), f.single_transformer_blocks[0].attn),
    ):
        seen: dict[str, int] = {}
        hs = [_count_inputs(attn.to_q, seen, "q"), _count_inputs(attn.to_k, seen, "k"), _count_inputs(attn.to_v, seen, "v")]
        bigain.apply(model, "bigain-td", blocks="all")
        with torch.no_grad():
            model(**kw)
        for h in hs:
            h.remove()
        bigain.remove(model)
        if model is f:  # single-stream: [5 text; 48 image] -> keys [5 text; 12 image]
            assert (seen["q"], seen["k"], seen["v"]) == (53, 17, 17)
        else:
            assert (seen["q"], seen["k"], seen["v"]) == (64, 16, 16)


def test_apply_rope_matches_diffusers():
    from diffusers.models.embeddings import apply_rotary_emb

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, 8, generator=g)
    cos, sin = torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g)
    assert torch.equal(apply_rope(x, cos, sin), apply_rotary_emb(x, (cos, sin), sequence_dim=1))
    # Per-sample tables: row b uses its own table.
    per = apply_rope(x, torch.stack([cos, cos.flip(0)]), torch.stack([sin, sin.flip(0)]))
    assert torch.equal(per[1], apply_rotary_emb(x[1:], (cos.flip(0), sin.flip(0)), sequence_dim=1)[0])


def test_kv_positions_are_the_nearest_exact_samples():
    # 4 x 6 grid, factor 2: rows 1 and 3, columns 1, 3, 5 (the bottom-right of each 2x2 window).
    assert nearest_positions(4, 6, 2, torch.device("cpu")).tolist() == [7, 9, 11, 19, 21, 23]
    x = torch.arange(24.0).view(1, 24, 1)
    assert ops.downsample_tokens(x, 4, 6, 2, 1.0).flatten().tolist() == [7.0, 9.0, 11.0, 19.0, 21.0, 23.0]


@dataclass
class _PermuteConfig(ToMeConfig):
    """A plan that merges nothing but reorders every token (attention must not care if positions follow)."""

    name: ClassVar[str] = "test-permute"

    def make_plan(self, metric, grid, draw):
        b, n, _ = metric.shape
        perm = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(i)) for i in range(b)])
        nd = n // 4
        empty = torch.zeros(b, 0, dtype=torch.int64)
        order = torch.cat([perm[:, nd:], perm[:, :nd]], dim=1)  # reduced layout: [kept sources, destinations]
        return ops.MergePlan(perm[:, nd:], empty, perm[:, :nd], empty, torch.argsort(order, dim=1))


def test_flux_rotary_positions_follow_reordered_tokens():
    flux = make_tiny_flux()
    kw = flux_inputs(2)
    with torch.no_grad():
        base = flux(**kw)[0]
        bigain.apply(flux, _PermuteConfig(blocks="all"))
        permuted = flux(**kw)[0]
        bigain.remove(flux)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


def _seen_forward(model, call):
    """The patch's per-forward record as the first block saw it (it is dropped when the forward ends)."""
    seen = []
    first = model.transformer_blocks[0]
    handle = first.register_forward_pre_hook(lambda m, a: seen.append(model._bigain_patch.forward))
    try:
        call()
    finally:
        handle.remove()
    assert model._bigain_patch.forward is None  # cleared by the denoiser's post-hook
    return seen[0]


def test_flux_reads_sigmas_as_timesteps_on_the_1000_scale():
    flux = make_tiny_flux()
    bigain.apply(flux, "todo")
    with torch.no_grad():
        fwd = _seen_forward(flux, lambda: flux(**flux_inputs(2, sigma=(0.5, 0.25))))
    assert fwd.timesteps.tolist() == [500.0, 250.0]
    bigain.remove(flux)


def test_flux_stacks_with_first_block_cache_and_each_comes_off_alone():
    from diffusers.hooks import FirstBlockCacheConfig

    flux = make_tiny_flux()
    kw = flux_inputs(2)
    kw2 = dict(kw, hidden_states=kw["hidden_states"] + 0.01)

    def run(x):
        with torch.no_grad(), flux.cache_context("cond"):
            return flux(**x)[0]

    base = run(kw)
    bigain.apply(flux, "bigain-tm", blocks="all")
    ours = run(kw)
    flux.enable_cache(FirstBlockCacheConfig(threshold=1e9))  # reuse the tail after the first call
    first, second = run(kw), run(kw2)
    assert torch.equal(first, ours)  # the first call computes every block, with bigain active
    assert not torch.equal(second, ours)
    flux.disable_cache()
    assert torch.equal(run(kw), ours)  # FBC off, bigain still on
    bigain.remove(flux)
    assert torch.equal(run(kw), base)

    # The other order: the cache first, bigain on top, bigain off again.
    flux.enable_cache(FirstBlockCacheConfig(threshold=1e9))
    cached_only = run(kw)
    flux.disable_cache()
    flux.enable_cache(FirstBlockCacheConfig(threshold=1e9))
    bigain.apply(flux, "todo", blocks="all")
    assert not torch.equal(run(kw), cached_only)
    bigain.remove(flux)
    flux.disable_cache()
    assert torch.equal(run(kw), base)


@pytest.mark.parametrize("size", [(16, 24), (24, 16)])
def test_sd3_non_square_latents(size):
    sd3 = make_tiny_sd3()
    kw = sd3_inputs(2, size=size)
    for method in METHODS:
        bigain.apply(sd3, method, blocks="all")
        with torch.no_grad():
            out = sd3(**kw)[0]
        assert out.shape == kw["hidden_states"].shape and torch.isfinite(out).all()
    bigain.remove(sd3)


def test_flux_grid_that_does_not_match_ids_is_a_clear_error():
    flux = make_tiny_flux()
    kw = flux_inputs(2, h=6, w=8)
    kw["img_ids"] = kw["img_ids"][:43]  # a partial last row
    kw["hidden_states"] = kw["hidden_states"][:, :43]
    bigain.apply(flux, "tome")
    with pytest.raises(ValueError, match="grid"), torch.no_grad():
        flux(**kw)
    bigain.remove(flux)


def test_flux_grid_from_ids_in_inference_mode_and_same_token_count_other_shape():
    flux = make_tiny_flux()
    bigain.apply(flux, "tome")
    with torch.inference_mode():
        for h, w in ((6, 8), (8, 6), (6, 8)):
            # ids made in inference mode (no version counter)
            fwd = _seen_forward(flux, lambda h=h, w=w: flux(**flux_inputs(2, h=h, w=w)))
            assert fwd.grid == ops.Grid.image(h, w)
    bigain.remove(flux)


@pytest.mark.parametrize("method", METHODS)
def test_mmdit_odd_grids_work_and_too_small_grids_fail_clearly(method):
    sd3, flux = make_tiny_sd3(), make_tiny_flux()
    for model, kw in ((sd3, sd3_inputs(2, size=(18, 14))), (flux, flux_inputs(2, h=5, w=7))):  # 9x7, 5x7 grids
        bigain.apply(model, method, blocks="all")
        with torch.no_grad():
            assert torch.isfinite(model(**kw)[0]).all()
        bigain.remove(model)
    bigain.apply(flux, method, blocks="all")
    with pytest.raises(ValueError, match="does not fit the 1x7 token grid"), torch.no_grad():
        flux(**flux_inputs(2, h=1, w=7))
    bigain.remove(flux)
