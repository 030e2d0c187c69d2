"""Denoisers that are close relatives of a supported family, taken by that family's adapter with
small overrides (`bigain/backbones/wan_relatives.py`, ...): what each relative does differently is
tested here; what it shares with its relative is tested in the relative's own file.
(tests/test_coverage.py runs every method at its defaults on each relative's tiny config.)"""

from __future__ import annotations

import pytest
import torch
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import find_backbone
from bigain.backbones.cogvideox_relatives import ConsisIDBackbone
from bigain.backbones.flux_relatives import BriaBackbone, LongCatImageBackbone, OvisImageBackbone
from bigain.backbones.wan_relatives import ChronoEditBackbone, SkyReelsV2Backbone, WanVACEBackbone
from conftest import run_kw, seen_forward, wan_inputs
from tiny_models import (
    consisid_inputs,
    flux_like_inputs,
    make_tiny_chronoedit,
    make_tiny_consisid,
    make_tiny_flux_like,
    make_tiny_skyreels_v2,
    make_tiny_wan_vace,
    wan_vace_inputs,
)

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]

# -- Wan relatives -----------------------------------------------------------------------------
WAN_LIKE = {
    "skyreels-v2": (make_tiny_skyreels_v2, wan_inputs, SkyReelsV2Backbone),
    "wan-vace": (make_tiny_wan_vace, wan_vace_inputs, WanVACEBackbone),
    "chronoedit": (make_tiny_chronoedit, wan_inputs, ChronoEditBackbone),
}


@pytest.mark.parametrize("family", WAN_LIKE)
def test_wan_relatives_grid_timesteps_and_default_placement(family):
    make, inputs, adapter = WAN_LIKE[family]
    model = make(layers=4)
    assert type(find_backbone(model)) is adapter
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["blocks.1"]  # as Wan: floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(model, inputs(2, grid=(3, 5, 7), t=(700, 30)))
    assert fwd.grid == ops.Grid(3, 5, 7)
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(model)


@pytest.mark.parametrize("family", WAN_LIKE)
@pytest.mark.parametrize("grid", [(2, 3, 5), (1, 4, 6)])
def test_wan_relatives_every_method_on_every_block_non_square_and_exact_removal(family, grid):
    make, inputs, _ = WAN_LIKE[family]
    model = make(layers=3)
    kw = inputs(2, grid=grid)
    base = run_kw(model, kw)
    for method in METHODS:
        bigain.apply(model, method, blocks="all")
        out = run_kw(model, kw)
        bigain.remove(model)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(model, kw), base)


@pytest.mark.parametrize("family", WAN_LIKE)
def test_wan_relatives_rotary_rows_follow_tokens_and_keys(family):
    make, inputs, _ = WAN_LIKE[family]
    model = make(layers=3)
    # two latent frames: ChronoEdit's temporal rows are then positions 0 and 7, not 0 and 1
    kw = inputs(2, grid=(2, 4, 6))
    base = run_kw(model, kw)
    for config in (_PermuteConfig(blocks="all", merge_crossattn=True, merge_mlp=True), _PermutedKeys(blocks="all")):
        bigain.apply(model, config)
        permuted = run_kw(model, kw)
        bigain.remove(model)
        torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


def test_chronoedit_two_frame_rotary_rows_are_not_wans():
    # what makes the test above mean something for ChronoEdit: its tables are not Wan's positions
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    model = make_tiny_chronoedit()
    x = wan_inputs(1, grid=(2, 4, 6))["hidden_states"]
    cos, _ = model.rope(x)
    wan_cos, _ = WanRotaryPosEmbed(12, (1, 2, 2), 32)(x)
    frame = 4 * 6
    assert torch.equal(cos[:, :frame], wan_cos[:, :frame])
    assert not torch.equal(cos[:, frame:], wan_cos[:, frame:])
    three = wan_inputs(1, grid=(3, 4, 6))["hidden_states"]  # other frame counts: Wan's rows
    assert torch.equal(model.rope(three)[0], WanRotaryPosEmbed(12, (1, 2, 2), 32)(three)[0])


