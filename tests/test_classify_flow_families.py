"""The diffusion classifier on the newer flow-matching families: Chroma, Qwen-Image, AuraFlow,
CogView4 and SANA, each as a real diffusers pipeline in miniature.

Every pipeline is built offline: a tiny random transformer (tests/tiny_models.py), a tiny random
text encoder of the family's own class (T5 for Chroma, UMT5 for AuraFlow, GLM for CogView4, Gemma 2
for SANA, Qwen2.5-VL for Qwen-Image), a tiny VAE of the family's class, and the byte-level CLIP
tokenizer of test_classify_flow (the real tokenizers would need a download; the pipelines only call
them). Class conditionings therefore come from each pipeline's own ``encode_prompt``.

The classifier's per-class errors are checked against a plain loop written here from what each
pipeline's ``__call__`` passes its transformer (packing, timestep scale, ids / img_shapes / size
conditions, masks), with each prompt encoded alone and σ from the pipeline's own scheduler calls.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_classify_flow import _byte_tokenizer, _t5, errors_by_key

import bigain
from bigain.backbones.coverage import backbone_for_class, methods_for, refusals
from bigain.classify import DiffusionClassifier
from bigain.classify.engine import draw_noise
from bigain.classify.pipeline import bundle_from_pipeline, prepare_x0
from bigain.models.flow import FlowBundle, sigmas_from_scheduler_config
from conftest import make_tiny_vae
from tiny_models import _make_auraflow, _make_sana, make_tiny_chroma, make_tiny_cogview4, make_tiny_qwen_image

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["chroma", "qwenimage", "auraflow", "cogview4", "sana"]
CLASS = {
    "chroma": "ChromaTransformer2DModel",
    "qwenimage": "QwenImageTransformer2DModel",
    "auraflow": "AuraFlowTransformer2DModel",
    "cogview4": "CogView4Transformer2DModel",
    "sana": "SanaTransformer2DModel",
}
PROMPTS = ["a photo of a cat", "a dog", "a red sports car"]  # different token counts
SIDE = 12  # latent side: a 6 x 6 token grid for every family (packed 2x2 or patch 2)
RUN = {"n_samples": (2, 4), "to_keep": (2, 1), "batch_size": 8}
MAX_LEN = {"chroma": 16, "auraflow": 16, "sana": 16}  # max_sequence_length where the pipeline pads to it


def _glm(vocab: int):
    from transformers import GlmConfig, GlmModel

    torch.manual_seed(12)
    cfg = GlmConfig(
        vocab_size=vocab,
        hidden_size=12,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=6,
        pad_token_id=vocab - 1,
    )
    return GlmModel(cfg).eval()


def _umt5(vocab: int):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(12)
    return UMT5EncoderModel(
        UMT5Config(vocab_size=vocab, d_model=12, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    ).eval()


def _gemma2(vocab: int):
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(12)
    cfg = Gemma2Config(
        vocab_size=vocab,
        hidden_size=12,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=6,
        pad_token_id=vocab - 1,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
    )
    return Gemma2Model(cfg).eval()


def _qwen25vl(vocab: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(12)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=12,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 1]},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=2,
            out_hidden_size=12,
            fullatt_block_indexes=[0],
        ),
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def _dc_vae():
    from diffusers import AutoencoderDC

    torch.manual_seed(0)
    return AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=4,
        encoder_block_types=("ResBlock", "ResBlock"),
        decoder_block_types=("ResBlock", "ResBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()),
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41,
    ).eval()


def _qwen_vae():
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1],
        num_res_blocks=1,
        temperal_downsample=[False],
        latents_mean=[0.1, -0.2, 0.0, 0.3],
        latents_std=[1.5, 0.8, 1.0, 2.0],
    ).eval()


def tiny_pipeline(family: str):
    """The family's diffusers pipeline with tiny random parts (schedulers as the released models
    configure them: Chroma / Qwen-Image dynamic exponential shift, AuraFlow static 1.73, CogView4
    dynamic linear shift, SANA's DPM-Solver with flow sigmas and flow_shift 3)."""
    from diffusers import (
        AuraFlowPipeline,
        ChromaPipeline,
        CogView4Pipeline,
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        SanaPipeline,
    )

    tok, vocab = _byte_tokenizer()
    if family == "chroma":
        return ChromaPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(
                use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15
            ),
            vae=make_tiny_vae(scaling_factor=0.7, shift_factor=0.2),
            text_encoder=_t5(vocab, 24),
            tokenizer=tok,
            transformer=make_tiny_chroma(),
        )
    if family == "qwenimage":
        return QwenImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=0.9,
                max_image_seq_len=8192,
                shift_terminal=0.02,
            ),
            vae=_qwen_vae(),
            text_encoder=_qwen25vl(vocab),
            tokenizer=tok,
            transformer=make_tiny_qwen_image(),
        )
    if family == "auraflow":
        return AuraFlowPipeline(
            tokenizer=tok,
            text_encoder=_umt5(vocab),
            vae=make_tiny_vae(scaling_factor=0.13),
            transformer=_make_auraflow().eval(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=1.73),
        )
    if family == "cogview4":
        tok.padding_side = "left"  # GLM's tokenizer pads on the left
        tok.init_kwargs["padding_side"] = "left"  # and says so in its saved config
        return CogView4Pipeline(
            tokenizer=tok,
            text_encoder=_glm(vocab),
            vae=make_tiny_vae(scaling_factor=0.5),
            transformer=make_tiny_cogview4(),
            scheduler=FlowMatchEulerDiscreteScheduler(
                use_dynamic_shifting=True, time_shift_type="linear", base_shift=0.25, max_shift=0.75
            ),
        )
    return SanaPipeline(
        tokenizer=tok,
        text_encoder=_gemma2(vocab),
        vae=_dc_vae(),
        transformer=_make_sana().eval(),
        scheduler=DPMSolverMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
    )


