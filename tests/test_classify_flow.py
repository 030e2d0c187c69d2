"""The diffusion classifier on flow-matching denoisers (SD3 / Flux transformers, velocity targets).

Tiny random SD3 and Flux transformers with random class conditionings; the errors are checked
against a plain loop written here from diffusers' conventions (x_σ = (1 - σ) x0 + σ ε, target
ε - x0, SD3 timestep 1000 σ, Flux timestep σ on FluxPipeline's packed latents).
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

import bigain
from bigain.classify import DiffusionClassifier, read_records, reference_classify, run_classification
from bigain.classify.datasets import TensorDataset
from bigain.classify.engine import draw_noise
from bigain.classify.pipeline import bundle_from_pipeline, prepare_x0
from bigain.classify.runner import ConfigMismatchError
from bigain.models.flow import (
    FlowBundle,
    calculate_shift,
    flow_sigmas,
    latent_image_ids,
    make_flow_bundle,
    pack_latents,
    sigmas_from_scheduler_config,
    unpack_latents,
)
from conftest import make_tiny_flux, make_tiny_sd3, make_tiny_vae

pytestmark = pytest.mark.usefixtures("one_thread")

K = 4  # classes
RUN = {"n_samples": (2, 4), "to_keep": (2, 1), "batch_size": 8}
FLUX_SHAPE = (4, 12, 16)  # latent (C, H, W): 6 x 8 packed tokens of 16 channels
FLUX_SCHED = {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "shift": 3.0}


def conditionings(k: int, text_dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, 5, text_dim, generator=g), torch.randn(k, 8, generator=g)


def sd3_bundle(seed: int = 0, shift: float | None = None, dual: bool = False) -> FlowBundle:
    emb, pooled = conditionings(K, 16, 100 + seed)
    return make_flow_bundle(
        make_tiny_sd3(seed=seed, dual=dual), emb, pooled, scheduler_config={"shift": 3.0}, shift=shift
    )


def make_guided_flux(seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=8,
        axes_dims_rope=(4, 6, 6),
        guidance_embeds=True,
    ).eval()


def flux_bundle(
    seed: int = 0, guided: bool = False, guidance: float = 1.0, shape: tuple[int, int, int] = FLUX_SHAPE
) -> FlowBundle:
    emb, pooled = conditionings(K, 24, 200 + seed)
    model = make_guided_flux(seed) if guided else make_tiny_flux(seed=seed)
    return make_flow_bundle(
        model, emb, pooled, scheduler_config=FLUX_SCHED, sample_shape=shape, guidance=guidance
    )


BUILDERS = {"sd3": sd3_bundle, "sd3.5": lambda: sd3_bundle(dual=True), "flux": flux_bundle}


def images(bundle: FlowBundle, n: int, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *bundle.sample_shape, generator=g)


def errors_by_key(result) -> dict[tuple[int, int], float]:
    """{(candidate, slot): error} of one ClassifyResult."""
    out = {}
    for st in result.stages:
        for c, row in zip(st.classes, st.errors):
            for s, e in zip(st.slots, row):
                out[(c, s)] = e
    return out


# --------------------------------------------------------------------------------------------
# schedules and packing against diffusers
# --------------------------------------------------------------------------------------------
def test_static_shift_matches_the_scheduler_training_sigmas():
    from diffusers import FlowMatchEulerDiscreteScheduler

    for shift in (1.0, 3.0):
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
        # the scheduler holds σ for timesteps 1000, 999, ..., 1; ours is indexed by t = 0 ... 999
        theirs = sched.sigmas.flip(0).double()[:999]
        ours = flow_sigmas(1000, shift)
        assert ours[0] == 0.0
        torch.testing.assert_close(ours[1:], theirs, atol=1e-6, rtol=0)
        assert torch.equal(ours, sigmas_from_scheduler_config(dict(sched.config)))


def test_dynamic_shift_matches_the_scheduler_and_fluxpipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift as flux_shift

    for seq in (48, 256, 1024, 4096):
        assert calculate_shift(seq) == pytest.approx(flux_shift(seq), abs=1e-12)
    sched = FlowMatchEulerDiscreteScheduler(**FLUX_SCHED)
    ts = [25, 75, 400, 500, 975]
    for seq in (48, 4096):
        mu = flux_shift(seq)
        sched.set_timesteps(sigmas=[t / 1000 for t in ts], mu=mu)
        ours = sigmas_from_scheduler_config(dict(sched.config), image_seq_len=seq)[ts]
        torch.testing.assert_close(ours, sched.sigmas[:-1].double(), atol=1e-6, rtol=0)
    # a larger image is shifted towards more noise
    small = sigmas_from_scheduler_config(FLUX_SCHED, image_seq_len=48)
    large = sigmas_from_scheduler_config(FLUX_SCHED, image_seq_len=4096)
    assert bool((large[1:] > small[1:]).all())
    with pytest.raises(ValueError, match="image_seq_len"):
        sigmas_from_scheduler_config(FLUX_SCHED)
    with pytest.raises(ValueError, match="invert_sigmas"):
        sigmas_from_scheduler_config({"invert_sigmas": True})


def test_packing_matches_fluxpipeline():
    from diffusers import FluxPipeline

    x = torch.randn(3, 4, 12, 16)
    packed = pack_latents(x)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 3, 4, 12, 16))
    assert torch.equal(unpack_latents(packed, 12, 16), x)
    ids = FluxPipeline._prepare_latent_image_ids(3, 6, 8, "cpu", torch.float32)
    assert torch.equal(latent_image_ids(6, 8), ids)
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.randn(1, 4, 5, 8))


# --------------------------------------------------------------------------------------------
# the bundle and the engine
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd3", "sd3.5", "flux"])
def test_shapes_and_result_structure(family):
    bundle = BUILDERS[family]()
    assert (
        bundle.kind == family.replace("sd3.5", "sd3")
        and bundle.prediction_type == "flow"
        and bundle.alphas_cumprod is None
    )
    assert bundle.num_train_timesteps == 1000 and bundle.num_classes == K
    x = images(bundle, 2)
    t = torch.tensor([100, 900])
    labels = torch.tensor([0, 3])
    v = bundle.predict(x, t, labels)
    assert v.shape == x.shape and torch.isfinite(v).all()
    eps = bundle.predict_eps(x, t, labels)  # x_t = ε - (1 - σ) v
    s = bundle.sigma_at(t).view(-1, 1, 1, 1)
    torch.testing.assert_close(eps - (1 - s) * v, x, atol=1e-5, rtol=1e-5)
    results = DiffusionClassifier(bundle, **RUN).classify_batch(x, [11, 12])
    for r in results:
        assert r.error is None and r.prediction in range(K)
        assert sorted(r.ranking) == list(range(K)) and r.ranking[0] == r.prediction
        assert len(r.mean_errors) == K and all(math.isfinite(m) for m in r.mean_errors)
        assert [len(st.classes) for st in r.stages] == [K, 2]
        assert [len(st.slots) for st in r.stages] == [2, 2]  # 4 timesteps, 2 new per stage
        assert r.calls == K * 2 + 2 * 2


def _plain_velocity_sd3(model, x_t, sigma, emb, pooled):
    return model(
        hidden_states=x_t,
        encoder_hidden_states=emb,
        pooled_projections=pooled,
        timestep=torch.tensor([sigma * 1000.0]),
        return_dict=False,
    )[0]


def _plain_velocity_flux(model, x_t, sigma, emb, pooled, guidance=None):
    from diffusers import FluxPipeline

    _, c, h, w = x_t.shape
    kwargs = {} if guidance is None else {"guidance": torch.tensor([guidance])}
    out = model(
        hidden_states=FluxPipeline._pack_latents(x_t, 1, c, h, w),
        encoder_hidden_states=emb,
        pooled_projections=pooled,
        timestep=torch.tensor([sigma]),
        img_ids=FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32),
        txt_ids=torch.zeros(emb.shape[1], 3),
        return_dict=False,
        **kwargs,
    )[0]
    return FluxPipeline._unpack_latents(out, h, w, 1)  # vae_scale_factor 1: h, w are latent sizes


def _shifted(family: str, t: int) -> float:
    s = t / 1000
    if family == "sd3":  # static shift 3
        return 3 * s / (1 + 2 * s)
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (6 * 8 - 256)  # 48 packed tokens
    return math.exp(mu) / (math.exp(mu) + (1 / s - 1))


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_errors_equal_a_plain_velocity_loop(family):
    bundle = BUILDERS[family]()
    seed, key = 3, 4242
    x0 = images(bundle, 1)[0]
    result = DiffusionClassifier(bundle, seed=seed, **RUN).classify(x0, key)
    errs = errors_by_key(result)
    noise = draw_noise(tuple(x0.shape), 4, seed, key)
    emb, pooled = bundle.extras["prompt_embeddings"], bundle.extras["pooled_embeddings"]
    plain = _plain_velocity_sd3 if family == "sd3" else _plain_velocity_flux
    st = result.stages[0]
    checked = 0
    for c in (0, K - 1):
        for s, t in zip(st.slots, st.timesteps):
            sigma = _shifted(family, t)
            eps = noise[s : s + 1]
            x_t = (1 - sigma) * x0[None] + sigma * eps
            with torch.no_grad():
                v_hat = plain(bundle.denoiser, x_t, sigma, emb[c : c + 1], pooled[c : c + 1])
            expected = float(((v_hat - (eps - x0[None])) ** 2).mean())
            assert errs[(c, s)] == pytest.approx(expected, rel=1e-5, abs=1e-7)
            checked += 1
    assert checked == 4
    # the reference loop of the engine agrees too
    ref = reference_classify(bundle, x0, key, seed=seed, n_samples=RUN["n_samples"], to_keep=RUN["to_keep"])
    assert ref.prediction == result.prediction
    for k, e in errors_by_key(ref).items():
        assert errs[k] == pytest.approx(e, rel=1e-5)


class _VelocityOracle(torch.nn.Module):
    """The exact velocity for data that is a single point per class: with x0 = μ_c,
    ε = (x_t - (1 - σ) μ_c) / σ, so v = ε - x0 = (x_t - μ_c) / σ. Called like an SD3 transformer
    (timestep 1000 σ) or, packed, like Flux (timestep σ, FluxPipeline's 2x2 token packing)."""

    def __init__(self, packed: bool) -> None:
        super().__init__()
        self.packed = packed
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the engine a device and a dtype

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False, **kwargs):
        from diffusers import FluxPipeline

        mu = encoder_hidden_states  # (B, C, H, W): the class's point
        if self.packed:
            b, c, h, w = mu.shape
            mu = FluxPipeline._pack_latents(mu, b, c, h, w)
            sigma = timestep
        else:
            sigma = timestep / 1000.0
        sigma = sigma.view(-1, *([1] * (mu.dim() - 1)))
        return ((hidden_states - mu) / sigma * self.scale,)


