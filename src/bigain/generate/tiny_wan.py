"""A tiny Wan 2.1 text-to-video pipeline with random weights (no download; seconds on a CPU).

For tests and for trying ``bigain generate`` on video without fetching a real checkpoint::

    python -m bigain.generate.tiny_wan runs/tiny-wan      # writes a diffusers pipeline folder

Every part is built from a config: a 4-block ``WanTransformer3DModel`` (bigain's default placement
compresses block 1 of 4), a 2-level
``AutoencoderKLWan`` (8x less height and width, 4x fewer frames after the first), a 1-layer UMT5
encoder, a character-level tokenizer built in memory, and Wan's UniPC flow scheduler. The videos
it makes are noise; they exercise the machinery, not the quality. Needs ``transformers``
(``pip install "bigain[text]"``).
"""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_tiny_wan", "tiny_wan_pipeline", "tiny_wan_tokenizer", "tiny_wan_transformer"]

TEXT_DIM = 16


def tiny_wan_tokenizer(model_max_length: int = 64) -> Any:
    """A character-level fast tokenizer (lowercase letters, digits, space, punctuation; ``</s>`` at
    the end, ``<pad>`` after) that saves to and loads from ``tokenizer.json``."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = string.ascii_lowercase + string.digits + " .,;:!?'-"
    vocab = {tok: i for i, tok in enumerate(specials + list(chars))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def tiny_wan_transformer(seed: int = 0, layers: int = 4) -> Any:
    """A Wan 2.1 denoiser in miniature: 2 heads of 12 channels, patch (1, 2, 2), 4 latent channels."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # rotary split 4 (frames) + 4 (height) + 4 (width)
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def tiny_wan_pipeline(seed: int = 0, layers: int = 4) -> Any:
    """A ``WanPipeline`` (fp32, CPU, random weights) ready to call or to ``save_pretrained``.

    Frame counts are 4k + 1 (1, 5, 9, ...) and height and width multiples of 16, as for Wan 2.1;
    a 5-frame 32x32 video has a latent grid of 2 frames x 2 x 2 tokens.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_wan_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ).eval()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=tiny_wan_transformer(seed + 2, layers),
    )


def save_tiny_wan(folder: str | os.PathLike, seed: int = 0, layers: int = 4) -> Path:
    """Write :func:`tiny_wan_pipeline` to ``folder`` (a diffusers pipeline folder); returns it."""
    folder = Path(folder)
    tiny_wan_pipeline(seed, layers).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m bigain.generate.tiny_wan",
        description="Save a tiny random Wan 2.1 text-to-video pipeline (for trying bigain generate on video).",
    )
    p.add_argument("out", help="folder to write the pipeline to")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    folder = save_tiny_wan(a.out, a.seed)
    print(f"wrote a tiny random Wan pipeline to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