def make_bundle(family: str, prompts=PROMPTS, **kw) -> tuple[object, FlowBundle]:
    pipe = tiny_pipeline(family)
    bundle = bundle_from_pipeline(
        pipe, prompts, sample_size=SIDE, max_sequence_length=MAX_LEN.get(family), batch_size=2, **kw
    )
    return pipe, bundle


def images(bundle: FlowBundle, n: int, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *bundle.sample_shape, generator=g)


# --------------------------------------------------------------------------------------------
# the plain loop: each pipeline's own call, written out
# --------------------------------------------------------------------------------------------
def encode_alone(pipe, family: str, prompt: str) -> dict:
    """The prompt encoded alone, as the pipeline encodes it for one image."""
    kw = {"max_sequence_length": MAX_LEN[family]} if family in MAX_LEN else {}
    if family == "qwenimage":
        emb, mask = pipe.encode_prompt([prompt], device="cpu", **kw)
        return {"emb": emb, "mask": mask}
    out = pipe.encode_prompt([prompt], do_classifier_free_guidance=False, device="cpu", **kw)
    if family == "chroma":
        return {"emb": out[0], "txt_ids": out[1], "mask": out[2]}
    if family == "sana":
        return {"emb": out[0], "mask": out[1]}
    return {"emb": out[0]}


