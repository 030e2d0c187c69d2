"""Bundles for diffusers pipelines (SD-style text-conditional, DiT class-conditional, flow-matching
SD3 / Flux / Chroma / Qwen-Image / AuraFlow / CogView4 / SANA / Flux 2 / Z-Image / Lumina2 /
HiDream-I1 / Qwen-Image 2.1 / Bria / LongCat-Image / Ovis-Image), and the
image → x0 preparation the classifier needs (torchvision's ``Resize`` + ``CenterCrop`` arithmetic)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..models.bundle import DiffusionBundle

__all__ = [
    "PROMPT_ENCODINGS",
    "PromptEncoding",
    "attach_vae",
    "bundle_from_pipeline",
    "pixels_to_x0",
    "prepare_x0",
    "preprocess_image",
    "resize_crop_geometry",
    "to_pixels",
]


def _vae_encoder(vae: torch.nn.Module):
    """pixels (B, 3, H, W) in [-1, 1] → the latent the pipeline's denoiser takes (float32).

    - ``AutoencoderKL``: ``(latent_dist.mean - shift_factor) · scaling_factor`` (``shift_factor``
      0 where the config has none: SD, AuraFlow, CogView4);
    - ``AutoencoderKLQwenImage`` (a video VAE): the image as one frame, then
      ``(latent_dist.mean - latents_mean) / latents_std`` per channel, as QwenImage's img2img
      pipeline normalises, back to (B, C, h, w);
    - ``AutoencoderDC`` (SANA): ``latent · scaling_factor`` (the encoder is deterministic);
    - ``AutoencoderKLFlux2``: the mean's 2x2 patches as channels (Flux2Pipeline's
      ``_patchify_latents``), then its batch norm's running statistics
      ``(x - running_mean) / sqrt(running_var + batch_norm_eps)``, so the latent is the
      (4C, h/2, w/2) grid whose cells are the transformer's tokens.
    """
    cfg = vae.config
    scaling = float(getattr(cfg, "scaling_factor", None) or 1.0)
    shift = float(getattr(cfg, "shift_factor", None) or 0.0)  # SD3 / Flux VAEs; SD's has none
    names = {c.__name__ for c in type(vae).__mro__}
    video = getattr(cfg, "latents_mean", None) is not None and getattr(cfg, "latents_std", None) is not None

    @torch.inference_mode()
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        p = next(vae.parameters())
        x = pixels.to(device=p.device, dtype=p.dtype)
        if "AutoencoderDC" in names:
            return vae.encode(x).latent.float() * scaling
        if "AutoencoderKLFlux2" in names:
            z = vae.encode(x).latent_dist.mean.float()
            B, C, h, w = z.shape
            z = (
                z.reshape(B, C, h // 2, 2, w // 2, 2)
                .permute(0, 1, 3, 5, 2, 4)
                .reshape(B, C * 4, h // 2, w // 2)
            )
            mean = vae.bn.running_mean.float().view(1, -1, 1, 1)
            std = torch.sqrt(vae.bn.running_var.float().view(1, -1, 1, 1) + float(cfg.batch_norm_eps))
            return (z - mean) / std
        if video:
            latents = vae.encode(x[:, :, None]).latent_dist.mean.float()  # (B, C, 1, h, w)
            view = (1, -1, 1, 1, 1)
            mean = torch.tensor(cfg.latents_mean, device=latents.device).view(view)
            std = torch.tensor(cfg.latents_std, device=latents.device).view(view)
            return ((latents - mean) / std)[:, :, 0]
        latents = vae.encode(x).latent_dist.mean
        return (latents.float() - shift) * scaling

    return encode


def _vae_scale(vae: torch.nn.Module) -> int:
    cfg = vae.config
    if getattr(cfg, "encoder_block_out_channels", None) is not None:  # AutoencoderDC
        return 2 ** (len(cfg.encoder_block_out_channels) - 1)
    if getattr(cfg, "batch_norm_eps", None) is not None and hasattr(
        vae, "bn"
    ):  # AutoencoderKLFlux2: patchified
        return 2 ** (len(cfg.block_out_channels) - 1) * int(cfg.patch_size[0])
    if getattr(cfg, "temperal_downsample", None) is not None:  # AutoencoderKLQwenImage
        return 2 ** len(cfg.temperal_downsample)
    return 2 ** (len(getattr(cfg, "block_out_channels", [0])) - 1)


def attach_vae(bundle: DiffusionBundle, vae: torch.nn.Module | None = None) -> DiffusionBundle:
    """Give a latent bundle an ``encode`` ((VAE latent_dist.mean - shift_factor) × scaling_factor, the
    pipelines' own latent normalisation; ``shift_factor`` is 0 for SD's VAE) and ``image_size``.

    With ``vae=None`` the VAE is loaded from ``bundle.extras["vae_path"]`` (set by
    ``bigain.models.load`` for pipeline folders). Pixel-space bundles are returned unchanged.
    """
    if "encode" in bundle.extras:
        return bundle
    if vae is None:
        path = bundle.extras.get("vae_path")
        if path is None:
            return bundle
        from diffusers import AutoencoderKL

        device = next(bundle.denoiser.parameters()).device
        vae = AutoencoderKL.from_pretrained(path).to(device).eval()
    bundle.extras["vae"] = vae
    bundle.extras["encode"] = _vae_encoder(vae)
    bundle.extras["image_size"] = bundle.sample_shape[-1] * _vae_scale(vae)
    return bundle


@torch.inference_mode()
def _encode_prompts(pipe: Any, prompts: Sequence[str], device: torch.device, batch_size: int) -> torch.Tensor:
    tok, enc = pipe.tokenizer, pipe.text_encoder
    max_len = getattr(tok, "model_max_length", 77)
    use_mask = bool(getattr(getattr(enc, "config", None), "use_attention_mask", False))
    chunks = []
    for lo in range(0, len(prompts), batch_size):
        batch = tok(
            list(prompts[lo : lo + batch_size]),
            padding="max_length",
            max_length=max_len,
            truncation=True,
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device) if use_mask and "attention_mask" in batch else None
        chunks.append(enc(ids, attention_mask=mask)[0])
    return torch.cat(chunks)


def _flow_family(denoiser: Any) -> str | None:
    from ..models.flow import flow_call

    call = flow_call(denoiser)
    return None if call is None else call.kind


@dataclass(frozen=True)
class PromptEncoding:
    """How a flow pipeline's ``encode_prompt`` is called and where its outputs are.

    ``kwargs``: passed besides ``prompt``, ``device``, ``num_images_per_prompt=1`` (and
    ``max_sequence_length`` when given); ``tokens`` / ``pooled`` / ``mask``: positions in the tuple
    it returns (None = absent, or not passed to the denoiser); ``pad``: the side on which the
    tokens of shorter prompts are padded when batches of prompts come back at different lengths;
    ``one_call``: all prompts in one call (see CogView4 below).
    """

    kwargs: dict[str, Any]
    tokens: int = 0
    pooled: int | None = None
    mask: int | None = None
    pad: str = "right"
    one_call: bool = False
    stacked: int | None = None  # a per-prompt stack (N, K, L, D), prompt on dim 1 (HiDream's Llama layers)
    keep_mask: bool = False  # pass the mask even when it keeps every token (Lumina2's transformer needs one)


# Each pipeline's encode_prompt, without classifier-free guidance (the classifier compares
# conditional predictions). AuraFlow's mask is not listed: its pipeline multiplies it into the
# embeddings and passes none to the transformer. CogView4 pads a batch of prompts to its longest
# (then to a multiple of 16) with pad tokens on the left and passes no mask, so a prompt's
# embedding depends on the prompts encoded with it: every prompt goes in one call, which gives each
# class what the pipeline gives for the whole class list (the prompt alone when all prompts round to
# the same multiple of 16 tokens).
PROMPT_ENCODINGS: dict[str, PromptEncoding] = {
    "sd3": PromptEncoding(
        {"prompt_2": None, "prompt_3": None, "do_classifier_free_guidance": False}, pooled=2
    ),
    "flux": PromptEncoding({"prompt_2": None}, pooled=1),
    "chroma": PromptEncoding({"do_classifier_free_guidance": False}, mask=2),
    "qwenimage": PromptEncoding({}, mask=1),
    "auraflow": PromptEncoding({"do_classifier_free_guidance": False}),
    "cogview4": PromptEncoding({"do_classifier_free_guidance": False}, pad="left", one_call=True),
    "sana": PromptEncoding({"do_classifier_free_guidance": False}, mask=1),
    # Flux 2: Mistral 3 hidden states of ``text_encoder_out_layers`` side by side, padded to
    # max_sequence_length and passed without a mask (the pad tokens are attended, as in __call__).
    "flux2": PromptEncoding({}),
    # Z-Image: a list of each prompt's valid tokens (the padding is cut off, no mask).
    "zimage": PromptEncoding({"do_classifier_free_guidance": False}),
    "lumina2": PromptEncoding({"do_classifier_free_guidance": False}, mask=1, keep_mask=True),
    # HiDream: T5 tokens, the Llama layers' stack and the two CLIP projections side by side, all
    # padded to max_sequence_length without a mask.
    "hidream": PromptEncoding({"do_classifier_free_guidance": False}, pooled=4, stacked=2),
    "qwenimage21": PromptEncoding({}, mask=1),
    # Bria: each prompt encoded alone and zero-padded to max_sequence_length, no mask.
    "bria": PromptEncoding({"do_classifier_free_guidance": False}),
    # LongCat-Image: padded to the pipeline's tokenizer_max_length (its encode_prompt takes neither
    # device nor max_sequence_length), no mask.
    "longcat": PromptEncoding({}),
    # Ovis-Image: the padded positions are zeroed in the embeddings, no mask.
    "ovis": PromptEncoding({"do_classifier_free_guidance": False}),
}


def _pad_to(x: torch.Tensor, length: int, side: str) -> torch.Tensor:
    """Zero-pad dim 1 of ``x`` to ``length`` on ``side``."""
    extra = length - x.shape[1]
    if extra <= 0:
        return x
    pad = x.new_zeros(x.shape[0], extra, *x.shape[2:])
    return torch.cat([x, pad] if side == "right" else [pad, x], dim=1)


@torch.inference_mode()
def _encode_flow_prompts(
    pipe: Any,
    family: str,
    prompts: Sequence[str],
    device: torch.device,
    batch_size: int,
    max_len: int | None,
    encode_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(K, L, D) token embeddings, (K, P) pooled embeddings (or None) and a (K, L) text mask (or
        None: no padding to mask) and the (N, K, L', D') stack where the family has one (else None),
    through the pipeline's own ``encode_prompt`` (every text encoder it has), by the family's
    :data:`PROMPT_ENCODINGS` row. A list of per-prompt tokens (Z-Image) is right-padded into a
    tensor with its mask. Batches that come back at different lengths
    are zero-padded to the longest, with the padding masked out."""
    how = PROMPT_ENCODINGS[family]
    extra = {**how.kwargs, **(encode_kwargs or {})}
    # the common keywords, where this encode_prompt takes them (Z-Image's has no
    # num_images_per_prompt, LongCat-Image's no device and no max_sequence_length)
    params = inspect.signature(pipe.encode_prompt).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    takes = {"device", "num_images_per_prompt", "max_sequence_length"} if open_ended else set(params)
    if max_len is not None:
        if "max_sequence_length" not in takes:
            raise ValueError(
                f"{family}: encode_prompt takes no max_sequence_length (the pipeline pads every prompt "
                "to a length of its own, e.g. LongCat-Image's tokenizer_max_length)"
            )
        extra["max_sequence_length"] = int(max_len)
    extra.update({k: v for k, v in (("device", device), ("num_images_per_prompt", 1)) if k in takes})
    step = len(prompts) if how.one_call else batch_size
    tokens, pooled, stacked, masks = [], [], [], []
    # the dtype of the pipeline's own mask: an integer one is kept, a float one follows the model
    mask_dtype = None
    listed = False  # encode_prompt gave a list of each prompt's valid tokens (Z-Image)
    for lo in range(0, len(prompts), step):
        chunk = list(prompts[lo : lo + step])
        out = pipe.encode_prompt(prompt=chunk, **extra)
        tok = out[how.tokens]
        mask = out[how.mask] if how.mask is not None else None
        if isinstance(tok, (list, tuple)):
            listed = True
            n = max(t.shape[0] for t in tok)
            mask = torch.stack([(torch.arange(n) < t.shape[0]).float() for t in tok])
            tok = torch.stack([_pad_to(t[None], n, "right")[0] for t in tok])
        tokens.append(tok)
        if how.pooled is not None:
            pooled.append(out[how.pooled])
        if how.stacked is not None:
            stacked.append(out[how.stacked])
        if mask is not None and mask_dtype is None:
            mask_dtype = mask.dtype
        masks.append(
            torch.ones(tok.shape[:2], device=tok.device) if mask is None else mask.to(tok.device).float()
        )
    length = max(t.shape[1] for t in tokens)
    emb = torch.cat([_pad_to(t, length, how.pad) for t in tokens])
    mask = torch.cat([_pad_to(m, length, how.pad) for m in masks])
    if bool(mask.all()) and not how.keep_mask:
        mask = None  # as QwenImagePipeline drops an all-ones mask
    elif how.mask is None and not listed:
        raise ValueError(
            f"{family}: prompt batches came back at different lengths and the pipeline passes no text "
            "mask; encode the prompts in one batch (a larger batch_size)"
        )
    if mask is not None and mask_dtype is not None and not mask_dtype.is_floating_point:
        mask = mask.to(mask_dtype)
    if stacked and len({s.shape[2] for s in stacked}) > 1:
        raise ValueError(f"{family}: prompt batches came back at different lengths; use a larger batch_size")
    return (
        emb,
        (torch.cat(pooled) if pooled else None),
        mask,
        (torch.cat(stacked, dim=1) if stacked else None),
    )


