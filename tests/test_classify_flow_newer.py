"""The diffusion classifier on the flow-matching families added after the first five: Flux 2,
Z-Image, Lumina2, HiDream-I1, Bria, LongCat-Image and Ovis-Image as real diffusers pipelines in
miniature, Qwen-Image 2.1 from precomputed conditionings.

Each pipeline is built offline from a tiny random transformer (tests/tiny_models.py), tiny random
text encoders of the family's own classes (Mistral 3 for Flux 2, Qwen 3 for Z-Image and
Ovis-Image, Gemma 2 for Lumina2, two CLIPs + T5 + Llama for HiDream, T5 for Bria, Qwen2.5-VL for
LongCat-Image), a tiny VAE (Flux 2's own batch-normed one) and the byte-level CLIP tokenizer of
test_classify_flow, given a small chat template where the pipeline formats prompts with one (the
real tokenizers would need a download; the pipelines only call them). Class conditionings
therefore come from each pipeline's own ``encode_prompt``. Long system prompts are shortened on
the pipeline (an attribute or ``encode_prompt`` argument its ``__call__`` uses as well) so that the
short test sequences still hold the class prompt.

Qwen-Image 2.1's pipeline needs a Qwen3-VL processor (tokenizer with its vision tokens, image and
video processors) that cannot be put together offline without its files: its bundle is built with
``make_flow_bundle`` from random per-class conditionings instead, and its call convention is
checked against a loop written from ``QwenImage21Pipeline.__call__``.

The classifier's per-class errors are checked against a plain loop written here from what each
pipeline's ``__call__`` passes its transformer (packing, timestep scale and direction, sign of the
output, ids / masks / extra arguments), with each prompt encoded alone and σ from the pipeline's
own scheduler calls.
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
from bigain.models.flow import FlowBundle, flux2_shift, make_flow_bundle, sigmas_from_scheduler_config
from conftest import make_tiny_vae
from tiny_models import (
    make_tiny_flux2,
    make_tiny_flux_like,
    make_tiny_hidream,
    make_tiny_lumina2,
    make_tiny_qwen_image21,
    make_tiny_z_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = ["flux2", "zimage", "lumina2", "hidream", "bria", "longcat", "ovis"]
CLASS = {
    "flux2": "Flux2Transformer2DModel",
    "zimage": "ZImageTransformer2DModel",
    "lumina2": "Lumina2Transformer2DModel",
    "hidream": "HiDreamImageTransformer2DModel",
    "bria": "BriaTransformer2DModel",
    "longcat": "LongCatImageTransformer2DModel",
    "ovis": "OvisImageTransformer2DModel",
    "qwenimage21": "QwenImage21Transformer2DModel",
}
FLUX_LIKE = {"bria", "longcat", "ovis"}
PROMPTS = ["a photo of a cat", "a dog", "a red sports car"]  # different token counts
SIDE = 12  # latent side: a 6 x 6 token grid (packed 2x2 or patch 2); Flux 2: 12 x 12 tokens of its patchified latent
RUN = {"n_samples": (2, 4), "to_keep": (2, 1), "batch_size": 8}
# max_sequence_length where encode_prompt takes one (LongCat-Image pads to tokenizer_max_length)
MAX_LEN = {"flux2": 40, "zimage": 48, "lumina2": 28, "hidream": 16, "bria": 16, "ovis": 24}
ENCODE_KW = {"lumina2": {"system_prompt": "Draw:"}}
TEMPLATE = (  # a small chat template (the pipelines format prompts through the tokenizer's own)
    "{% for m in messages %}<{{ m['role'] }}>"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{% endif %}"
    "\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _tok(template: bool = False):
    tok, vocab = _byte_tokenizer()
    if template:
        tok.chat_template = TEMPLATE
    return tok, vocab


def _qwen3(vocab: int, hidden: int):
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(hidden)
    cfg = Qwen3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=6,
        pad_token_id=vocab - 1,
    )
    return Qwen3Model(cfg).eval()


def _gemma2(vocab: int, hidden: int):
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(hidden)
    cfg = Gemma2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=6,
        pad_token_id=vocab - 1,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
    )
    return Gemma2Model(cfg).eval()


def _clip_proj(vocab: int, hidden: int, proj: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(hidden + proj)
    cfg = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=proj,
        max_position_embeddings=128,  # HiDream pads its CLIP prompts to max_sequence_length (128)
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
    )
    return CLIPTextModelWithProjection(cfg).eval()


def _llama(vocab: int, hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(hidden + layers)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=6,
        pad_token_id=vocab - 1,
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
    )
    cfg._attn_implementation = "eager"  # the pipeline asks for the attention weights
    return LlamaForCausalLM(cfg).eval()


def _mistral3(vocab: int, hidden: int):
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(hidden)
    cfg = Mistral3Config(
        text_config=dict(
            model_type="mistral",
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=16,
            num_hidden_layers=30,  # Flux2Pipeline reads hidden states 10, 20 and 30
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=4,
            pad_token_id=vocab - 1,
        ),
        vision_config=dict(
            model_type="pixtral",
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            head_dim=8,
        ),
    )
    return Mistral3ForConditionalGeneration(cfg).eval()


def _qwen25vl(vocab: int, hidden: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(hidden)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_scaling={"type": "mrope", "mrope_section": [2, 2, 2]},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=16,
            num_heads=2,
            out_hidden_size=hidden,
            fullatt_block_indexes=[0],
        ),
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def _flux2_vae():
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    ).eval()
    with torch.no_grad():  # running statistics other than the identity
        vae.bn.running_mean.copy_(torch.linspace(-0.3, 0.3, 16))
        vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, 16))
    return vae


def tiny_pipeline(family: str):
    """The family's diffusers pipeline with tiny random parts, schedulers as the released models
    configure them (Flux 2, Z-Image, LongCat-Image, Ovis-Image: dynamic exponential shift; Lumina2
    and Bria: static shift 6 and 3; HiDream-I1 Full: UniPC with flow sigmas and flow_shift 3)."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    if family == "flux2":
        tok, vocab = _tok(template=True)
        pipe = diffusers.Flux2Pipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift=3.0),
            vae=_flux2_vae(),
            text_encoder=_mistral3(vocab, 8),
            tokenizer=tok,  # its chat template stands in for the Pixtral processor's
            transformer=make_tiny_flux2(),
        )
        pipe.system_message = "Draw."  # the released one is ~100 tokens
        return pipe
    if family == "zimage":
        tok, vocab = _tok(template=True)
        return diffusers.ZImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(
                use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, shift=3.0
            ),
            vae=make_tiny_vae(scaling_factor=0.36, shift_factor=0.12),
            text_encoder=_qwen3(vocab, 12),
            tokenizer=tok,
            transformer=make_tiny_z_image(),
        )
    if family == "lumina2":
        tok, vocab = _tok()
        return diffusers.Lumina2Pipeline(
            transformer=make_tiny_lumina2(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=6.0),
            vae=make_tiny_vae(scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=_gemma2(vocab, 24),
            tokenizer=tok,
        )
    if family == "hidream":
        from diffusers import UniPCMultistepScheduler

        tok, vocab = _tok()
        tok4, _ = _tok()
        return diffusers.HiDreamImagePipeline(
            scheduler=UniPCMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
            ),
            vae=make_tiny_vae(scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=_clip_proj(vocab, 8, 4),
            tokenizer=tok,
            text_encoder_2=_clip_proj(vocab, 12, 4),
            tokenizer_2=tok,
            text_encoder_3=_t5(vocab, 12),
            tokenizer_3=tok,
            text_encoder_4=_llama(vocab, 10, 4),
            tokenizer_4=tok4,
            transformer=make_tiny_hidream(),
        )
    if family == "bria":
        tok, vocab = _tok()
        return diffusers.BriaPipeline(
            transformer=make_tiny_flux_like("BriaTransformer2DModel"),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=make_tiny_vae(scaling_factor=0.5),
            text_encoder=_t5(vocab, 24),
            tokenizer=tok,
        )
    if family == "longcat":
        tok, vocab = _tok()
        pipe = diffusers.LongCatImagePipeline(
            scheduler=dynamic,
            vae=make_tiny_vae(scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=_qwen25vl(vocab, 24),
            tokenizer=tok,
            text_processor=None,  # only its prompt rewriting uses it
            transformer=make_tiny_flux_like("LongCatImageTransformer2DModel"),
        )
        pipe.tokenizer_max_length = 16  # 512 in the release: the text length and the image ids' offset
        return pipe
    tok, vocab = _tok(template=True)
    pipe = diffusers.OvisImagePipeline(
        scheduler=dynamic,
        vae=make_tiny_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_qwen3(vocab, 24),
        tokenizer=tok,
        transformer=make_tiny_flux_like("OvisImageTransformer2DModel", out_channels=16),  # its default is 64
    )
    pipe.system_prompt = "Describe: "  # ~130 tokens in the release
    return pipe


def make_bundle(family: str, prompts=PROMPTS, **kw) -> tuple[object, FlowBundle]:
    pipe = tiny_pipeline(family)
    kw.setdefault("encode_kwargs", ENCODE_KW.get(family))
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
    """The prompt encoded alone, as the pipeline's __call__ encodes it for one image."""
    kw = {"max_sequence_length": MAX_LEN[family]} if family in MAX_LEN else {}
    kw.update(ENCODE_KW.get(family) or {})
    if family == "flux2":
        emb, txt_ids = pipe.encode_prompt([prompt], device="cpu", **kw)
        return {"emb": emb, "txt_ids": txt_ids}
    if family == "zimage":
        (emb,), _ = pipe.encode_prompt([prompt], device="cpu", do_classifier_free_guidance=False, **kw)
        return {"emb": emb[None], "list": [emb]}
    if family == "lumina2":
        emb, mask, _, _ = pipe.encode_prompt([prompt], do_classifier_free_guidance=False, device="cpu", **kw)
        return {"emb": emb, "mask": mask}
    if family == "hidream":
        t5, _, llama, _, pooled, _ = pipe.encode_prompt(
            [prompt], device="cpu", do_classifier_free_guidance=False, **kw
        )
        return {"emb": t5, "llama": llama, "pooled": pooled}
    if family == "bria":
        emb, _, txt_ids = pipe.encode_prompt([prompt], device="cpu", do_classifier_free_guidance=False, **kw)
        return {"emb": emb, "txt_ids": txt_ids[0]}
    if family == "longcat":
        emb, txt_ids = pipe.encode_prompt([prompt])
        return {"emb": emb, "txt_ids": txt_ids}
    emb, _, txt_ids, _ = pipe.encode_prompt([prompt], device="cpu", do_classifier_free_guidance=False, **kw)
    return {"emb": emb, "txt_ids": txt_ids}


def pipeline_sigma(pipe, family: str, t: int, h: int, w: int) -> float:
    """σ of timestep t (0-1000 scale) for an h x w latent (Flux 2: its patchified grid), as the
    pipeline's scheduler makes it from the μ its __call__ computes (50 steps for Flux 2)."""
    import importlib

    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    cfg = sched.config
    if family == "hidream":  # UniPC with use_flow_sigmas: a static flow_shift (the pipeline passes no μ)
        s, shift = t / 1000, cfg.flow_shift
        return shift * s / (1 + (shift - 1) * s)
    module = {
        "flux2": "flux2.pipeline_flux2",
        "zimage": "z_image.pipeline_z_image",
        "lumina2": "lumina2.pipeline_lumina2",
        "bria": "bria.pipeline_bria",
        "longcat": "longcat_image.pipeline_longcat_image",
        "ovis": "ovis_image.pipeline_ovis_image",
    }[family]
    mod = importlib.import_module(f"diffusers.pipelines.{module}")
    if family == "flux2":
        mu = mod.compute_empirical_mu(image_seq_len=h * w, num_steps=50)
    elif family == "lumina2":  # its pipeline reads latents.shape[1], the channel count
        mu = mod.calculate_shift(
            4, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )
    else:
        mu = mod.calculate_shift(
            (h // 2) * (w // 2), cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )
    if cfg.use_dynamic_shifting:
        sched.set_timesteps(sigmas=[t / 1000], mu=mu)
    else:
        sched.set_timesteps(sigmas=[t / 1000])
    return float(sched.sigmas[0])


def plain_velocity(pipe, family: str, x_t: torch.Tensor, t: int, sigma: float, enc: dict) -> torch.Tensor:
    """The velocity for one (1, C, H, W) latent, the transformer called as the pipeline's loop
    calls it (and its output negated where the loop negates it)."""
    import diffusers

    _, c, h, w = x_t.shape
    model = pipe.transformer
    emb = enc["emb"]
    step = torch.tensor([sigma * 1000])  # the scheduler's timestep
    if family == "flux2":
        P = diffusers.Flux2Pipeline
        out = model(
            hidden_states=P._pack_latents(x_t),
            timestep=step / 1000,
            guidance=torch.full([1], 4.0),  # ignored: the tiny model has no guidance embedding
            encoder_hidden_states=emb,
            txt_ids=enc["txt_ids"],
            img_ids=P._prepare_latent_ids(x_t),
            return_dict=False,
        )[0]
        return out.transpose(1, 2).reshape(1, c, h, w)
    if family == "zimage":
        (out,) = model([x_t[0].unsqueeze(1)], (1000 - step) / 1000, enc["list"], return_dict=False)[0]
        return -out[:, 0][None]
    if family == "lumina2":
        out = model(
            hidden_states=x_t,
            timestep=1 - step / pipe.scheduler.config.num_train_timesteps,
            encoder_hidden_states=emb,
            encoder_attention_mask=enc["mask"],
            return_dict=False,
        )[0]
        return -out
    if family == "hidream":
        out = model(
            hidden_states=x_t,
            timesteps=step,
            encoder_hidden_states_t5=emb,
            encoder_hidden_states_llama3=enc["llama"],
            pooled_embeds=enc["pooled"],
            return_dict=False,
        )[0]
        return -out
    P = {
        "bria": diffusers.BriaPipeline,
        "longcat": diffusers.LongCatImagePipeline,
        "ovis": diffusers.OvisImagePipeline,
    }[family]
    packed = P._pack_latents(x_t, 1, c, h, w)
    if family == "longcat":
        from diffusers.pipelines.longcat_image.pipeline_longcat_image import prepare_pos_ids

        start = pipe.tokenizer_max_length
        img_ids = prepare_pos_ids(
            modality_id=1, type="image", start=(start, start), height=h // 2, width=w // 2
        )
    elif family == "bria":
        img_ids = P._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32)[0]
    else:
        img_ids = P._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32)
    out = model(
        hidden_states=packed,
        timestep=step if family == "bria" else step / 1000,
        encoder_hidden_states=emb,
        txt_ids=enc["txt_ids"],
        img_ids=img_ids,
        return_dict=False,
    )[0]
    px = (
        pipe.vae_scale_factor // 2 if family == "bria" else pipe.vae_scale_factor
    )  # Bria's counts the packing
    return P._unpack_latents(out, h * px, w * px, pipe.vae_scale_factor)


def _check_class_text(pipe, family: str, bundle: FlowBundle, prompts) -> None:
    """Each class's conditioning is what encode_prompt gives for its prompt alone."""
    emb, mask = bundle.extras["prompt_embeddings"], bundle.extras["text_mask"]
    for k, prompt in enumerate(prompts):
        alone = encode_alone(pipe, family, prompt)
        n = alone["emb"].shape[1]
        torch.testing.assert_close(emb[k, :n], alone["emb"][0], atol=1e-5, rtol=1e-4)
        if mask is not None and n < emb.shape[1]:  # right-padded: the rest is masked out
            assert not bool(mask[k, n:].any())
        cond = bundle.conditioning(torch.tensor([k]))
        if family == "zimage":  # the caption list holds the valid tokens only, as encode_prompt's
            (cap,) = cond["encoder_hidden_states"]
            torch.testing.assert_close(cap, alone["list"][0], atol=1e-5, rtol=1e-4)
        if family == "hidream":
            torch.testing.assert_close(
                cond["encoder_hidden_states_llama3"], alone["llama"], atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(cond["pooled_projections"], alone["pooled"], atol=1e-5, rtol=1e-4)
        if family == "lumina2":
            assert torch.equal(cond["encoder_attention_mask"], alone["mask"])


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_bundle_from_the_pipeline(family):
    pipe, bundle = make_bundle(family, class_names=["cat", "dog", "car"])
    assert isinstance(bundle, FlowBundle) and bundle.kind == family and bundle.call.kind == family
    assert bundle.num_classes == 3 and bundle.class_names == ["cat", "dog", "car"]
    channels = 16 if family == "flux2" else 4  # Flux 2: the 2x2 patches of 4 VAE channels
    assert bundle.sample_shape == (channels, SIDE, SIDE)
    _check_class_text(pipe, family, bundle, PROMPTS)
    if family in ("zimage", "lumina2"):  # Z-Image's captions differ in length; Lumina2 always has its mask
        assert bundle.extras["text_mask"] is not None
    t = 400
    assert float(bundle.sigmas[t]) == pytest.approx(pipeline_sigma(pipe, family, t, SIDE, SIDE), abs=1e-6)
    # images → the family's VAE latents → classification
    size = bundle.extras["image_size"]
    assert size == SIDE * (
        4 if family == "flux2" else 2
    )  # the tiny VAEs downsample by 2 (Flux 2: then 2x2 patches)
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
    x = torch.randn(1, bundle.sample_shape[0], 8, 12, generator=g)  # a 4 x 6 token grid (Flux 2: 8 x 12)
    t, label = 600, 2
    sigma = float(bundle.sigmas[t])
    enc = encode_alone(pipe, family, PROMPTS[label])
    with torch.no_grad():
        got = bundle.predict(x, torch.tensor([t]), torch.tensor([label]))
        expected = plain_velocity(pipe, family, x, t, sigma, enc)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def _compression_round_trip(family: str, bundle: FlowBundle) -> None:
    """Every method the family's adapter takes changes the errors and runs to a prediction; the
    ones it refuses are refused; removal restores the errors exactly."""
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


@pytest.mark.parametrize("family", FAMILIES)
def test_compression_runs_through_the_classifier(family):
    """Class prompts of different token counts: Z-Image's captions differ in length and Lumina2
    passes its text mask; the others pad to max_sequence_length without a mask."""
    _, bundle = make_bundle(family)
    _compression_round_trip(family, bundle)


# --------------------------------------------------------------------------------------------
# Qwen-Image 2.1: precomputed conditionings (its Qwen3-VL processor cannot be built offline)
# --------------------------------------------------------------------------------------------
def qwen21_bundle(mask: bool = True) -> FlowBundle:
    """Random per-class prompt embeddings (12 channels, 7 tokens; with `mask`, class 1 keeps 5) for the
    tiny Qwen-Image 2.1 transformer, with the released scheduler's dynamic shift."""
    g = torch.Generator().manual_seed(21)
    emb = torch.randn(3, 7, 12, generator=g)
    text_mask = None
    if mask:
        text_mask = torch.ones(3, 7, dtype=torch.long)
        text_mask[1, 5:] = 0
        emb[1, 5:] = 0  # the pipeline pads shorter prompts with zeros
    return make_flow_bundle(
        make_tiny_qwen_image21(),
        emb,
        text_mask=text_mask,
        scheduler_config={
            "use_dynamic_shifting": True,
            "base_shift": 0.5,
            "max_shift": 0.9,
            "max_image_seq_len": 8192,
        },
        sample_shape=(8, SIDE, SIDE),
        class_names=["cat", "dog", "car"],
    )


def qwen21_plain_velocity(bundle: FlowBundle, x_t: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    """QwenImage21Pipeline.__call__'s transformer call for one (1, 8, H, W) latent, text-to-image."""
    from diffusers import QwenImage21Pipeline

    _, c, h, w = x_t.shape
    emb = bundle.extras["prompt_embeddings"][k : k + 1]
    mask = bundle.extras["text_mask"]
    mask = None if mask is None else mask[k : k + 1]
    latents = QwenImage21Pipeline._pack_latents(x_t, 1, c, h, w)
    image_pad_mask = torch.zeros(1, emb.shape[1], dtype=torch.bool)  # no condition image
    img_mask = torch.cat([image_pad_mask, image_pad_mask.new_ones(1, latents.shape[1] // 4)], dim=1)
    out = bundle.denoiser(
        hidden_states=latents,
        timestep=torch.tensor([sigma * 1000]) / 1000,
        encoder_hidden_states=emb,
        encoder_hidden_states_mask=mask,
        img_shapes=[[(1, h, w)]],
        img_mask=img_mask,
        return_dict=False,
    )[0][:, -latents.shape[1] :]
    return out.transpose(1, 2).reshape(1, c, h, w)


def test_qwen_image21_errors_equal_a_plain_pipeline_loop():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.qwenimage21.pipeline_qwenimage21 import calculate_shift

    bundle = qwen21_bundle()
    assert bundle.kind == "qwenimage21"
    sched = FlowMatchEulerDiscreteScheduler.from_config(bundle.extras["schedule"]["scheduler_config"])
    cfg = sched.config
    mu = calculate_shift(
        SIDE * SIDE, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
    )
    x0 = images(bundle, 1)[0]
    seed, key = 3, 77
    result = DiffusionClassifier(bundle, seed=seed, **RUN).classify(x0, key)
    errs = errors_by_key(result)
    noise = draw_noise(tuple(x0.shape), 4, seed, key)
    st = result.stages[0]
    for c in range(3):
        for s, t in zip(st.slots, st.timesteps):
            sched.set_timesteps(sigmas=[t / 1000], mu=mu)
            sigma = float(sched.sigmas[0])
            eps = noise[s : s + 1]
            x_t = (1 - sigma) * x0[None] + sigma * eps
            with torch.no_grad():
                v_hat = qwen21_plain_velocity(bundle, x_t, sigma, c)
            assert errs[(c, s)] == pytest.approx(
                float(((v_hat - (eps - x0[None])) ** 2).mean()), rel=1e-4, abs=1e-6
            )
    # a non-square latent
    x = torch.randn(1, 8, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = bundle.predict(x, torch.tensor([600]), torch.tensor([1]))
        expected = qwen21_plain_velocity(bundle, x, float(bundle.sigmas[600]), 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_qwen_image21_compression_runs_through_the_classifier():
    """Without a text mask: the Qwen-Image 2.1 adapter takes its methods; with one see below."""
    _compression_round_trip("qwenimage21", qwen21_bundle(mask=False))


def test_qwen_image21_with_a_text_mask_runs_merging():
    bundle = qwen21_bundle(mask=True)
    x = images(bundle, 1)
    with bigain.compressed(bundle, "tome"):
        (r,) = DiffusionClassifier(bundle, **RUN).classify_batch(x, [5])
    assert r.error is None


# --------------------------------------------------------------------------------------------
# details
# --------------------------------------------------------------------------------------------
def test_flux2_vae_latents_are_patchified_and_batch_normed():
    g = torch.Generator().manual_seed(1)
    pipe, bundle = make_bundle("flux2")
    img = torch.rand(3, 4 * SIDE, 4 * SIDE, generator=g) * 2 - 1
    x0 = prepare_x0(bundle, [img])
    with torch.no_grad():  # Flux2Pipeline._encode_vae_image (argmax = the mean)
        z = pipe._patchify_latents(pipe.vae.encode(img[None]).latent_dist.mode())
        bn = pipe.vae.bn
        expected = (z - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1) + 1e-4
        )
    torch.testing.assert_close(x0, expected, atol=1e-5, rtol=1e-5)


def test_schedules_of_the_newer_families():
    from diffusers import UniPCMultistepScheduler
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    for n in (36, 1024, 4096, 6000):  # both branches of Flux 2's empirical μ
        assert flux2_shift(n) == pytest.approx(compute_empirical_mu(n, 50), rel=1e-12)
    # HiDream-I1 Full: UniPC's flow sigmas are the static shift of t / T
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    sched.set_timesteps(999)  # its grid: shift(1.0), shift(0.999), ..., shift(0.002), then 0
    ours = sigmas_from_scheduler_config(dict(sched.config))
    torch.testing.assert_close(
        ours[2:].flip(0), torch.as_tensor(sched.sigmas[1:-1]).double(), atol=1e-6, rtol=0
    )
    # a dynamically shifted Lumina2 takes μ from the channel count, as its pipeline does; HiDream from max_seq
    cfg = {"use_dynamic_shifting": True}
    lumina = make_flow_bundle(
        make_tiny_lumina2(),
        torch.randn(2, 5, 24),
        text_mask=torch.ones(2, 5),
        scheduler_config=cfg,
        sample_shape=(4, 12, 12),
    )
    torch.testing.assert_close(lumina.sigmas, sigmas_from_scheduler_config(cfg, image_seq_len=4))
    hidream = make_flow_bundle(
        make_tiny_hidream(),
        torch.randn(2, 5, 12),
        torch.randn(2, 8),
        stacked_embeds=torch.randn(4, 2, 4, 10),
        scheduler_config=cfg,
        sample_shape=(4, 12, 12),
    )
    torch.testing.assert_close(hidream.sigmas, sigmas_from_scheduler_config(cfg, image_seq_len=64))


def test_bundle_inputs_are_checked():
    with pytest.raises(ValueError, match="stacked_embeds"):
        make_flow_bundle(
            make_tiny_hidream(), torch.randn(2, 5, 12), torch.randn(2, 8), sample_shape=(4, 12, 12)
        )
    with pytest.raises(ValueError, match="stacked"):
        make_flow_bundle(make_tiny_lumina2(), torch.randn(2, 5, 24), stacked_embeds=torch.randn(1, 2, 5, 3))
    with pytest.raises(ValueError, match="channels per token"):
        make_flow_bundle(make_tiny_flux2(), torch.randn(2, 5, 24), sample_shape=(4, 12, 12))
    pipe = tiny_pipeline("longcat")  # pads every prompt to its tokenizer_max_length
    with pytest.raises(ValueError, match="max_sequence_length"):
        bundle_from_pipeline(pipe, PROMPTS, max_sequence_length=8, sample_size=SIDE)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "longcat"])
def test_saved_pipeline_loads_through_the_cli_loader(tmp_path, family):
    """The CLI's loader (DiffusionPipeline.from_pretrained + bundle_from_pipeline) on a saved folder
    gives the bundle the in-memory pipeline gives (the pipelines' default text lengths and sizes).
    Not LongCat-Image: the tiny pipeline has no text_processor (only prompt rewriting uses it), and
    a pipeline folder without one does not load."""
    import types

    from bigain.classify.cli import load_model_for

    pipe = tiny_pipeline(family)
    pipe.save_pretrained(tmp_path / "pipe")
    data = types.SimpleNamespace(prompts=PROMPTS, class_names=["cat", "dog", "car"])
    loaded = load_model_for(str(tmp_path / "pipe"), data, "cpu")
    direct = bundle_from_pipeline(pipe, PROMPTS, class_names=data.class_names)
    assert isinstance(loaded, FlowBundle) and loaded.kind == family
    assert loaded.sample_shape == direct.sample_shape and torch.equal(loaded.sigmas, direct.sigmas)