@pytest.mark.parametrize("family", ["skyreels-v2", "chronoedit"])
def test_wan_relatives_i2v_image_context_is_left_alone(family):
    make, inputs, _ = WAN_LIKE[family]
    model = make(layers=2, i2v=True)
    kw = inputs(2, i2v=True)
    base = run_kw(model, kw)
    for method in METHODS:
        bigain.apply(model, method, blocks="all", **({"merge_crossattn": True} if method == "tome" else {}))
        out = run_kw(model, kw)
        bigain.remove(model)
        assert torch.isfinite(out).all() and not torch.equal(out, base), method
    assert torch.equal(run_kw(model, kw), base)


def test_skyreels_block_causal_models_are_refused():
    model = make_tiny_skyreels_v2(layers=2, num_frame_per_block=2)
    for method in ("tome", "todo"):
        with pytest.raises(ValueError, match="num_frame_per_block=2 passes a block-causal attention mask"):
            bigain.apply(model, method)
        assert not bigain.is_patched(model)
    # set per call by the diffusion-forcing pipelines (causal_block_size), after apply
    model = make_tiny_skyreels_v2(layers=2)
    bigain.apply(model, "tome", blocks="all")
    model._set_ar_attention(2)
    with pytest.raises(ValueError, match="num_frame_per_block=2 passes a block-causal attention mask"):
        run_kw(model, wan_inputs(2, grid=(2, 4, 6)))
    bigain.remove(model)


def test_skyreels_diffusion_forcing_per_frame_timesteps_are_read_per_row():
    model = make_tiny_skyreels_v2(layers=2)
    kw = wan_inputs(2, grid=(3, 4, 6))
    kw.update(timestep=torch.tensor([[0, 400, 800], [0, 0, 300]]), enable_diffusion_forcing=True)
    base = run_kw(model, kw)
    bigain.apply(model, "bigain-td", blocks="all", alpha_schedule=(0.8, 1.2))
    assert seen_forward(model, kw).timesteps.tolist() == [800.0, 300.0]  # each row's noisiest frames
    out = run_kw(model, kw)
    bigain.remove(model)
    assert torch.isfinite(out).all() and not torch.equal(out, base)
    assert torch.equal(run_kw(model, kw), base)


def _vace_branch_outputs(model, kw):
    """What every VACE control block returns in one forward."""
    seen, handles = [], []
    for block in model.vace_blocks:
        handles.append(block.register_forward_hook(lambda m, a, out: seen.append(out)))
    try:
        run_kw(model, kw)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("method", METHODS)
def test_vace_control_blocks_run_whole_and_hints_meet_their_tokens(method):
    model = make_tiny_wan_vace(layers=4, vace_layers=(0, 2))
    kw = wan_vace_inputs(2, control_frames=1)  # the control tokens of frame 2 are the model's zero padding
    base_branch = _vace_branch_outputs(model, kw)
    report = bigain.apply(model, method, blocks="all")
    assert [b.name for b in report.blocks] == [f"blocks.{i}" for i in range(4)]  # no vace_blocks
    branch = _vace_branch_outputs(model, kw)
    out = run_kw(model, kw)
    off = run_kw(model, dict(kw, control_hidden_states_scale=torch.zeros(2)))
    bigain.remove(model)
    for (hint, ctrl), (base_hint, base_ctrl) in zip(branch, base_branch):
        assert torch.equal(ctrl, base_ctrl) and (hint is None) == (base_hint is None)
        assert hint is None or torch.equal(hint, base_hint)
    assert torch.isfinite(out).all() and not torch.equal(out, off)  # the hints still reach the output


