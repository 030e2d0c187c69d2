"""`torch.compile(fullgraph=True)` captures patched models in one graph (tomesd and ToDo cannot).

Dynamo's full-graph capture is what breaks on host syncs, generators and data-dependent
shapes, so it is checked with the cheap "aot_eager" backend (which also runs AOT autograd's
functionalization); one case runs the default inductor backend end to end.
"""

from __future__ import annotations

import pytest
import torch

import bigain
from conftest import (
    dit_inputs,
    flux_inputs,
    ltx_inputs,
    make_tiny_dit,
    make_tiny_flux,
    make_tiny_ltx,
    make_tiny_sd3,
    make_tiny_wan,
    sd3_inputs,
    unet_inputs,
    wan_inputs,
)

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]


@pytest.fixture(autouse=True)
def _reset():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# Timesteps of a short sampling loop, ending at t = 0 where ToDo / BiGain-TD switch off.
LOOP = (999.0, 500.0, 0.0)


def _one_level_unet():
    """A cross-attention U-Net with one resolution level (the tiny two-level one takes ~20 s to trace)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32,),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def _loop_case(name: str):
    """(model, step(model_or_compiled, t) -> output), t passed as the diffusers pipelines pass it:
    a 0-dim tensor from the scheduler's timesteps, expanded as each pipeline expands it."""
    if name == "unet":
        m = _one_level_unet()
        x, _, c = unet_inputs(2)
        return m, lambda f, t: f(x, t, c).sample  # as StableDiffusionPipeline
    if name == "dit":
        m = make_tiny_dit(layers=3)
        x, _, y = dit_inputs(2)
        return m, lambda f, t: f(x, timestep=t[None].expand(2), class_labels=y).sample  # as DiTPipeline
    if name == "sd3.5":
        m = make_tiny_sd3(dual=True, layers=3)
        kw = sd3_inputs(2)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as StableDiffusion3Pipeline
    if name == "wan":
        m = make_tiny_wan(layers=2)
        kw = wan_inputs(2)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as WanPipeline
    if name == "ltx":
        m = make_tiny_ltx(layers=2)
        kw = ltx_inputs(2)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as LTXPipeline
    if name == "cogvideox":
        from tiny_models import cogvideox_inputs, make_tiny_cogvideox

        m = make_tiny_cogvideox(layers=2)
        kw = cogvideox_inputs(2)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as CogVideoXPipeline
    if name == "hunyuan":
        from tiny_models import hunyuan_video_inputs, make_tiny_hunyuan_video

        m = make_tiny_hunyuan_video()
        kw = hunyuan_video_inputs(2)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as HunyuanVideoPipeline
    if name == "hunyuan-dit":
        from tiny_models import hunyuan_dit_inputs, make_tiny_hunyuan_dit

        m = make_tiny_hunyuan_dit()
        kw = hunyuan_dit_inputs(2)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as HunyuanDiTPipeline
    if name == "hunyuan-image":
        from tiny_models import hunyuan_image_inputs, make_tiny_hunyuan_image

        # without ByT5: the forward's reordering of ByT5 and MLLM tokens has data-dependent shapes
        m = make_tiny_hunyuan_image(byt5=False)
        kw = hunyuan_image_inputs(2, byt5=False)
        kw.pop("timestep")
        return m, lambda f, t: f(timestep=t.expand(2), **kw)[0]  # as HunyuanImagePipeline
    if name == "z-image":
        from tiny_models import make_tiny_z_image, z_image_inputs

        m = make_tiny_z_image(layers=2)
        kw = z_image_inputs(2)
        kw.pop("t")
        # as ZImagePipeline: (1000 - t) / 1000 for the scheduler's t; one (C, 1, H, W) output per sample
        return m, lambda f, t: torch.stack(f(t=(1000 - t.expand(2)) / 1000, return_dict=False, **kw)[0])
    if name == "ltx2":
        from tiny_models import ltx2_inputs, make_tiny_ltx2

        m = make_tiny_ltx2()
        kw = ltx2_inputs(2)
        kw.pop("timestep")
        kw.pop("sigma")
        return m, lambda f, t: f(timestep=t.expand(2), sigma=t.expand(2), **kw)[0]  # as LTX2Pipeline
    m = make_tiny_flux(double=1, single=2)
    kw = flux_inputs(2)
    kw.pop("timestep")
    return m, lambda f, t: f(timestep=(t / 1000).expand(2), **kw)[0]  # sigmas, as FluxPipeline


def _counting_backend():
    calls = []
    aot = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        calls.append(gm)
        return aot(gm, example_inputs)

    return backend, calls


@pytest.mark.parametrize("backbone", ["unet", "dit", "sd3.5", "flux", "wan", "ltx", "cogvideox", "hunyuan", "hunyuan-dit", "z-image", "hunyuan-image", "ltx2"])
@pytest.mark.parametrize("method", METHODS)
def test_compiled_equals_eager_over_a_sampling_loop(backbone, method):
    """Every step of a loop, the last at t = 0, gives the eager output; at most two graphs.

    The sampler tells the patch its timesteps on the host (`bigain.host_timesteps`): the switch-off
    at t = 0 of the KV methods then happens in eager and compiled alike, as one guarded extra graph.
    """
    model, step = _loop_case(backbone)
    plain, plain_step = _loop_case(backbone)
    opts = {"alpha_schedule": (0.8, 1.2)} if method == "bigain-td" else {}
    if backbone in ("sd3.5", "flux", "wan", "ltx", "cogvideox", "hunyuan", "hunyuan-dit", "z-image", "hunyuan-image", "ltx2"):
        opts["blocks"] = "all"
    bigain.apply(model, method, **opts)
    backend, graphs = _counting_backend()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    ts = torch.tensor(LOOP)
    with torch.no_grad():
        for i, t_host in enumerate(LOOP):
            t = ts[i]  # a 0-dim tensor, like iterating scheduler.timesteps
            with bigain.host_timesteps(model, [t_host] * 2):
                eager = step(model, t)
                got = step(compiled, t)
            torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4, msg=f"step {i} (t={t_host})")
            if t_host == 0.0 and method in ("todo", "bigain-td"):
                torch.testing.assert_close(got, plain_step(plain, t), rtol=1e-4, atol=1e-4)  # switched off
    assert len(graphs) <= (2 if method in ("todo", "bigain-td") else 1), len(graphs)


def test_pipeline_style_loop_without_host_timesteps_compiles_once_and_matches_eager():
    # Device timesteps alone are never read: no switch-off, no recompile, eager and compiled agree.
    model, step = _loop_case("dit")
    bigain.apply(model, "bigain-td", alpha_schedule=(0.8, 1.2), blocks="all")
    backend, graphs = _counting_backend()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.no_grad():
        for t in torch.tensor(LOOP):
            eager = step(model, t)
            got = step(compiled, t)
            torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4)
    assert len(graphs) == 1


def test_inductor_end_to_end_bigain_tm():
    dit = make_tiny_dit(layers=2)
    x, t, y = dit_inputs(2)
    bigain.apply(dit, "bigain-tm", blocks="all")
    with torch.no_grad():
        eager = dit(x, timestep=t, class_labels=y).sample
        compiled = torch.compile(dit, fullgraph=True)(x, timestep=t, class_labels=y).sample
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
