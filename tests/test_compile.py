"""`torch.compile(fullgraph=True)` captures patched models in one graph (tomesd and ToDo cannot).

Dynamo's full-graph capture is what breaks on host syncs, generators and data-dependent
shapes, so it is checked with the cheap "aot_eager" backend (which also runs AOT autograd's
functionalization); one case runs the default inductor backend end to end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

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
    if name in _families():
        return _family_case(name)
    m = make_tiny_flux(double=1, single=2)
    kw = flux_inputs(2)
    kw.pop("timestep")
    return m, lambda f, t: f(timestep=(t / 1000).expand(2), **kw)[0]  # sigmas, as FluxPipeline


def _sigma(t):
    return t / 1000  # the pipeline passes the flow-matching sigma t / 1000


def _t(t):
    return t  # the pipeline passes the scheduler's t (0-1000)


def _families() -> dict:
    """name -> (build, inputs -> (args, kwargs), the timestep its pipeline passes for the scheduler's t)
    on the tiny configs of tests/tiny_models.py with fewer blocks, for the trace time."""
    import tiny_models as tm

    def flux_like(cls):
        return (lambda: tm.make_tiny_flux_like(cls, layers=1)), (lambda: ((), tm.flux_like_inputs(cls, 2)))

    def wan_like(make):
        return (lambda: make(layers=2)), (lambda: ((), wan_inputs(2, grid=(2, 4, 6))))

    return {
        "chroma": (lambda: tm.make_tiny_chroma(layers=1), lambda: ((), tm.chroma_inputs(2)), _sigma),
        "cogview4": (lambda: tm.make_tiny_cogview4(layers=2), lambda: ((), tm.cogview4_inputs(2)), _t),
        "qwen-image": (lambda: tm.make_tiny_qwen_image(layers=2), lambda: ((), tm.qwen_image_inputs(2)), _sigma),
        "flux2": (lambda: tm.make_tiny_flux2(layers=1), lambda: ((), tm.flux2_inputs(2)), _sigma),
        "skyreels-v2": (*wan_like(tm.make_tiny_skyreels_v2), _t),
        "wan-vace": (
            lambda: tm.make_tiny_wan_vace(layers=2, vace_layers=(0,)),
            lambda: ((), tm.wan_vace_inputs(2)),
            _t,
        ),
        "chronoedit": (*wan_like(tm.make_tiny_chronoedit), _t),
        "bria": (*flux_like("BriaTransformer2DModel"), _t),
        "longcat-image": (*flux_like("LongCatImageTransformer2DModel"), _sigma),
        "ovis-image": (*flux_like("OvisImageTransformer2DModel"), _sigma),
        "consisid": (lambda: tm.make_tiny_consisid(layers=2), lambda: ((), tm.consisid_inputs(2)), _t),
        "auraflow": (tm._make_auraflow, tm._auraflow_inputs, _sigma),
        "sana": (tm._make_sana, tm._sana_inputs, _t),  # timestep_scale 1
        "cogview3plus": (tm._make_cogview3plus, tm._cogview3plus_inputs, _t),
        # Without the mixture of experts: diffusers' moe_infer reads the tokens per expert back to the
        # host (`bincount().cpu()`), so HiDream-I1 as published (4 routed experts) is never one graph,
        # patched or not ("hidream-moe" below).
        "hidream": (lambda: tm.make_tiny_hidream(experts=0), lambda: ((), tm.hidream_inputs(2)), _t),
        "mochi": (lambda: tm.make_tiny_mochi(layers=2), lambda: ((), tm.mochi_inputs(2)), _t),
        "cosmos2": (lambda: tm.make_tiny_cosmos(layers=2), lambda: ((), tm.cosmos_inputs(2)), _sigma),
        "kandinsky5": (lambda: tm.make_tiny_kandinsky5(layers=2), lambda: ((), tm.kandinsky5_inputs(2)), _t),
        "sana-video": (lambda: tm.make_tiny_sana_video(layers=2), lambda: ((), tm.sana_video_inputs(2)), _t),
        "easyanimate": (lambda: tm.make_tiny_easyanimate(layers=2), lambda: ((), tm.easyanimate_inputs(2)), _t),
        # The unpatched forwards of these read host values themselves, so they compile only in pieces
        # (fullgraph=False): Lumina2RotaryPosEmbed takes the caption lengths with
        # `attention_mask.sum(dim=1).tolist()`; QwenImage21's rotary embedding walks
        # `image_pad_mask.tolist()`; HunyuanVideo 1.5 branches on `torch.all(image_embeds == 0)` and
        # gathers the valid text tokens with boolean masks; HiDream-I1's experts as above.
        "lumina2": (
            lambda: tm.make_tiny_lumina2(layers=2, refiner_layers=1),
            lambda: ((), tm.lumina2_inputs(2)),
            lambda t: 1 - t / 1000,  # as Lumina2Pipeline: 0 is noise
        ),
        "qwen-image-2.1": (
            lambda: tm.make_tiny_qwen_image21(layers=2),
            lambda: ((), tm.qwen_image21_inputs(2, cond=(2, 4))),
            _sigma,
        ),
        "hunyuan-video-1.5": (
            lambda: tm.make_tiny_hunyuan_video15(layers=2),
            lambda: ((), tm.hunyuan_video15_inputs(2)),
            _t,
        ),
        "hidream-moe": (
            lambda: tm.make_tiny_hidream(layers=1, single_layers=1),
            lambda: ((), tm.hidream_inputs(2, layers=2)),
            _t,
        ),
    }


def _family_case(name: str):
    build, inputs, scale = _families()[name]
    m = build()
    args, kw = inputs()
    key = "timesteps" if name.startswith("hidream") else "timestep"
    kw.pop(key)
    kw["return_dict"] = False

    def step(f, t):
        out = f(*args, **{key: scale(t).expand(2)}, **kw)
        return out[0] if isinstance(out, tuple) else out  # Kandinsky 5 returns its tensor

    return m, step


def _counting_backend():
    calls = []
    aot = torch._dynamo.lookup_backend("aot_eager")

    def backend(gm, example_inputs):
        calls.append(gm)
        return aot(gm, example_inputs)

    return backend, calls


def _compiled_loop(backbone: str, method: str, opts: dict, fullgraph: bool = True) -> list[int]:
    """Runs LOOP eager and compiled on a patched model, each step's outputs equal (and at t = 0 the KV
    methods' output equal to the unpatched model's); returns how many graphs each step compiled.

    The sampler tells the patch its timesteps on the host (`bigain.host_timesteps`): the switch-off
    at t = 0 of the KV methods then happens in eager and compiled alike, as a guarded Python bool.
    """
    model, step = _loop_case(backbone)
    plain, plain_step = _loop_case(backbone)
    opts = dict(opts, alpha_schedule=(0.8, 1.2)) if method == "bigain-td" else opts
    bigain.apply(model, method, **opts)
    backend, graphs = _counting_backend()
    compiled = torch.compile(model, fullgraph=fullgraph, backend=backend)
    ts = torch.tensor(LOOP)
    per_step = []
    with torch.no_grad():
        for i, t_host in enumerate(LOOP):
            t = ts[i]  # a 0-dim tensor, like iterating scheduler.timesteps
            before = len(graphs)
            with bigain.host_timesteps(model, [t_host] * 2):
                eager = step(model, t)
                got = step(compiled, t)
            per_step.append(len(graphs) - before)
            torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-4, msg=f"step {i} (t={t_host})")
            if t_host == 0.0 and method in ("todo", "bigain-td"):
                torch.testing.assert_close(got, plain_step(plain, t), rtol=1e-4, atol=1e-4)  # switched off
    return per_step


@pytest.mark.parametrize("backbone", ["unet", "dit", "sd3.5", "flux", "wan", "ltx", "cogvideox", "hunyuan", "hunyuan-dit", "z-image", "hunyuan-image", "ltx2"])
@pytest.mark.parametrize("method", METHODS)
def test_compiled_equals_eager_over_a_sampling_loop(backbone, method):
    """Every step of a loop, the last at t = 0, gives the eager output; at most two graphs (the
    switched-off step of the KV methods is the second)."""
    opts = {}
    if backbone in ("sd3.5", "flux", "wan", "ltx", "cogvideox", "hunyuan", "hunyuan-dit", "z-image", "hunyuan-image", "ltx2"):
        opts["blocks"] = "all"
    graphs = _compiled_loop(backbone, method, opts)
    assert sum(graphs) <= (2 if method in ("todo", "bigain-td") else 1), graphs


# The families added after the first ones, with one method per mechanism to keep the suite's time:
# token merging (tome; the BiGain-TM and SiTo hooks are the same gather / scatter around the blocks)
# and KV downsampling with its switch-off (todo), or SiTo's pruning where the family refuses the KV
# methods. Each unpatched model is one graph too (checked when these were added).
KV_REFUSED = ("flux2", "sana", "cogview3plus", "sana-video")
FAMILIES = [
    "chroma", "cogview4", "qwen-image", "flux2", "skyreels-v2", "wan-vace", "chronoedit", "bria",
    "longcat-image", "ovis-image", "consisid", "auraflow", "sana", "cogview3plus", "hidream", "mochi",
    "cosmos2", "kandinsky5", "sana-video", "easyanimate",
]  # fmt: skip
FAMILY_METHODS = [(f, m) for f in FAMILIES for m in ("tome", "sito" if f in KV_REFUSED else "todo")]


@pytest.mark.parametrize(("backbone", "method"), FAMILY_METHODS)
def test_families_compiled_equal_eager_over_a_sampling_loop(backbone, method):
    graphs = _compiled_loop(backbone, method, {"blocks": "all"})
    assert sum(graphs) <= (2 if method in ("todo", "bigain-td") else 1), graphs


# Families whose unpatched diffusers forward reads host values (see `_families`): no fullgraph, but
# compiled in pieces the patched model still gives the eager output, no graph break is in bigain's
# code, and bigain adds no recompile beyond the KV switch-off (a step at the same switch state
# compiles nothing new). One method each, the mechanisms alternating, for the suite's time.
GRAPH_BREAKING = [
    ("lumina2", "todo"),
    ("qwen-image-2.1", "tome"),
    ("hunyuan-video-1.5", "tome"),
    ("hidream-moe", "bigain-td"),
]


@contextlib.contextmanager
def _graph_break_sites():
    """The "file:line" of every graph break dynamo reports inside (from its graph_breaks log)."""
    sites: list[str] = []

    class Sites(logging.Handler):
        def emit(self, record):
            found = re.search(r"in user code at (\S+:\d+)", record.getMessage())
            if found:
                sites.append(found.group(1))

    handler = Sites()
    logger = logging.getLogger("torch._dynamo")
    torch._logging.set_logs(graph_breaks=True)
    logger.addHandler(handler)
    try:
        yield sites
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


@pytest.mark.parametrize(("backbone", "method"), GRAPH_BREAKING)
def test_graph_breaking_families_compiled_in_pieces_equal_eager(backbone, method):
    plain, step = _loop_case(backbone)
    with torch.no_grad(), pytest.raises(torch._dynamo.exc.TorchDynamoException):
        step(torch.compile(plain, fullgraph=True, backend="aot_eager"), torch.tensor(LOOP[0]))
    torch._dynamo.reset()
    with _graph_break_sites() as sites:
        graphs = _compiled_loop(backbone, method, {"blocks": "all"}, fullgraph=False)
    assert sites, "the model breaks the graph"
    ours = os.path.dirname(bigain.__file__)
    assert not [site for site in sites if site.startswith(ours)], sites
    assert graphs[0] > 1 and graphs[1] == 0, graphs  # pieces, then no recompile at the next step
    if method not in ("todo", "bigain-td"):
        assert graphs[2] == 0, graphs


def test_rope_cache_lookup_traces_a_table_tuple_from_another_frame():
    """Regression: a block compiled as its own frame (after a graph break in the model) gets the
    rotary (cos, sin) tuple as an input while the forward's cache holds the tuple an earlier block
    saw; `is` between two such tuples broke the graph inside bigain's hook. The lookup compares the
    tensors inside (`_same`), which dynamo traces."""
    from bigain.patching.hooks import _same

    cos, sin = torch.randn(3, 4), torch.randn(3, 4)
    cache = {"rope-rows": [((cos, sin), "split")]}

    def lookup(tables, x):
        hit = any(_same(src, tables) for src, _ in cache["rope-rows"])
        return x + 1 if hit else x - 1

    got = torch.compile(lookup, fullgraph=True, backend="eager")((cos, sin), torch.zeros(2))
    assert got.tolist() == [1.0, 1.0]
    assert not _same((cos, sin), (sin, cos)) and not _same((cos, sin), (cos,)) and _same([cos], (cos,))


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
