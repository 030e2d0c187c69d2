"""Defects found in review of the patching layer: each was silent before; now honoured or refused."""

from __future__ import annotations

import pytest
import torch

import bigain
from bigain.backbones.flux import FluxBackbone
from conftest import flux_inputs, make_tiny_flux, make_tiny_sd3, make_tiny_unet, sd3_inputs, unet_inputs


def _levels(report) -> list[int]:
    return sorted({b.level for b in report.blocks})


def test_kv_methods_honour_max_downsample():
    unet = make_tiny_unet()
    both = bigain.apply(unet, "todo", downsample_factor_level_2=2)
    assert _levels(both) == [1, 2]
    bigain.remove(unet)
    # max_downsample=1: level 2 stays untouched although it has a factor
    assert _levels(bigain.apply(unet, "todo", max_downsample=1, downsample_factor_level_2=2)) == [1]
    bigain.remove(unet)
    assert _levels(bigain.apply(unet, "bigain-td", max_downsample=1, downsample_factor_level_2=2)) == [1]


def test_a_level_2_block_chosen_by_index_takes_the_level_2_factor():
    unet = make_tiny_unet()  # block 1 sits at level 2 (8x8 tokens on a 16x16 latent)
    report = bigain.apply(unet, "todo", blocks=[0, 1], downsample_factor=2, downsample_factor_level_2=4)
    by_index = {b.index: b for b in report.blocks}
    assert (by_index[0].tokens, by_index[0].reduced) == (256, 64)  # 16x16 / 2x2
    assert (by_index[1].tokens, by_index[1].reduced) == (64, 4)  # 8x8 / 4x4, not / 2x2
    bigain.remove(unet)
    # a level-2 block whose factor is 1 would do nothing: chosen alone, the patch says so
    with pytest.raises(ValueError, match="compress nothing"):
        bigain.apply(unet, "todo", blocks=[1])


@pytest.mark.parametrize("method", ["todo", "bigain-td"])
def test_projections_fused_after_apply_fail_at_call_time(method):
    sd3 = make_tiny_sd3()
    bigain.apply(sd3, method, blocks="all")
    sd3.fuse_qkv_projections()
    with pytest.raises(RuntimeError, match="fused"), torch.no_grad():
        sd3(**sd3_inputs(2))
    unet = make_tiny_unet()
    bigain.apply(unet, method)
    unet.fuse_qkv_projections()
    x, t, c = unet_inputs(2)
    with pytest.raises(RuntimeError, match="fused"), torch.no_grad():
        unet(x, t, c)


def test_a_processor_that_feeds_to_k_another_tensor_fails_clearly():
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    class Rescaling(JointAttnProcessor2_0):
        """A processor bigain does not know: it projects a modified copy of the input."""

        def __call__(self, attn, hidden_states, *args, **kwargs):
            return super().__call__(attn, hidden_states * 1.0, *args, **kwargs)

    sd3 = make_tiny_sd3()
    sd3.set_attn_processor(Rescaling())
    bigain.apply(sd3, "todo", blocks="all")
    with pytest.raises(RuntimeError, match="another tensor"), torch.no_grad():
        sd3(**sd3_inputs(2))


def test_flux_grid_is_per_model_and_an_ambiguous_count_fails_under_compile(monkeypatch):
    a, b = make_tiny_flux(), make_tiny_flux()
    bigain.apply(a, "todo", blocks="all")
    bigain.apply(b, "todo", blocks="all")
    with torch.no_grad():
        a(**flux_inputs(2, h=6, w=8))
        b(**flux_inputs(2, h=8, w=6))  # the same 48 tokens, transposed
    flux = FluxBackbone()
    cache_a, cache_b = a._bigain_patch.backbone_cache, b._bigain_patch.backbone_cache
    monkeypatch.setattr(bigain.ops, "is_compiling", lambda: True)  # what a traced forward sees
    assert flux._grid(None, 48, cache_a) == (6, 8)
    assert flux._grid(None, 48, cache_b) == (8, 6)
    monkeypatch.undo()
    with torch.no_grad():
        a(**flux_inputs(2, h=8, w=6))  # model a has now seen both shapes of 48 tokens
    monkeypatch.setattr(bigain.ops, "is_compiling", lambda: True)
    with pytest.raises(ValueError, match="set_grid"):
        flux._grid(None, 48, cache_a)
    bigain.set_grid(a, (8, 6))
    assert flux._grid(None, 48, cache_a) == (8, 6)


def test_flux_grid_pinned_with_set_grid_compiles_without_an_eager_forward():
    flux = make_tiny_flux(double=1, single=1)
    bigain.apply(flux, "tome", blocks="all")
    bigain.set_grid(flux, (6, 8))
    kw = flux_inputs(2, h=6, w=8)
    torch._dynamo.reset()
    try:
        with torch.no_grad():
            got = torch.compile(flux, fullgraph=True, backend="aot_eager")(**kw)[0]
            want = flux(**kw)[0]
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("option", [{"seed": 3}, {"use_rand": False}, {"rng": "keyed"}, {"generator": None}])
def test_bigain_tm_has_no_random_options(option):
    # its destinations are the smoothest tokens: nothing random to seed
    with pytest.raises(ValueError, match="has no option"):
        bigain.make_config("bigain-tm", **option)


def test_a_ratio_the_windows_cannot_reach_is_refused():
    with pytest.raises(ValueError, match=r"ratio=0.8.*at most 0.75"):
        bigain.make_config("tome", ratio=0.8)
    assert bigain.make_config("tome", ratio=0.8, sx=3, sy=2).ratio == 0.8  # 6-token windows reach 5/6
    with pytest.raises(ValueError, match="ratio"):
        bigain.make_config("sito", ratio=0.9)
