"""CLIP score of image-prompt pairs with a local transformers ``CLIPModel``.

CLIPScore = 100 * max(cos(image_embedding, text_embedding), 0), averaged over pairs (the definition
of Hessel et al. 2021 with weight 100, as in torchmetrics). Nothing is downloaded: the model and the
tokenizer are objects or local folders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["clip_score", "load_clip"]

# Normalisation constants of the OpenAI CLIP image encoders (the CLIPImageProcessor default).
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_clip(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Load a ``CLIPModel`` and its tokenizer from a local folder (never from the network)."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(os.fspath(path), local_files_only=True).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
    return model, tokenizer


def _embeds(out: Any) -> torch.Tensor:
    # transformers 4.x returns the projected embeddings; 5.x returns an output whose pooler_output is.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _preprocess(images: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[-1, 1] (B, C, H, W) -> CLIP pixel values: shortest side to ``size`` (bicubic, antialiased),
    centre crop, per-channel normalisation; the CLIPImageProcessor pipeline, done on tensors."""
    x = ((images.float().clamp(-1, 1) + 1) / 2).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top : top + size, left : left + size]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _image_norm(processor: Any) -> tuple[Sequence[float], Sequence[float]]:
    ip = getattr(processor, "image_processor", None)
    mean, std = getattr(ip, "image_mean", None), getattr(ip, "image_std", None)
    return (mean or _CLIP_MEAN), (std or _CLIP_STD)


def clip_score(
    images: Any,
    prompts: Sequence[str] | torch.Tensor,
    clip_model: Any,
    processor_or_tokenizer: Any = None,
    *,
    attention_mask: torch.Tensor | None = None,
    batch_size: int = 64,
    reduction: str = "mean",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> float | np.ndarray:
    """CLIP score of ``images`` (float (N, C, H, W) in [-1, 1]) against their ``prompts``.

    ``prompts`` is a list of N strings (tokenized with ``processor_or_tokenizer``: a CLIPProcessor or
    a tokenizer) or pre-tokenized ``input_ids`` (N, L) with an optional ``attention_mask``, for callers
    without a tokenizer. ``clip_model`` is a ``CLIPModel`` or a local folder (then the tokenizer is
    loaded from it when not given). Returns the mean score, or the (N,) scores with
    ``reduction="none"``. Images are preprocessed on tensors (see ``_preprocess``), so scores can differ
    in the last digits from a PIL-based pipeline.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if isinstance(clip_model, (str, os.PathLike)):
        clip_model, loaded_tok = load_clip(clip_model)
        if processor_or_tokenizer is None:
            processor_or_tokenizer = loaded_tok
    dev = torch.device(device) if device is not None else next(clip_model.parameters()).device
    images = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n = images.shape[0]

    cfg = clip_model.config
    max_len = int(cfg.text_config.max_position_embeddings)
    if isinstance(prompts, torch.Tensor):
        input_ids = prompts.long()
        if input_ids.ndim != 2:
            raise ValueError(f"pre-tokenized prompts must be (N, L) input_ids, got {tuple(input_ids.shape)}")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    else:
        prompts = list(prompts)
        if processor_or_tokenizer is None:
            raise ValueError("processor_or_tokenizer is required when prompts are strings")
        tok = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
        enc = tok(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        input_ids, mask = enc["input_ids"], enc["attention_mask"]
    if input_ids.shape[0] != n:
        raise ValueError(f"got {n} images but {input_ids.shape[0]} prompts")
    if input_ids.shape[1] > max_len:
        raise ValueError(f"input_ids have length {input_ids.shape[1]} > the model's {max_len} positions")

    size = int(cfg.vision_config.image_size)
    mean, std = _image_norm(processor_or_tokenizer)
    dtype = next(clip_model.parameters()).dtype
    scores = []
    with torch.inference_mode():
        for i in tqdm(
            range(0, n, batch_size),
            total=math.ceil(n / batch_size),
            desc="clip score",
            disable=not progress,
            leave=False,
        ):
            pix = _preprocess(images[i : i + batch_size].to(dev), size, mean, std).to(dtype)
            img = _embeds(clip_model.get_image_features(pixel_values=pix))
            txt = _embeds(
                clip_model.get_text_features(
                    input_ids=input_ids[i : i + batch_size].to(dev),
                    attention_mask=mask[i : i + batch_size].to(dev),
                )
            )
            cos = F.cosine_similarity(img.float(), txt.float(), dim=-1)
            scores.append((100.0 * cos.clamp(min=0)).cpu().double().numpy())
    out = np.concatenate(scores)
    return float(out.mean()) if reduction == "mean" else out