def _flow_bundle_from_pipeline(
    pipe: Any,
    family: str,
    prompts: Sequence[str],
    class_names: Sequence[str] | None,
    name: str | None,
    batch_size: int,
    shift: float | bool | None,
    guidance: float,
    max_sequence_length: int | None,
    sample_size: int | None,
    encode_kwargs: dict[str, Any] | None = None,
) -> DiffusionBundle:
    from ..models.flow import FLOW_CALLS, make_flow_bundle

    denoiser = pipe.transformer
    param = next(denoiser.parameters())
    emb, pooled, mask, stacked = _encode_flow_prompts(
        pipe, family, prompts, param.device, batch_size, max_sequence_length, encode_kwargs
    )
    cfg = denoiser.config
    vae = getattr(pipe, "vae", None)
    pixel_scale = _vae_scale(vae) if vae is not None else int(getattr(pipe, "vae_scale_factor", 8) or 8)
    size = sample_size
    if not size:
        # the pipeline's default image (default_sample_size · vae_scale_factor pixels, else 1024)
        # in cells of the latent the classifier works on
        default = getattr(pipe, "default_sample_size", None)
        pixels = (
            default * int(getattr(pipe, "vae_scale_factor", pixel_scale) or pixel_scale) if default else 1024
        )
        size = max(1, pixels // pixel_scale)
    channels = int(cfg.in_channels) // 4 if FLOW_CALLS[family].packed else int(cfg.in_channels)
    sample_shape = (channels, int(size), int(size))
    sched = getattr(pipe, "scheduler", None)
    return make_flow_bundle(
        denoiser,
        emb.to(param.dtype),
        None if pooled is None else pooled.to(param.dtype),
        text_mask=mask if mask is None or not mask.is_floating_point() else mask.to(param.dtype),
        stacked_embeds=None if stacked is None else stacked.to(param.dtype),
        scheduler_config=dict(getattr(sched, "config", {}) or {}),
        shift=shift,
        sample_shape=sample_shape,
        guidance=guidance,
        pixel_scale=pixel_scale,
        class_names=list(class_names) if class_names is not None else list(prompts),
        name=name or type(pipe).__name__,
        extras={"prompts": list(prompts)},
    )


def bundle_from_pipeline(
    pipe: Any,
    prompts: Sequence[str] | None = None,
    *,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    batch_size: int = 32,
    shift: float | bool | None = None,
    guidance: float = 1.0,
    max_sequence_length: int | None = None,
    sample_size: int | None = None,
    encode_kwargs: dict[str, Any] | None = None,
) -> DiffusionBundle:
    """A :class:`DiffusionBundle` for a diffusers pipeline.

    - Text-conditional (``unet`` + ``tokenizer`` + ``text_encoder``, e.g. Stable Diffusion): each
      prompt is encoded once; class ``k``'s conditioning is the cached embedding of ``prompts[k]``
      as ``encoder_hidden_states``.
    - Class-conditional (``transformer`` with ``num_embeds_ada_norm``, e.g. DiT): ``class_labels``.
    - Flow-matching (a transformer in :data:`bigain.models.flow.FLOW_CALLS`:
      ``StableDiffusion3Pipeline``, ``FluxPipeline``, ``ChromaPipeline``, ``QwenImagePipeline``,
      ``AuraFlowPipeline``, ``CogView4Pipeline``, ``SanaPipeline``, ``Flux2Pipeline``,
      ``ZImagePipeline``, ``Lumina2Pipeline``, ``HiDreamImagePipeline``, ``QwenImage21Pipeline``,
      ``BriaPipeline``, ``LongCatImagePipeline``, ``OvisImagePipeline``): a
      :class:`bigain.models.flow.FlowBundle`; each prompt goes once through the pipeline's
      ``encode_prompt`` as :data:`PROMPT_ENCODINGS` says (token embeddings per class, the pooled
      ones and the text mask where the family has them; ``max_sequence_length`` as given or the
      pipeline's default; ``encode_kwargs`` go to ``encode_prompt`` too, e.g. SANA's
      ``complex_human_instruction``, which its ``__call__`` adds but ``encode_prompt`` does not);
      σ_t = the scheduler's shift of t / T (``shift`` overrides it, False = none); ``guidance`` is
      passed to guidance-embedded models; ``sample_size`` is the latent side (default: the
      pipeline's default image, ``default_sample_size · vae_scale_factor`` pixels or 1024, in
      latent cells). Memory: one (L, D)
      embedding per class stays on the device (Flux: 512 x 4096 values by default).

    ``x0`` comes from the VAE: ``vae.encode(x).latent_dist.mean × scaling_factor`` (Qwen-Image's and
    SANA's VAEs: see ``_vae_encoder``) (``bundle.extras["encode"]``, input images of
    ``bundle.extras["image_size"]`` in [-1, 1]).
    ᾱ_t comes from ``pipe.scheduler.alphas_cumprod``.
    """
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if denoiser is None:
        raise TypeError(f"{type(pipe).__name__}: no `unet` or `transformer` to classify with")
    text_conditional = (
        getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "tokenizer", None) is not None
    )
    if text_conditional and not prompts:
        raise ValueError("a text-conditional pipeline needs one prompt per class (prompts=...)")
    family = _flow_family(denoiser)
    if family is not None:
        if not text_conditional:
            raise TypeError(
                f"{type(pipe).__name__}: a {family} pipeline without its text encoder cannot classify"
            )
        bundle = _flow_bundle_from_pipeline(
            pipe,
            family,
            prompts,
            class_names,
            name,
            batch_size,
            shift,
            guidance,
            max_sequence_length,
            sample_size,
            encode_kwargs,
        )
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            attach_vae(bundle, vae)
        return bundle
    sched = getattr(pipe, "scheduler", None)
    alphas = getattr(sched, "alphas_cumprod", None)
    if alphas is None:
        raise TypeError(
            f"{type(sched).__name__}: the scheduler has no alphas_cumprod (ε-prediction DDPM-family needed)"
        )
    param = next(denoiser.parameters())
    cfg = denoiser.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    in_ch = int(cfg.in_channels)
    out_ch = int(getattr(cfg, "out_channels", None) or in_ch)
    extras: dict[str, Any] = {}
    if text_conditional:
        emb = _encode_prompts(pipe, prompts, param.device, batch_size).to(param.dtype)
        extras["prompts"] = list(prompts)
        extras["prompt_embeddings"] = emb

        def conditioning(labels: torch.Tensor) -> dict[str, Any]:
            return {"encoder_hidden_states": emb[labels.to(emb.device)]}

        num_classes, kind, null = len(prompts), "unet" if hasattr(pipe, "unet") else "transformer", None
        names = list(class_names) if class_names is not None else list(prompts)
    elif getattr(cfg, "num_embeds_ada_norm", None):
        num_classes, kind, null = int(cfg.num_embeds_ada_norm), "dit", int(cfg.num_embeds_ada_norm)

        def conditioning(labels: torch.Tensor) -> dict[str, Any]:
            return {"class_labels": labels}

        id2label = getattr(pipe, "id2label", None) or {}
        names = (
            list(class_names)
            if class_names is not None
            else [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(num_classes)]
        )
    else:
        raise TypeError(f"{type(pipe).__name__}: neither text-conditional nor class-conditional")
    bundle = DiffusionBundle(
        name=name or type(pipe).__name__,
        denoiser=denoiser,
        kind=kind,
        alphas_cumprod=torch.as_tensor(alphas).detach().to(torch.float64).cpu(),
        num_classes=num_classes,
        class_names=names,
        sample_shape=(in_ch, int(size), int(size)),
        conditioning=conditioning,
        null_class=null,
        learned_sigma=out_ch == 2 * in_ch,
        extras=extras,
    )
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        attach_vae(bundle, vae)
    return bundle