@pytest.mark.parametrize("packed", [False, True])
def test_an_exact_velocity_oracle_scores_zero_at_its_class(packed):
    """Checks the conventions end to end (which side σ multiplies, the sign of the velocity, the
    timestep scale): an image equal to class k's point gets error 0 for k only, and k wins."""
    g = torch.Generator().manual_seed(5)
    points = torch.randn(K, 4, 8, 8, generator=g)
    bundle = FlowBundle(
        name="oracle",
        denoiser=_VelocityOracle(packed),
        kind="oracle",
        alphas_cumprod=None,
        num_classes=K,
        class_names=[str(k) for k in range(K)],
        sample_shape=(4, 8, 8),
        conditioning=lambda labels: {"encoder_hidden_states": points[labels]},
        sigmas=flow_sigmas(1000, 3.0),
        timestep_scale=1.0 if packed else 1000.0,
        packed=packed,
    )
    for k in range(K):
        r = DiffusionClassifier(bundle, **RUN).classify(points[k], 100 + k)
        assert r.prediction == k
        assert r.mean_errors[k] < 1e-9
        assert min(m for i, m in enumerate(r.mean_errors) if i != k) > 1e-2


def test_flux_guidance_is_passed_when_the_model_embeds_it():
    x0 = images(flux_bundle(guided=True), 1)[0]
    one = DiffusionClassifier(flux_bundle(guided=True), **RUN).classify(x0, 5)
    other = DiffusionClassifier(flux_bundle(guided=True, guidance=4.0), **RUN).classify(x0, 5)
    assert one.mean_errors != other.mean_errors
    bundle = flux_bundle(guided=True, guidance=4.0)
    sigma = float(bundle.sigmas[500])
    x = images(bundle, 1)
    emb, pooled = bundle.extras["prompt_embeddings"], bundle.extras["pooled_embeddings"]
    with torch.no_grad():
        expected = _plain_velocity_flux(bundle.denoiser, x, sigma, emb[2:3], pooled[2:3], guidance=4.0)
        got = bundle.predict(x, torch.tensor([500]), torch.tensor([2]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert flux_bundle().guidance is None  # not passed to a model without a guidance embedding


def test_shift_option():
    assert torch.equal(sd3_bundle(shift=False).sigmas, flow_sigmas(1000, 1.0))
    assert torch.equal(sd3_bundle().sigmas, flow_sigmas(1000, 3.0))
    assert torch.equal(sd3_bundle(shift=2.0).sigmas, flow_sigmas(1000, 2.0))
    schedule = sd3_bundle(shift=2.0).extras["schedule"]  # what a run folder can record
    assert schedule["shift"] == 2.0 and schedule["prediction_type"] == "flow" and schedule["guidance"] is None
    assert flux_bundle(guided=True, guidance=3.5).extras["schedule"]["guidance"] == 3.5
    with pytest.raises(ValueError, match="shift"):
        flow_sigmas(1000, -1.0)


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("method", ["none", "tome"])
def test_order_and_batch_independence(family, method):
    bundle = BUILDERS[family]()
    x = images(bundle, 3)
    keys = [31, 32, 33]
    opts = {"ratio": 0.5} if method == "tome" else {}
    with bigain.compressed(bundle, method, **opts):
        together = DiffusionClassifier(bundle, **{**RUN, "batch_size": 7}).classify_batch(x, keys)
        order = [2, 0, 3, 1]
        for g in range(3):
            alone = DiffusionClassifier(bundle, **{**RUN, "batch_size": 3}).classify(x[g], keys[g])
            shuffled = DiffusionClassifier(bundle, classes=order, **RUN).classify(x[g], keys[g])
            ref, a = errors_by_key(together[g]), errors_by_key(alone)
            assert together[g].prediction == alone.prediction
            assert ref.keys() == a.keys()
            for k in ref:
                assert a[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7)
            # candidate i of the shuffled run is class order[i]
            assert order[shuffled.prediction] == together[g].prediction
            for i, cls in enumerate(order):
                assert shuffled.mean_errors[i] == pytest.approx(together[g].mean_errors[cls], rel=1e-5) or (
                    math.isinf(shuffled.mean_errors[i]) and math.isinf(together[g].mean_errors[cls])
                )


@pytest.mark.parametrize("family", ["sd3", "sd3.5", "flux"])
def test_methods_change_errors_and_classification_runs(family):
    bundle = BUILDERS[family]()
    x = images(bundle, 2)
    keys = [1, 2]
    base = [errors_by_key(r) for r in DiffusionClassifier(bundle, **RUN).classify_batch(x, keys)]
    for method in [m for m in bigain.list_methods() if m != "none"]:
        with bigain.compressed(bundle, method):
            results = DiffusionClassifier(bundle, **RUN).classify_batch(x, keys)
        for r, b in zip(results, base):
            assert r.error is None and r.prediction in range(K), (method, r.error)
            e = errors_by_key(r)
            assert all(math.isfinite(v) for v in e.values()), method
            common = [k for k in e if k in b]
            assert max(abs(e[k] - b[k]) for k in common) > 1e-6, f"{method} changed nothing on {family}"
    after = [errors_by_key(r) for r in DiffusionClassifier(bundle, **RUN).classify_batch(x, keys)]
    assert after == base  # removal restores the errors exactly


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_run_folder_resumes(tmp_path, family):
    # data sets hand over square samples: a 12 x 12 latent (6 x 6 packed tokens) for Flux
    bundle = sd3_bundle() if family == "sd3" else flux_bundle(shape=(4, 12, 12))
    n = 5
    x = images(bundle, n, seed=9)
    data = TensorDataset(x, [i % K for i in range(n)], [f"c{k}" for k in range(K)], name="latents")
    opts = {**RUN, "progress": False, "method": "tome", "method_options": {"ratio": 0.5}}
    full = run_classification(bundle, data, tmp_path / "full", **opts)
    out = tmp_path / "resumed"
    part = run_classification(bundle, data, out, limit=2, **opts)
    assert part["num_images"] == 2
    resumed = run_classification(bundle, data, out, **opts)
    assert resumed["num_images"] == n == full["num_images"] and resumed["complete"]
    recs, _, _ = read_records(out / "results.jsonl")
    ref, _, _ = read_records(tmp_path / "full" / "results.jsonl")
    assert [r["id"] for r in recs] == [r["id"] for r in ref]  # no duplicates, same order
    for a, b in zip(recs, ref):
        assert a["error"] is None and a["prediction"] == b["prediction"]
        assert np.allclose(
            [e for st in a["stages"] for row in st["errors"] for e in row],
            [e for st in b["stages"] for row in st["errors"] for e in row],
            rtol=1e-5,
        )
    with pytest.raises(ConfigMismatchError, match="seed"):  # another run's settings are refused
        run_classification(bundle, data, out, seed=1, **opts)


# --------------------------------------------------------------------------------------------
# pipelines: the routing, with stand-in text encoders (real ones need downloaded weights)
# --------------------------------------------------------------------------------------------
class _StandInPipeline:
    """A diffusers-like SD3/Flux pipeline whose ``encode_prompt`` maps a prompt to fixed random
    embeddings (the real encoders need downloaded weights); transformer, scheduler and VAE are real."""

    def __init__(self, family: str, transformer, vae, text_dim: int) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.family = family
        self.transformer = transformer
        self.vae = vae
        self.scheduler = FlowMatchEulerDiscreteScheduler(
            **({"shift": 3.0} if family == "sd3" else FLUX_SCHED)
        )
        self.tokenizer = self.text_encoder = object()
        self.default_sample_size = 16 if family == "sd3" else 64
        self.text_dim = text_dim
        self.calls: list[dict] = []

    def embed(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(sum(map(ord, prompt)))
        return torch.randn(5, self.text_dim, generator=g), torch.randn(8, generator=g)

    def encode_prompt(self, prompt, prompt_2=None, prompt_3=None, device=None, num_images_per_prompt=1, **kw):
        self.calls.append({"prompt": list(prompt), "prompt_2": prompt_2, **kw})
        tok = torch.stack([self.embed(p)[0] for p in prompt])
        pooled = torch.stack([self.embed(p)[1] for p in prompt])
        if self.family == "sd3":
            return tok, None, pooled, None
        return tok, pooled, torch.zeros(tok.shape[1], 3)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_bundle_from_pipeline_flow(family):
    vae = make_tiny_vae(sample_size=32, scaling_factor=0.7, shift_factor=0.2)
    model = make_tiny_sd3(layers=2) if family == "sd3" else make_tiny_flux(double=1, single=1)
    pipe = _StandInPipeline(family, model, vae, 16 if family == "sd3" else 24)
    prompts = ["a photo of a cat", "a photo of a dog", "a photo of a car"]
    bundle = bundle_from_pipeline(pipe, prompts, class_names=["cat", "dog", "car"], batch_size=2)
    assert isinstance(bundle, FlowBundle) and bundle.kind == family and bundle.num_classes == 3
    assert [c["prompt"] for c in pipe.calls] == [prompts[:2], prompts[2:]]  # batches of 2
    assert bundle.class_names == ["cat", "dog", "car"] and bundle.extras["prompts"] == prompts
    seq = 8 * 8 if family == "sd3" else 32 * 32  # image tokens: SD3 patches of 2, Flux packs 2x2
    expected_sigmas = sigmas_from_scheduler_config(dict(pipe.scheduler.config), image_seq_len=seq)
    assert torch.equal(bundle.sigmas, expected_sigmas)
    assert bundle.sample_shape == ((4, 16, 16) if family == "sd3" else (4, 64, 64))
    cond = bundle.conditioning(torch.tensor([2, 0]))
    tok, pooled = pipe.embed(prompts[2])
    assert torch.equal(cond["encoder_hidden_states"][0], tok) and torch.equal(
        cond["pooled_projections"][0], pooled
    )
    # latents: (mean - shift_factor) * scaling_factor, from images of latent side x 2 (2-level VAE)
    assert bundle.extras["image_size"] == 2 * bundle.sample_shape[-1]
    if family == "sd3":
        img = torch.rand(3, 32, 32) * 2 - 1  # tensors are taken as pixels in [-1, 1]
        x0 = prepare_x0(bundle, [img])
        with torch.no_grad():
            mean = vae.encode(img[None]).latent_dist.mean
        torch.testing.assert_close(x0, (mean - 0.2) * 0.7, atol=1e-5, rtol=1e-5)
        r = DiffusionClassifier(bundle, **RUN).classify(x0[0], 1)
        assert r.prediction in range(3)
    # options reach encode_prompt and the schedule
    bundle_from_pipeline(pipe, prompts, max_sequence_length=77, shift=False)
    assert pipe.calls[-1]["max_sequence_length"] == 77
    assert torch.equal(bundle_from_pipeline(pipe, prompts, shift=False).sigmas, flow_sigmas(1000, 1.0))


def test_pipeline_without_text_encoder_is_refused():
    pipe = types.SimpleNamespace(transformer=make_tiny_sd3(layers=1), tokenizer=None, text_encoder=None)
    with pytest.raises(TypeError, match="text encoder"):
        bundle_from_pipeline(pipe, ["a", "b"])


# --------------------------------------------------------------------------------------------
# real diffusers pipelines with tiny random text encoders and a byte-level tokenizer
# --------------------------------------------------------------------------------------------
def _byte_tokenizer():
    """A CLIP tokenizer over single bytes (no merges): builds offline, tokenizes any prompt."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77), len(vocab)


def _clip(vocab: int, hidden: int, proj: int, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(hidden + proj)
    cfg = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=proj,
        max_position_embeddings=77,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()


def _t5(vocab: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(d_model)
    cfg = T5Config(vocab_size=vocab, d_model=d_model, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    return T5EncoderModel(cfg).eval()


def _tiny_pipeline(family: str):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

    from conftest import make_tiny_vae

    tok, vocab = _byte_tokenizer()
    if family == "sd3":  # joint_attention_dim 16 (T5), pooled 8 = two CLIP projections of 4
        return StableDiffusion3Pipeline(
            transformer=make_tiny_sd3(layers=4),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=make_tiny_vae(),
            text_encoder=_clip(vocab, 8, 4, True),
            tokenizer=tok,
            text_encoder_2=_clip(vocab, 8, 4, True),
            tokenizer_2=tok,
            text_encoder_3=_t5(vocab, 16),
            tokenizer_3=tok,
        )
    return FluxPipeline(  # joint_attention_dim 24 (T5), pooled 8 (CLIP)
        transformer=make_tiny_flux(),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHED),
        vae=make_tiny_vae(),
        text_encoder=_clip(vocab, 8, 8, False),
        tokenizer=tok,
        text_encoder_2=_t5(vocab, 24),
        tokenizer_2=tok,
    )


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_real_pipeline_saved_and_loaded_like_sd(tmp_path, family):
    """The CLI's loader (DiffusionPipeline.from_pretrained + bundle_from_pipeline) on a saved folder."""
    from bigain.classify.cli import load_model_for

    prompts = ["a photo of a cat", "a photo of a dog", "a red car"]
    _tiny_pipeline(family).save_pretrained(tmp_path / "pipe")
    data = types.SimpleNamespace(prompts=prompts, class_names=["cat", "dog", "car"])
    bundle = load_model_for(str(tmp_path / "pipe"), data, "cpu")
    assert isinstance(bundle, FlowBundle) and bundle.kind == family and bundle.class_names == data.class_names
    # each class's conditioning is what the pipeline's own encode_prompt gives for its prompt alone
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "pipe"))
    for k, prompt in enumerate(prompts):
        if family == "sd3":
            tok, _, pooled, _ = pipe.encode_prompt(prompt, None, None, do_classifier_free_guidance=False)
        else:
            tok, pooled, _ = pipe.encode_prompt(prompt, None)
        cond = bundle.conditioning(torch.tensor([k]))
        # batched vs single-prompt encoding differ in the last bits only
        torch.testing.assert_close(cond["encoder_hidden_states"], tok, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(cond["pooled_projections"], pooled, atol=1e-4, rtol=1e-4)
    # images → VAE latents → classification, with and without a method
    g = torch.Generator().manual_seed(0)
    size = bundle.extras["image_size"]
    x0 = prepare_x0(bundle, [torch.rand(3, size, size, generator=g) * 2 - 1 for _ in range(2)])
    assert x0.shape == (2, *bundle.sample_shape)
    plain = DiffusionClassifier(bundle, **RUN).classify_batch(x0, [1, 2])
    with bigain.compressed(bundle, "bigain-td"):
        squeezed = DiffusionClassifier(bundle, **RUN).classify_batch(x0, [1, 2])
    for a, b in zip(plain, squeezed):
        assert a.prediction in range(3) and b.prediction in range(3)
        assert a.mean_errors != b.mean_errors


def test_bundles_refuse_a_missing_schedule():
    from bigain.models import DiffusionBundle

    base = dict(
        name="x",
        denoiser=torch.nn.Linear(1, 1),
        kind="x",
        num_classes=2,
        class_names=["a", "b"],
        sample_shape=(1, 4, 4),
        conditioning=lambda labels: {},
    )
    with pytest.raises(ValueError, match="FlowBundle"):
        DiffusionBundle(alphas_cumprod=torch.ones(10), prediction_type="flow", **base)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        DiffusionBundle(alphas_cumprod=None, **base)
    with pytest.raises(ValueError, match="sigmas"):
        FlowBundle(alphas_cumprod=None, **base)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FlowBundle(alphas_cumprod=None, sigmas=torch.linspace(0, 2, 10), **base)


def test_generate_refuses_a_flow_bundle_with_a_clear_message():
    from bigain.generate.sampler import make_scheduler

    with pytest.raises(ValueError, match="flow"):
        make_scheduler(sd3_bundle(), "ddim")