def test_vace_hints_stay_aligned_when_the_main_blocks_reorder_tokens():
    # Every main block (hinted ones included) sees its tokens permuted: if the block outputs were not
    # back in place when the forward adds a hint, the output would change.
    model = make_tiny_wan_vace(layers=4, vace_layers=(0, 2))
    kw = wan_vace_inputs(2)
    kw["control_hidden_states_scale"] = torch.tensor([1.5, 0.7])
    base = run_kw(model, kw)
    bigain.apply(model, _PermuteConfig(blocks="all", merge_crossattn=True, merge_mlp=True))
    permuted = run_kw(model, kw)
    bigain.remove(model)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


def test_vace_with_zero_hints_compresses_as_wan_with_the_same_weights():
    from diffusers import WanTransformer3DModel

    vace = make_tiny_wan_vace(layers=3, vace_layers=(0,))
    wan = WanTransformer3DModel(**{k: v for k, v in vace.config.items() if not k.startswith(("_", "vace"))}).eval()
    missing, _ = wan.load_state_dict(vace.state_dict(), strict=False)
    assert not missing
    kw = wan_vace_inputs(2, grid=(2, 3, 5))
    kw["control_hidden_states_scale"] = torch.zeros(1)
    wan_kw = {k: v for k, v in kw.items() if not k.startswith("control")}
    for method in METHODS:
        bigain.apply(vace, method, blocks=(0, 2))
        bigain.apply(wan, method, blocks=(0, 2))
        ours, theirs = run_kw(vace, kw), run_kw(wan, wan_kw)
        bigain.remove(vace)
        bigain.remove(wan)
        assert torch.equal(ours, theirs), method


# -- Flux relatives ----------------------------------------------------------------------------
FLUX_LIKE = {
    "bria": ("BriaTransformer2DModel", BriaBackbone),
    "longcat-image": ("LongCatImageTransformer2DModel", LongCatImageBackbone),
    "ovis-image": ("OvisImageTransformer2DModel", OvisImageBackbone),
}
TEXT = 5


@pytest.mark.parametrize("family", FLUX_LIKE)
def test_flux_relatives_grid_timestep_scale_and_default_placement(family):
    cls, adapter = FLUX_LIKE[family]
    model = make_tiny_flux_like(cls, layers=2, single_layers=3)
    assert type(find_backbone(model)) is adapter
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1", "single_transformer_blocks.0"]
    t = (700.0, 250.0) if family == "bria" else (0.7, 0.25)  # what each pipeline passes
    fwd = seen_forward(model, flux_like_inputs(cls, 2, h=4, w=12, t=t))
    assert fwd.grid == ops.Grid.image(4, 12)  # rows and columns from img_ids, not a square
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 250.0])
    bigain.remove(model)


@pytest.mark.parametrize("family", FLUX_LIKE)
def test_flux_relatives_every_method_on_both_block_kinds_and_exact_removal(family):
    cls, _ = FLUX_LIKE[family]
    model = make_tiny_flux_like(cls)
    kw = flux_like_inputs(cls, 2, h=5, w=8)
    base = run_kw(model, kw)
    for method in METHODS:
        for blocks in ((0, 1), (2, 3)):  # double-stream, single-stream
            bigain.apply(model, method, blocks=blocks)
            out = run_kw(model, kw)
            bigain.remove(model)
            assert out.shape == base.shape and torch.isfinite(out).all()
            assert not torch.equal(out, base), (method, blocks)
    assert torch.equal(run_kw(model, kw), base)


@pytest.mark.parametrize("family", FLUX_LIKE)
def test_flux_relatives_rotary_rows_follow_tokens_and_keys(family):
    cls, _ = FLUX_LIKE[family]
    model = make_tiny_flux_like(cls)
    # LongCat-Image's image ids start after its pipeline's 512 text positions
    kw = flux_like_inputs(cls, 2, start=512 if family == "longcat-image" else None)
    base = run_kw(model, kw)
    for config in (_PermuteConfig(blocks="all", merge_mlp=True), _PermutedKeys(blocks="all")):
        bigain.apply(model, config)
        permuted = run_kw(model, kw)
        bigain.remove(model)
        torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FLUX_LIKE)