# --------------------------------------------------------------------------------------------
# images → x0
# --------------------------------------------------------------------------------------------
def resize_crop_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(new_width, new_height, left, top)`` of torchvision's ``Resize(size)`` then ``CenterCrop(size)``.

    Published diffusion-classifier numbers use these transforms, so the arithmetic is theirs to the
    pixel: the short side becomes ``size``, the long side ``int(size * long / short)`` (truncated, not
    rounded), and the crop offset is ``int(round((resized - size) / 2))`` with Python's round-half-even
    (515 px → 512 crops from offset 2, not 1). Images smaller than ``size`` are scaled up the same way.
    """
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"resize_crop_geometry: sizes must be positive, got {width}x{height} -> {size}")
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return new_w, new_h, left, top


def preprocess_image(image: Any, size: int, channels: int) -> torch.Tensor:
    """PIL image or float tensor in [0, 1] / [-1, 1] → (channels, size, size) in [-1, 1].

    PIL: converted to RGB (``L`` for one channel), then torchvision's ``Resize(size, bicubic)`` +
    ``CenterCrop(size)`` (see :func:`resize_crop_geometry`; PIL's bicubic filter is antialiased when
    shrinking, as torchvision's PIL path is), ``ToTensor`` and ``Normalize(0.5, 0.5)``. The colour
    conversion comes first because the reference's data sets (torchvision's ``OxfordIIITPet`` and
    ``ImageFolder`` loaders) convert to RGB when they load a file, before any transform runs.
    Tensors are taken as already in [-1, 1] and only resized (bicubic, to size × size) if needed.
    """
    from .images import to_8bit, warn_if_small

    if isinstance(image, torch.Tensor):
        warn_if_small(image.shape[-2], image.shape[-1], size)
        x = image.float()
        if x.dim() == 2:
            x = x[None]
        if x.shape[0] != channels:
            if x.shape[0] == 1:
                x = x.expand(channels, -1, -1)
            elif channels == 1:
                x = x.mean(dim=0, keepdim=True)
            else:
                raise ValueError(f"cannot turn a {x.shape[0]}-channel image into {channels} channels")
        if tuple(x.shape[-2:]) != (size, size):
            x = torch.nn.functional.interpolate(
                x[None], size=(size, size), mode="bicubic", align_corners=False
            )[0]
        return x.contiguous()
    import numpy as np
    from PIL import Image

    warn_if_small(image.size[1], image.size[0], size)
    im = to_8bit(image).convert("L" if channels == 1 else "RGB")
    new_w, new_h, left, top = resize_crop_geometry(im.size[0], im.size[1], size)
    if (new_w, new_h) != im.size:
        im = im.resize((new_w, new_h), Image.BICUBIC)
    im = im.crop((left, top, left + size, top + size))
    arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).float().div(255.0)
    arr = arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
    if arr.shape[0] != channels:
        raise ValueError(f"cannot turn a {arr.shape[0]}-channel image into {channels} channels")
    return arr.mul(2.0).sub(1.0).contiguous()


def to_pixels(bundle: DiffusionBundle, image: Any) -> torch.Tensor:
    """One image as the pixels its bundle takes: the sample itself (pixel space) or the VAE input."""
    if bundle.extras.get("encode") is None:
        c, h, w = bundle.sample_shape
        if h != w:
            raise ValueError(f"non-square sample shape {bundle.sample_shape} is not supported")
        return preprocess_image(image, h, c)
    size = int(bundle.extras.get("image_size", bundle.sample_shape[-1] * 8))
    return preprocess_image(image, size, 3)


def pixels_to_x0(bundle: DiffusionBundle, pixels: torch.Tensor) -> torch.Tensor:
    """A batch of `to_pixels` outputs → x0 (VAE latents for latent bundles), float32 on CPU."""
    encode = bundle.extras.get("encode")
    if encode is None:
        return pixels.float()
    return encode(pixels).float().cpu()


def prepare_x0(bundle: DiffusionBundle, images: Sequence[Any]) -> torch.Tensor:
    """x0 for a list of images: pixels for pixel-space bundles, VAE latents for latent bundles."""
    return pixels_to_x0(bundle, torch.stack([to_pixels(bundle, im) for im in images]))
