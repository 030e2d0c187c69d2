"""The hot path on a stand-in device: no host<->device traffic, per-forward state, operator counts.

A GPU is not needed to see a sync: on the meta device every host->device copy and device->host
read is an operator (or a tensor made from host data) that `bigain.bench.dispatch` counts. A
patched forward given device timesteps, as diffusers pipelines pass them, must make exactly the
transfers of the unpatched forward (none), for every method on every backbone.
"""

from __future__ import annotations

import copy

import pytest
import torch

import bigain
from bigain.backbones import find_backbone
from bigain.bench.dispatch import count_traffic
from conftest import (
    dit_inputs,
    flux_inputs,
    ltx_inputs,
    make_tiny_dit,
    make_tiny_flux,
    make_tiny_ltx,
    make_tiny_pixart,
    make_tiny_sd3,
    make_tiny_sdxl_unet,
    make_tiny_unet,
    make_tiny_wan,
    sd3_inputs,
    unet_inputs,
    wan_inputs,
)
from tiny_models import (
    chroma_inputs,
    make_tiny_chroma,
    make_tiny_qwen_image,
    make_tiny_qwen_image21,
    qwen_image21_inputs,
    qwen_image_inputs,
)

META = torch.device("meta")
METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
BACKBONES = ["unet", "sdxl", "dit", "pixart", "sd3", "sd3.5", "flux", "wan", "ltx", "cogvideox", "cogview4", "qwen-image", "hunyuan", "chroma", "flux2", "hunyuan-dit", "lumina2", "qwen-image-2.1", "skyreels-v2", "wan-vace", "chronoedit", "bria", "longcat-image", "ovis-image", "consisid", "hidream", "z-image", "hunyuan-video-1.5", "hunyuan-image", "ltx2", "mochi", "cosmos", "kandinsky5", "sana-video", "easyanimate"]
# diffusers' own copies in an unpatched forward: Chroma's timestep embedding embeds a host
# `torch.tensor([0] * batch)` as its guidance and copies it to the device on every forward.
# Lumina2's rotary embedder copies its three host-made axis tables to the device and reads the caption
# lengths (`encoder_attention_mask.sum(dim=1).tolist()`) on every forward. HiDream's patchify makes
# its img_sizes with `torch.tensor([rows, cols], device=...)`. Kandinsky 5's time embedding keeps its
# frequencies as a plain host tensor and copies them to the device on every forward.
UNPATCHED_COPIES = {"chroma": 1, "lumina2": 4, "hidream": 1, "kandinsky5": 1}