def pipeline_sigma(pipe, family: str, t: int, h: int, w: int) -> float:
    """σ of timestep t (0-1000 scale) for an h x w latent, as the pipeline's scheduler makes it
    (without Qwen-Image's ``shift_terminal``, which stretches a whole inference schedule to end at
    0.02 and has no meaning for one training timestep; the classifier ignores it)."""
    sched = type(pipe.scheduler).from_config(pipe.scheduler.config, shift_terminal=None)
    if family == "sana":  # DPMSolverMultistepScheduler with use_flow_sigmas: a static flow_shift
        s, shift = t / 1000, sched.config.flow_shift
        return shift * s / (1 + (shift - 1) * s)
    if family in ("chroma", "qwenimage"):
        mod = __import__(f"diffusers.pipelines.{family}.pipeline_{family}", fromlist=["calculate_shift"])
        cfg = sched.config
        mu = mod.calculate_shift(
            (h // 2) * (w // 2), cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )
        sched.set_timesteps(sigmas=[t / 1000], mu=mu)
    elif family == "cogview4":  # the pipeline passes the unshifted timesteps and sigmas t / T
        from diffusers.pipelines.cogview4.pipeline_cogview4 import calculate_shift

        cfg = sched.config
        mu = calculate_shift((h // 2) * (w // 2), cfg.base_image_seq_len, cfg.base_shift, cfg.max_shift)
        sched.set_timesteps(timesteps=[t], sigmas=[t / 1000], mu=mu)
    else:
        sched.set_timesteps(sigmas=[t / 1000])
    return float(sched.sigmas[0])


def plain_velocity(pipe, family: str, x_t: torch.Tensor, t: int, sigma: float, enc: dict) -> torch.Tensor:
    """The transformer's velocity for one (1, C, H, W) latent, called as the pipeline's loop calls it."""
    _, c, h, w = x_t.shape
    model = pipe.transformer
    emb = enc["emb"]
    if family == "chroma":
        from diffusers import ChromaPipeline

        packed = ChromaPipeline._pack_latents(x_t, 1, c, h, w)
        out = model(
            hidden_states=packed,
            timestep=torch.tensor([sigma * 1000]) / 1000,
            encoder_hidden_states=emb,
            txt_ids=enc["txt_ids"],
            img_ids=ChromaPipeline._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32),
            attention_mask=pipe._prepare_attention_mask(1, packed.shape[1], torch.float32, enc["mask"]),
            return_dict=False,
        )[0]
        return ChromaPipeline._unpack_latents(out, h, w, 1)
    if family == "qwenimage":
        from diffusers import QwenImagePipeline

        out = model(
            hidden_states=QwenImagePipeline._pack_latents(x_t, 1, c, h, w),
            timestep=torch.tensor([sigma * 1000]) / 1000,
            guidance=None,
            encoder_hidden_states_mask=enc["mask"],
            encoder_hidden_states=emb,
            img_shapes=[[(1, h // 2, w // 2)]],
            return_dict=False,
        )[0]
        return QwenImagePipeline._unpack_latents(out, h, w, 1)[:, :, 0]
    if family == "auraflow":
        return model(
            x_t, encoder_hidden_states=emb, timestep=torch.tensor([sigma * 1000 / 1000]), return_dict=False
        )[0]
    if family == "cogview4":
        size = torch.tensor([[h * pipe.vae_scale_factor, w * pipe.vae_scale_factor]], dtype=torch.float32)
        return model(
            hidden_states=x_t,
            encoder_hidden_states=emb,
            timestep=torch.tensor([float(t)]),
            original_size=size,
            target_size=size,
            crop_coords=torch.zeros(1, 2),
            return_dict=False,
        )[0]
    timestep = torch.tensor([sigma * 1000]) * model.config.timestep_scale
    return model(
        x_t,
        encoder_hidden_states=emb,
        encoder_attention_mask=enc["mask"],
        timestep=timestep,
        return_dict=False,
    )[0]


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_bundle_from_the_pipeline(family):
    pipe, bundle = make_bundle(family, class_names=["cat", "dog", "car"])
    assert isinstance(bundle, FlowBundle) and bundle.kind == family and bundle.call.kind == family
    assert bundle.num_classes == 3 and bundle.class_names == ["cat", "dog", "car"]
    assert bundle.sample_shape == (4, SIDE, SIDE)
    # each class's text is what encode_prompt gives for its prompt alone, on its valid tokens
    emb, mask = bundle.extras["prompt_embeddings"], bundle.extras["text_mask"]
    for k, prompt in enumerate(PROMPTS):
        alone = encode_alone(pipe, family, prompt)["emb"][0]
        if mask is None:
            torch.testing.assert_close(emb[k], alone, atol=1e-5, rtol=1e-4)
        else:  # right-padded: the first tokens are the prompt's
            n = alone.shape[0]
            torch.testing.assert_close(emb[k, :n], alone, atol=1e-5, rtol=1e-4)
            assert not bool(mask[k, n:].any())
    if family in ("qwenimage",):  # the prompts encode to different lengths: padded and masked
        assert mask is not None and mask.shape == emb.shape[:2]
        assert bundle.conditioning(torch.tensor([1]))["encoder_hidden_states_mask"].shape == (1, emb.shape[1])
    if family == "auraflow" or family == "cogview4":
        assert mask is None  # the pipeline passes no mask
    # the schedule: the scheduler's own shift rule for this latent size
    t = 400
    assert float(bundle.sigmas[t]) == pytest.approx(pipeline_sigma(pipe, family, t, SIDE, SIDE), abs=1e-6)
    # images → the family's VAE latents → classification
    size = bundle.extras["image_size"]
    assert size == SIDE * 2  # every tiny VAE here downsamples by 2
    g = torch.Generator().manual_seed(0)
    x0 = prepare_x0(bundle, [torch.rand(3, size, size, generator=g) * 2 - 1 for _ in range(2)])
    assert x0.shape == (2, *bundle.sample_shape) and torch.isfinite(x0).all()
    for r in DiffusionClassifier(bundle, **RUN).classify_batch(x0, [1, 2]):
        assert r.error is None and r.prediction in range(3)


@pytest.mark.parametrize("family", FAMILIES)
def test_errors_equal_a_plain_pipeline_loop(family):
    pipe, bundle = make_bundle(family)
    seed, key = 3, 4242
    x0 = images(bundle, 1)[0]
    result = DiffusionClassifier(bundle, seed=seed, **RUN).classify(x0, key)
    errs = errors_by_key(result)
    noise = draw_noise(tuple(x0.shape), 4, seed, key)
    st = result.stages[0]
    checked = 0
    for c in range(3):
        enc = encode_alone(pipe, family, PROMPTS[c])
        for s, t in zip(st.slots, st.timesteps):
            sigma = pipeline_sigma(pipe, family, t, SIDE, SIDE)
            eps = noise[s : s + 1]
            x_t = (1 - sigma) * x0[None] + sigma * eps
            with torch.no_grad():
                v_hat = plain_velocity(pipe, family, x_t, t, sigma, enc)
            expected = float(((v_hat - (eps - x0[None])) ** 2).mean())
            assert errs[(c, s)] == pytest.approx(expected, rel=1e-4, abs=1e-6), (family, c, t)
            checked += 1
    assert checked == 6


@pytest.mark.parametrize("family", FAMILIES)
def test_predict_on_a_non_square_latent(family):
    pipe, bundle = make_bundle(family)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 4, 8, 12, generator=g)  # a 4 x 6 token grid
    t, label = 600, 2
    sigma = float(bundle.sigmas[t])
    enc = encode_alone(pipe, family, PROMPTS[label])
    with torch.no_grad():
        got = bundle.predict(x, torch.tensor([t]), torch.tensor([label]))
        expected = plain_velocity(pipe, family, x, t, sigma, enc)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_compression_runs_through_the_classifier(family):
    """Every method the family's adapter takes changes the errors and runs to a prediction; the
    ones it refuses are refused; removal restores the errors exactly. Prompts of one token count
    here, so no text mask reaches the adapters (see the Qwen-Image mask test below)."""
    prompts = ["a cat", "a dog", "a cow"]
    _, bundle = make_bundle(family, prompts=prompts)
    assert bundle.extras["text_mask"] is None or family in ("chroma", "sana")
    backbone = backbone_for_class(CLASS[family])
    x = images(bundle, 2)
    keys = [1, 2]
    base = [errors_by_key(r) for r in DiffusionClassifier(bundle, **RUN).classify_batch(x, keys)]
    taken = methods_for(backbone)
    assert "tome" in taken
    for method in taken:
        with bigain.compressed(bundle, method):
            results = DiffusionClassifier(bundle, **RUN).classify_batch(x, keys)
        for r, b in zip(results, base):
            assert r.error is None and r.prediction in range(3), (method, r.error)
            e = errors_by_key(r)
            assert all(math.isfinite(v) for v in e.values()), method
            common = [k for k in e if k in b]
            assert max(abs(e[k] - b[k]) for k in common) > 1e-6, f"{method} changed nothing on {family}"
    for method, why in refusals(backbone).items():
        with pytest.raises(ValueError, match="does not apply"):
            with bigain.compressed(bundle, method):
                pass
        assert why
    after = [errors_by_key(r) for r in DiffusionClassifier(bundle, **RUN).classify_batch(x, keys)]
    assert after == base


def test_qwen_image_mask_keeps_token_methods_and_refuses_kv():
    """Prompts of different lengths need Qwen-Image's text mask; its adapter refuses KV
    downsampling with a mask (the processor sizes the mask from the image queries)."""
    _, bundle = make_bundle("qwenimage")
    assert bundle.extras["text_mask"] is not None
    x = images(bundle, 1)
    with bigain.compressed(bundle, "tome"):
        (r,) = DiffusionClassifier(bundle, **RUN).classify_batch(x, [5])
    assert r.error is None
    with pytest.raises(Exception, match="encoder_hidden_states_mask"):
        with bigain.compressed(bundle, "todo"):
            (r,) = DiffusionClassifier(bundle, **RUN).classify_batch(x, [5])
            if r.error is not None:
                raise RuntimeError(r.error)


def test_cogview4_encodes_the_class_list_in_one_call():
    """CogView4 pads a batch of prompts to its longest with pad tokens and no mask: every class
    comes from one encode_prompt call on the whole list, whatever batch_size says."""
    long = "a very long description of a small grey cat sitting on a red chair"
    prompts = ["a cat", long, "a dog"]
    pipe, bundle = make_bundle("cogview4", prompts=prompts)
    together = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device="cpu")[0]
    torch.testing.assert_close(bundle.extras["prompt_embeddings"], together, atol=1e-5, rtol=1e-4)
    assert together.shape[1] % 16 == 0 and together.shape[1] > 16
    assert bundle.extras["text_mask"] is None


def test_schedules_of_the_new_families():
    from diffusers import DPMSolverMultistepScheduler

    # SANA: DPM-Solver's flow sigmas are the static shift of t / T
    sched = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    sched.set_timesteps(999)  # the grid 999/1000 ... 1/1000
    ours = sigmas_from_scheduler_config(dict(sched.config))
    torch.testing.assert_close(
        ours[1:].flip(0), torch.as_tensor(sched.sigmas[:-1]).double(), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match="flow"):
        sigmas_from_scheduler_config({"prediction_type": "epsilon"})
    # CogView4's μ rule differs from Flux's
    cfg = {"use_dynamic_shifting": True, "time_shift_type": "linear", "base_shift": 0.25, "max_shift": 0.75}
    a = sigmas_from_scheduler_config(cfg, image_seq_len=1024, mu_rule="cogview4")
    b = sigmas_from_scheduler_config(cfg, image_seq_len=1024, mu_rule="flux")
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="mu_rule"):
        sigmas_from_scheduler_config(cfg, image_seq_len=1024, mu_rule="other")


def test_vae_latents_of_qwen_image_and_sana():
    """Qwen-Image's video VAE takes the image as one frame and normalises per channel; SANA's
    DC-AE gives its latent times scaling_factor."""
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 2 * SIDE, 2 * SIDE, generator=g) * 2 - 1
    pipe, bundle = make_bundle("qwenimage")
    x0 = prepare_x0(bundle, [img])
    with torch.no_grad():
        mean = pipe.vae.encode(img[None, :, None]).latent_dist.mean
    cfg = pipe.vae.config
    expected = (mean - torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)) / torch.tensor(
        cfg.latents_std
    ).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(x0, expected[:, :, 0], atol=1e-5, rtol=1e-5)
    pipe, bundle = make_bundle("sana")
    x0 = prepare_x0(bundle, [img])
    with torch.no_grad():
        expected = pipe.vae.encode(img[None]).latent * 0.41
    torch.testing.assert_close(x0, expected, atol=1e-5, rtol=1e-5)


def test_make_flow_bundle_checks_the_family_inputs():
    from bigain.models.flow import make_flow_bundle

    emb = torch.randn(2, 5, 12)
    with pytest.raises(ValueError, match="pooled"):
        make_flow_bundle(_make_auraflow(), emb, torch.randn(2, 8))
    with pytest.raises(ValueError, match="no text mask"):
        make_flow_bundle(_make_auraflow(), emb, text_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="text_mask"):
        make_flow_bundle(_make_sana(), emb, text_mask=torch.ones(2, 4))
    b = make_flow_bundle(_make_sana(), emb, text_mask=torch.ones(2, 5), sample_shape=(4, 8, 8))
    assert set(b.conditioning(torch.tensor([0]))) == {"encoder_hidden_states", "encoder_attention_mask"}


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_pipeline_loads_through_the_cli_loader(tmp_path, family):
    """The CLI's loader (DiffusionPipeline.from_pretrained + bundle_from_pipeline) on a saved folder
    gives the bundle the in-memory pipeline gives (the pipelines' default text lengths and sizes)."""
    import types

    from bigain.classify.cli import load_model_for

    pipe = tiny_pipeline(family)
    pipe.save_pretrained(tmp_path / "pipe")
    data = types.SimpleNamespace(prompts=PROMPTS, class_names=["cat", "dog", "car"])
    loaded = load_model_for(str(tmp_path / "pipe"), data, "cpu")
    direct = bundle_from_pipeline(pipe, PROMPTS, class_names=data.class_names)
    assert isinstance(loaded, FlowBundle) and loaded.kind == family and loaded.class_names == data.class_names
    assert loaded.sample_shape == direct.sample_shape and torch.equal(loaded.sigmas, direct.sigmas)
    for k in range(3):
        a, b = loaded.conditioning(torch.tensor([k])), direct.conditioning(torch.tensor([k]))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