@pytest.mark.parametrize("method", ["tome", "todo"])
def test_flux_relatives_text_tokens_are_untouched(family, method):
    cls, _ = FLUX_LIKE[family]
    model = make_tiny_flux_like(cls)
    kw = flux_like_inputs(cls, 2)
    bigain.apply(model, method, blocks="all")
    seen, handles = [], []
    for block in model.transformer_blocks:  # the text reaches add_q_proj whole
        handles.append(block.attn.register_forward_pre_hook(
            lambda m, a, k: seen.append(("text", k["encoder_hidden_states"])), with_kwargs=True, prepend=True))
        handles.append(block.attn.add_q_proj.register_forward_pre_hook(lambda m, a: seen.append(("proj", a[0]))))
    for block in model.single_transformer_blocks:  # [text; image]: the text first and whole
        handles.append(block.attn.register_forward_pre_hook(
            lambda m, a, k: seen.append(("text", k["hidden_states"][:, :TEXT])), with_kwargs=True, prepend=True))
        handles.append(block.attn.to_q.register_forward_pre_hook(lambda m, a: seen.append(("proj", a[0][:, :TEXT]))))
    run_kw(model, kw)
    for h in handles:
        h.remove()
    bigain.remove(model)
    assert len(seen) == 8
    for (kind, text), (kind2, projected) in zip(seen[::2], seen[1::2]):
        assert (kind, kind2) == ("text", "proj") and torch.equal(text, projected)


def test_longcat_image_grid_from_ids_after_the_text_and_edit_calls_refused():
    cls = "LongCatImageTransformer2DModel"
    model = make_tiny_flux_like(cls)
    bigain.apply(model, "tome", blocks="all")
    assert seen_forward(model, flux_like_inputs(cls, 2, h=3, w=7, start=512)).grid == ops.Grid.image(3, 7)
    # LongCatImageEditPipeline: the latent's tokens, then a reference image's (modality 2) on the same grid
    kw = flux_like_inputs(cls, 2, h=3, w=7, start=512)
    ref = kw["img_ids"].clone()
    ref[:, 0] = 2
    kw.update(hidden_states=kw["hidden_states"].repeat(1, 2, 1), img_ids=torch.cat([kw["img_ids"], ref]))
    with pytest.raises(ValueError, match="appends the tokens of a reference image"):
        run_kw(model, kw)
    bigain.remove(model)


# -- CogVideoX relatives -----------------------------------------------------------------------
def test_consisid_grid_without_a_temporal_patch_and_default_placement():
    model = make_tiny_consisid(layers=4)
    assert type(find_backbone(model)) is ConsisIDBackbone
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]
    fwd = seen_forward(model, consisid_inputs(2, frames=2, size=(4, 12), t=(700, 30)))
    assert fwd.grid == ops.Grid(2, 2, 6)  # one token frame per latent frame, non-square
    assert fwd.timesteps.tolist() == [700.0, 30.0]
    bigain.remove(model)


@pytest.mark.parametrize("face", [False, True])
def test_consisid_every_method_on_every_block_and_exact_removal(face):
    model = make_tiny_consisid(layers=2, face=face)
    kw = consisid_inputs(2, size=(4, 8), face=face)
    base = run_kw(model, kw)
    for method in METHODS:
        bigain.apply(model, method, blocks="all")
        out = run_kw(model, kw)
        bigain.remove(model)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(model, kw), base)


@pytest.mark.parametrize("face", [False, True])
def test_consisid_rotary_rows_and_face_residuals_follow_the_tokens(face):
    # Tokens reordered in every block (and keys reordered): the rotary rows must follow them, and the
    # face perceiver's residual, added after blocks 0 and 2, must meet the block outputs in place.
    model = make_tiny_consisid(layers=4, face=face)
    kw = consisid_inputs(2, face=face)
    base = run_kw(model, kw)
    for config in (_PermuteConfig(blocks="all"), _PermutedKeys(blocks="all")):
        bigain.apply(model, config)
        permuted = run_kw(model, kw)
        bigain.remove(model)
        torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