def _move(v, device):
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, dict):
        return {k: _move(x, device) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return type(v)(_move(x, device) for x in v)
    return v


def _case(name: str, device: torch.device = META):
    """(model on `device`, zero-argument forward on inputs on `device`)."""
    if name in ("unet", "sdxl"):
        m = (make_tiny_unet() if name == "unet" else make_tiny_sdxl_unet()).to(device)
        x, t, c = _move(unet_inputs(2), device)
        return m, lambda: m(x, t, c)
    if name == "dit":
        m = make_tiny_dit(layers=4).to(device)
        x, t, y = _move(dit_inputs(2), device)
        return m, lambda: m(x, timestep=t, class_labels=y)
    if name == "pixart":
        m = make_tiny_pixart().to(device)
        g = torch.Generator().manual_seed(3)
        x = torch.randn(2, 4, 16, 16, generator=g).to(device)
        enc = torch.randn(2, 6, 24, generator=g).to(device)
        t = torch.tensor([700, 30]).to(device)
        cond = {"resolution": None, "aspect_ratio": None}
        return m, lambda: m(x, encoder_hidden_states=enc, timestep=t, added_cond_kwargs=cond)
    if name in ("sd3", "sd3.5"):
        m = make_tiny_sd3(dual=name == "sd3.5").to(device)
        kw = _move(sd3_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "wan":
        m = make_tiny_wan(layers=2).to(device)
        kw = _move(wan_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "ltx":
        m = make_tiny_ltx(layers=2).to(device)
        kw = _move(ltx_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "cogvideox":
        from tiny_models import cogvideox_inputs, make_tiny_cogvideox

        m = make_tiny_cogvideox(layers=2).to(device)
        kw = _move(cogvideox_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "cogview4":
        from tiny_models import cogview4_inputs, make_tiny_cogview4

        m = make_tiny_cogview4(layers=2).to(device)
        kw = _move(cogview4_inputs(2, tables=True), device)  # the model makes its own on the host
        return m, lambda: m(**kw)
    if name == "hunyuan":
        from tiny_models import hunyuan_video_inputs, make_tiny_hunyuan_video

        m = make_tiny_hunyuan_video().to(device)
        kw = _move(hunyuan_video_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "chroma":
        m = make_tiny_chroma().to(device)
        kw = _move(chroma_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "hunyuan-dit":
        from tiny_models import hunyuan_dit_inputs, make_tiny_hunyuan_dit

        m = make_tiny_hunyuan_dit().to(device)
        kw = _move(hunyuan_dit_inputs(2), device)  # the pipeline makes its tables on the device
        return m, lambda: m(**kw)
    if name == "lumina2":
        from tiny_models import lumina2_inputs, make_tiny_lumina2

        m = make_tiny_lumina2().to(device)
        kw = _move(lumina2_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "qwen-image-2.1":
        return _qwen_image21_case(device)
    if name == "hunyuan-video-1.5":
        return _hunyuan_video15_case(device)
    if name == "hunyuan-image":
        from tiny_models import hunyuan_image_inputs, make_tiny_hunyuan_image

        # without ByT5: the forward's reordering of ByT5 and MLLM tokens indexes by the masks' values,
        # which the meta device does not have
        m = make_tiny_hunyuan_image(byt5=False).to(device)
        kw = _move(hunyuan_image_inputs(2, byt5=False), device)
        return m, lambda: m(**kw)
    if name in ("skyreels-v2", "wan-vace", "chronoedit"):
        import tiny_models

        make = {
            "skyreels-v2": tiny_models.make_tiny_skyreels_v2,
            "wan-vace": tiny_models.make_tiny_wan_vace,
            "chronoedit": tiny_models.make_tiny_chronoedit,
        }[name]
        m = make(layers=3).to(device)
        kw = _move(tiny_models.wan_vace_inputs(2) if name == "wan-vace" else wan_inputs(2, grid=(2, 4, 6)), device)
        return m, lambda: m(**kw)
    if name in ("bria", "longcat-image", "ovis-image"):
        from tiny_models import flux_like_inputs, make_tiny_flux_like

        cls = {"bria": "Bria", "longcat-image": "LongCatImage", "ovis-image": "OvisImage"}[name] + "Transformer2DModel"
        m = make_tiny_flux_like(cls).to(device)
        kw = _move(flux_like_inputs(cls, 2), device)
        return m, lambda: m(**kw)
    if name == "consisid":
        from tiny_models import consisid_inputs, make_tiny_consisid

        m = make_tiny_consisid(layers=2, face=True).to(device)
        kw = _move(consisid_inputs(2, face=True), device)
        return m, lambda: m(**kw)
    if name == "z-image":
        from tiny_models import make_tiny_z_image, z_image_inputs

        m = make_tiny_z_image(layers=2).to(device)
        kw = _move(z_image_inputs(2), device)  # captions of two lengths: per-sample rotary rows and a mask
        return m, lambda: m(**kw)
    if name == "kandinsky5":
        from tiny_models import kandinsky5_inputs, make_tiny_kandinsky5

        m = make_tiny_kandinsky5(layers=2).to(device)
        kw = _move(kandinsky5_inputs(2), device)  # the pipeline makes the rotary positions on the device
        return m, lambda: m(**kw)
    if name == "sana-video":
        from tiny_models import make_tiny_sana_video, sana_video_inputs

        m = make_tiny_sana_video(layers=2).to(device)
        kw = _move(sana_video_inputs(2, i2v=True), device)  # per-token timesteps
        return m, lambda: m(**kw)
    if name == "easyanimate":
        from tiny_models import easyanimate_inputs, make_tiny_easyanimate

        # diffusers' EasyAnimate makes its rotary tables on the host every forward and each processor
        # copies them to the device (4 copies per block): here the rotary embedder returns the tables
        # made once on the device, so what is counted is bigain's hooks (which would move host tables
        # once per forward).
        m = make_tiny_easyanimate(layers=2)
        kw = easyanimate_inputs(2)
        tables = _move(m.rope_embedding(kw["hidden_states"]), device)
        m.rope_embedding.forward = lambda hidden_states: tables
        m.to(device)
        kw = _move(kw, device)
        return m, lambda: m(**kw)
    if name == "hidream":
        from tiny_models import hidream_inputs, make_tiny_hidream

        # The model's own host reads, which the meta device cannot serve, kept out: dense feed-forwards
        # (the mixture of experts reads its expert counts) and training mode (the eval unpatchify reads
        # img_sizes per sample); bigain's hooks do the same in either mode.
        m = make_tiny_hidream(experts=0).train().to(device)
        kw = _move(hidream_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "ltx2":
        from tiny_models import ltx2_inputs, make_tiny_ltx2

        # LTX-2.3's options (split rotary tables, gated and perturbed attention), the pipeline's coordinates,
        # keyframe tokens appended after the grid (image-to-video's per-token timesteps)
        m = make_tiny_ltx2(split=True).to(device)
        kw = _move(ltx2_inputs(2, appended=6), device)
        return m, lambda: m(**kw)
    if name == "mochi":
        from tiny_models import make_tiny_mochi, mochi_inputs

        m = make_tiny_mochi().to(device)
        kw = _move(mochi_inputs(2), device)
        if device != META:
            return m, lambda: m(**kw)
        import torch.fx.experimental._config as fx_config

        def rope(freqs, frames, height, width, device=None, dtype=None):
            # MochiRoPE's arithmetic without its fp32 autocast region, which the meta device has not
            pos = m.rope._get_positions(frames, height, width, device, dtype)
            angles = torch.einsum("nd,dhf->nhf", pos.float(), freqs.float())
            return torch.cos(angles), torch.sin(angles)

        m.rope.forward = rope

        def call():
            # The processor picks each sample's unpadded text with torch.nonzero, which the meta device
            # serves only told to assume every entry is nonzero (the model's own read, not bigain's).
            with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
                return m(**kw)

        return m, call
    if name == "cosmos":
        from tiny_models import cosmos_inputs, make_tiny_cosmos

        m = make_tiny_cosmos(in_channels=5).to(device)
        kw = _move(cosmos_inputs(2, condition=True, per_frame=True), device)  # per-frame timesteps
        return m, lambda: m(**kw)
    if name == "qwen-image":
        m = make_tiny_qwen_image(layers=2).to(device)
        kw = _move(qwen_image_inputs(2), device)
        return m, lambda: m(**kw)
    if name == "flux2":
        from tiny_models import flux2_inputs, make_tiny_flux2

        m = make_tiny_flux2().to(device)
        kw = _move(flux2_inputs(2), device)
        return m, lambda: m(**kw)
    m = make_tiny_flux().to(device)
    kw = _move(flux_inputs(2), device)
    return m, lambda: m(**kw)


def _qwen_image21_case(device: torch.device):
    """Qwen-Image 2.1 on `device`. diffusers' forward lays the joint sequence out on the host (a
    repeat_interleave by the image-slot mask, `.tolist()` of it, `int()` of a sum: reads that the meta
    device cannot serve at all), so here the model's forward is its block loop over the joint sequence,
    with the pieces the model makes on the host (the joint input, modulation, rotary table, prefix
    segments) captured once from a CPU forward beforehand. What runs and is counted: bigain's read of
    the forward's arguments, the blocks and bigain's hooks on them."""
    m = make_tiny_qwen_image21(layers=2)
    kw = qwen_image21_inputs(2, cond=(2, 4))
    seen: dict = {}
    h = m.transformer_blocks[0].register_forward_pre_hook(lambda mod, a, k: seen.update(k), with_kwargs=True)
    with torch.no_grad():
        m(**kw)
    h.remove()
    m.to(device)
    kw, block_kw = _move(kw, device), _move(seen, device)
    joint = block_kw.pop("hidden_states")

    def block_loop(hidden_states, encoder_hidden_states, timestep, img_shapes, img_mask, **_):
        x = joint
        for block in m.transformer_blocks:
            x = block(hidden_states=x, **block_kw)
        return (m.proj_out(x),)

    m.forward = block_loop
    return m, lambda: m(**kw)


def _hunyuan_video15_case(device: torch.device):
    """HunyuanVideo 1.5 on `device`. diffusers' forward orders the conditions on the host (`if` on
    `torch.all(image_embeds == 0)`, boolean indexing by the masks: reads the meta device cannot
    serve), so here the model's forward is its block loop, with the blocks' inputs (video tokens,
    conditions, their mask, modulation, rotary tables) captured once from a CPU forward beforehand.
    What runs and is counted: bigain's read of the forward's arguments, the blocks and bigain's hooks."""
    from tiny_models import hunyuan_video15_inputs, make_tiny_hunyuan_video15

    m = make_tiny_hunyuan_video15(layers=2)
    kw = hunyuan_video15_inputs(2)
    seen: list = []
    h = m.transformer_blocks[0].register_forward_pre_hook(lambda mod, a: seen.append(a))
    with torch.no_grad():
        m(**kw)
    h.remove()
    m.to(device)
    kw, (x0, *block_args) = _move(kw, device), _move(seen[0], device)

    def block_loop(hidden_states, timestep, **_):
        x, enc = x0, block_args[0]
        for block in m.transformer_blocks:
            x, enc = block(x, enc, *block_args[1:])
        return (m.proj_out(x),)

    m.forward = block_loop
    return m, lambda: m(**kw)


def _steady_traffic(call):
    with torch.no_grad():
        count_traffic(call)  # warm-up: per-device caches (stencil, positions, hash terms)
        return count_traffic(call)


# Packed-token families whose grid comes from `img_ids` values, which the meta device does not have.
META_GRIDS = {
    "flux": (6, 8),
    "chroma": (6, 10),
    "flux2": (6, 10),
    "bria": (6, 10),
    "longcat-image": (6, 10),
    "ovis-image": (6, 10),
}


def _apply(model, name: str, method: str, **options):
    if name not in ("unet", "sdxl", "dit", "pixart"):
        options.setdefault("blocks", "all")
    report = bigain.apply(model, method, **options)
    if name in META_GRIDS:
        bigain.set_grid(model, META_GRIDS[name])
    return report


@pytest.mark.parametrize("backbone", BACKBONES)
def test_no_host_device_traffic_in_a_patched_forward(backbone):
    model, call = _case(backbone)
    base = _steady_traffic(call)
    assert base.transfers == UNPATCHED_COPIES.get(backbone, 0), base.where
    for method in METHODS:
        if find_backbone(model).refusal(method, bigain.make_config(method).mechanism):
            continue  # refused with a message (Flux 2's KV methods): no forward to count
        report = _apply(model, backbone, method)
        assert report.num_blocks > 0
        tr = _steady_traffic(call)
        assert (tr.h2d, tr.d2h) == (base.h2d, base.d2h), (method, tr.where)
        bigain.remove(model)


@pytest.mark.parametrize("method", ["tome", "sito", "bigain-td"])
def test_no_traffic_with_the_classifiers_keys_and_host_timesteps(method):
    # The classifier hands host keys and host timesteps: they reach the device once, outside the forward.
    model, call = _case("dit")
    opts = {"alpha_schedule": (0.8, 1.2)} if method == "bigain-td" else {}
    _apply(model, "dit", method, **opts)
    with bigain.sample_keys(model, torch.tensor([3, 4])), bigain.host_timesteps(model, [500, 500]):
        tr = _steady_traffic(call)
    assert tr.transfers == 0, tr.where


def test_python_number_timesteps_add_no_copy():
    # diffusers itself copies a Python-number timestep to the device once; the patch adds nothing.
    model = make_tiny_unet().to(META)
    x, _, c = _move(unet_inputs(2), META)
    base = _steady_traffic(lambda: model(x, 500, c))
    for method in ("tome", "todo"):
        bigain.apply(model, method)
        assert _steady_traffic(lambda: model(x, 500, c)).h2d == base.h2d
        bigain.remove(model)


def test_the_counter_sees_what_main_did():
    """The counter is not blind: tomesd's stream from a host generator and a read of t are counted."""
    model, call = _case("dit")
    report = bigain.apply(model, "tome", generator=torch.Generator().manual_seed(0))
    assert _steady_traffic(call).h2d == report.num_blocks  # one copy per compressed block call
    bigain.remove(model)
    t = torch.zeros(2, device=META)
    assert count_traffic(lambda: bool((t <= 0).all())).d2h == 1
    assert count_traffic(lambda: t.new_tensor([0.0, 1.0])).h2d == 1


# -- per-forward state -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tome", "todo"])
def test_forward_state_is_dropped_after_the_forward(method):
    model, call = _case("flux", torch.device("cpu"))
    _apply(model, "flux", method)
    state = model._bigain_patch
    with torch.no_grad():
        call()
    assert state.forward is None
    for p in state.patches:
        assert getattr(p, "plan", None) is None and p._rope is None
        assert getattr(p, "_kv_src", None) is None
    with pytest.raises(RuntimeError, match="outside a forward"), torch.no_grad():
        block = model.transformer_blocks[0]
        block(
            hidden_states=torch.randn(2, 48, 32),
            encoder_hidden_states=torch.randn(2, 5, 32),
            temb=torch.randn(2, 32),
            image_rotary_emb=None,
        )


def test_a_copy_of_a_patched_model_owns_its_random_state():
    model, call = _case("dit", torch.device("cpu"))
    bigain.apply(model, "tome", rng="generator")
    twin = copy.deepcopy(model)
    x, t, y = dit_inputs(2)
    with torch.no_grad():
        first = model(x, timestep=t, class_labels=y).sample
        model(x, timestep=t, class_labels=y)  # advances the original's stream only
        twin_first = twin(x, timestep=t, class_labels=y).sample
    assert torch.equal(first, twin_first)
    assert twin._bigain_patch is not model._bigain_patch
    bigain.remove(twin)
    assert bigain.is_patched(model)


def test_a_copy_of_a_patched_model_runs_its_own_weights():
    # diffusers' registry wraps forward in a closure over the original module; the copy is rebound
    model, _ = _case("dit", torch.device("cpu"))
    bigain.apply(model, "tome")
    twin = copy.deepcopy(model)
    x, t, y = dit_inputs(2)
    with torch.no_grad():
        assert torch.equal(twin(x, timestep=t, class_labels=y).sample, model(x, timestep=t, class_labels=y).sample)
        twin.transformer_blocks[1].attn1.to_out[0].weight.mul_(2.0)  # a patched block's sub-layer
        assert not torch.equal(twin(x, timestep=t, class_labels=y).sample, model(x, timestep=t, class_labels=y).sample)


def test_apply_on_a_patched_model_says_it_replaced():
    model, _ = _case("dit", torch.device("cpu"))
    bigain.apply(model, "tome")
    with pytest.warns(UserWarning, match="replaced by todo"):
        bigain.apply(model, "todo")
    assert model._bigain_patch.config.name == "todo"


# -- operator counts at the published size -------------------------------------------------
def test_operators_per_compressed_block_against_tomesd_on_the_sd2_unet():
    from bigain.bench.opcount import count_model

    rows = count_model(
        "sd2",
        [
            ("tomesd", {"ratio": 0.5}),
            ("tome", {"ratio": 0.5}),
            ("bigain-tm", {"ratio": 0.5}),
            ("todo", {}),
            ("bigain-td", {}),
        ],
        pixels=512,
        batch=2,
    )
    per_block = {r.method: r.ops_per_block for r in rows}
    tomesd = next(r for r in rows if r.method == "tomesd")
    # tomesd patches every block but merges only at the highest resolution (5 blocks)
    tomesd_per_call = tomesd.ops_per_block * tomesd.blocks / 5
    assert per_block["tome"] <= tomesd_per_call
    assert per_block["bigain-tm"] <= tomesd_per_call
    # the reference blend rounds alpha*nearest and (1-alpha)*average separately (the authors'
    # arithmetic, bit for bit): two products and a sum over ToDo's gather, plus the pooling
    assert per_block["bigain-td"] <= per_block["todo"] + 4
    for r in rows:
        if r.method != "tomesd":
            assert (r.h2d, r.d2h) == (0, 0), r


# -- the sampler and the classifier say what they hold on the host ------------------------------
def _record_switch_off(denoiser):
    """The switch-off decision of every forward, as the first patched block saw it."""
    seen = []
    state = denoiser._bigain_patch
    block = state.patches[0].block.module
    handle = block.register_forward_pre_hook(lambda m, a: seen.append(state.forward.off))
    return seen, handle


def test_the_sampler_switches_kv_methods_off_at_its_last_step_t0():
    from bigain.classify.testing import tiny_dit_bundle
    from bigain.generate import SamplerConfig, sample

    bundle = tiny_dit_bundle(size=16, layers=2)
    bigain.apply(bundle.denoiser, "todo", blocks="all")
    seen, handle = _record_switch_off(bundle.denoiser)
    sample(bundle, [1, 2], SamplerConfig("ddim", steps=4, guidance=1.0), progress=False)  # DDIM ends at t = 0
    handle.remove()
    assert seen == [False, False, False, True]


def test_the_classifier_tells_the_patch_its_host_timesteps():
    from bigain.classify.engine import _host_timesteps_context
    from bigain.classify.testing import tiny_dit_bundle

    bundle = tiny_dit_bundle(size=16, layers=2)
    bigain.apply(bundle.denoiser, "bigain-td", blocks="all")
    state = bundle.denoiser._bigain_patch
    with _host_timesteps_context(bundle, torch.tensor([0, 0])):
        assert state.host_timesteps == (0.0, 0.0) and state.host_off
    with _host_timesteps_context(bundle, torch.tensor([0, 125])):
        assert not state.host_off
    assert state.host_timesteps is None
