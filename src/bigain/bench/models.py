"""Full-size benchmark denoisers built from their published configs, with random weights.

Weights do not change the cost of a forward, so latency and FLOP measurements need no download.
`device="meta"` builds a model without memory or initialisation time (enough for FLOP counting).
Each model also has a tiny variant of the same family (`tiny=True`), for smoke runs on a CPU.

Models: "sd2" (SD 2.0-base U-Net), "sdxl" (SDXL-base U-Net), "pixart-alpha" (PixArt-α XL/2),
"dit-xl2" (DiT-XL/2), "sd3-medium" (SD3-medium MMDiT), "flux-dev" (FLUX.1-dev). Transformers with
fixed position tables (DiT, PixArt) are built for the requested image size, as their published
checkpoints for that size are.

Video transformers (`VIDEO_MODELS`, inputs from `video_inputs` at a frames x height x width size):
"wan2.1-1.3b" and "wan2.1-14b" (Wan 2.1 text-to-video), "hunyuan-video" (HunyuanVideo),
"cogvideox-5b" (CogVideoX-5B), "ltx-video" (LTX-Video 0.9). Their published sizes are in
`VIDEO_SIZES`; `layers=N` builds the first N blocks of a model at full width (a stack of its blocks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# stabilityai/stable-diffusion-2-base, unet/config.json (the fields that shape the network).
SD2_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    attention_head_dim=(5, 10, 20, 20),  # diffusers' historical name: the number of heads per level
    cross_attention_dim=1024,
    use_linear_projection=True,
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json.
SDXL_UNET: dict[str, Any] = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280),
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    cross_attention_dim=2048,
    use_linear_projection=True,
    layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)

# facebook/DiT-XL-2-256, transformer/config.json (DiT-XL-2-512: sample_size=64).
DIT_XL2_256: dict[str, Any] = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    sample_size=32,
    patch_size=2,
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_zero",
    activation_fn="gelu-approximate",
)

# PixArt-alpha/PixArt-XL-2-1024-MS, transformer/config.json.
PIXART_ALPHA: dict[str, Any] = dict(
    num_attention_heads=16,
    attention_head_dim=72,
    in_channels=4,
    out_channels=8,
    num_layers=28,
    cross_attention_dim=1152,
    attention_bias=True,
    sample_size=128,
    patch_size=2,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    caption_channels=4096,
    use_additional_conditions=True,
)

# stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json.
SD3_MEDIUM: dict[str, Any] = dict(
    sample_size=128,
    patch_size=2,
    in_channels=16,
    num_layers=24,
    attention_head_dim=64,
    num_attention_heads=24,
    joint_attention_dim=4096,
    caption_projection_dim=1536,
    pooled_projection_dim=2048,
    out_channels=16,
    pos_embed_max_size=192,
)

# black-forest-labs/FLUX.1-dev, transformer/config.json.
FLUX_DEV: dict[str, Any] = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json. VAE: 4x in time, 8x in space, 16
# channels; text: UMT5-XXL hidden states padded to 512 tokens.
WAN21_1_3B: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)

# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json (same VAE and text encoder as 1.3B).
WAN21_14B: dict[str, Any] = dict(WAN21_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)

# hunyuanvideo-community/HunyuanVideo, transformer/config.json. VAE: 4x in time, 8x in space, 16
# channels; text: LLaVA-Llama-3 hidden states, 256 tokens, plus a pooled CLIP-L vector (768).
HUNYUAN_VIDEO: dict[str, Any] = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=24,
    attention_head_dim=128,
    num_layers=20,
    num_single_layers=40,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=4096,
    pooled_projection_dim=768,
    rope_theta=256.0,
    rope_axes_dim=(16, 56, 56),
)

# THUDM/CogVideoX-5b, transformer/config.json. VAE: 4x in time, 8x in space, 16 channels; text:
# T5-XXL hidden states, 226 tokens. Frames-first latent (B, F, C, H, W).
COGVIDEOX_5B: dict[str, Any] = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=42,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)

# Lightricks/LTX-Video (0.9.x, 2B), transformer/config.json. VAE: 8x in time, 32x in space, 128
# channels, patch 1 (one token per latent pixel); text: T5-XXL hidden states, 128 tokens.
LTX_VIDEO: dict[str, Any] = dict(
    in_channels=128,
    out_channels=128,
    patch_size=1,
    patch_size_t=1,
    num_attention_heads=32,
    attention_head_dim=64,
    cross_attention_dim=2048,
    num_layers=28,
    activation_fn="gelu-approximate",
    qk_norm="rms_norm_across_heads",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    caption_channels=4096,
    attention_bias=True,
    attention_out_bias=True,
)

# Tiny variants: the same families and layouts, a few channels wide (smoke runs, tests).
_TINY_UNET = dict(
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=8,
    cross_attention_dim=32,
)
TINY: dict[str, dict[str, Any]] = {
    "sd2": dict(
        _TINY_UNET,
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ),
    "sdxl": dict(
        _TINY_UNET,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 16,
    ),
    "dit-xl2": dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=4,
        sample_size=16,
        patch_size=2,
        num_embeds_ada_norm=1000,
    ),
    "pixart-alpha": dict(  # 3 heads: the size conditions split the width in three
        num_attention_heads=3,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=4,
        cross_attention_dim=48,
        sample_size=16,
        patch_size=2,
        caption_channels=24,
        norm_type="ada_norm_single",
        use_additional_conditions=True,
    ),
    "sd3-medium": dict(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=4,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=32,
    ),
    "flux-dev": dict(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=8,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A benchmark model: its diffusers class, config, and the shapes of its conditioning."""

    name: str
    family: str  # "unet" | "dit" | "pixart" | "sd3" | "flux"
    cls: str  # diffusers class name
    config: dict[str, Any]
    text_tokens: int = 0  # conditioning sequence length (0: class-conditional)
    text_dim: int = 0
    pooled_dim: int = 0  # SDXL text_embeds / SD3 and Flux pooled projections
    sized: bool = False  # fixed position table: built with sample_size = the latent side
    extra: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, ModelSpec] = {
    "sd2": ModelSpec("sd2", "unet", "UNet2DConditionModel", SD2_UNET, 77, 1024),
    "sdxl": ModelSpec("sdxl", "unet", "UNet2DConditionModel", SDXL_UNET, 77, 2048, 1280),
    "pixart-alpha": ModelSpec(
        "pixart-alpha", "pixart", "PixArtTransformer2DModel", PIXART_ALPHA, 120, 4096, sized=True
    ),
    "dit-xl2": ModelSpec("dit-xl2", "dit", "DiTTransformer2DModel", DIT_XL2_256, sized=True),
    "sd3-medium": ModelSpec("sd3-medium", "sd3", "SD3Transformer2DModel", SD3_MEDIUM, 333, 4096, 2048),
    "flux-dev": ModelSpec("flux-dev", "flux", "FluxTransformer2DModel", FLUX_DEV, 512, 4096, 768),
}
TINY_SPECS: dict[str, ModelSpec] = {
    "sd2": ModelSpec("sd2", "unet", "UNet2DConditionModel", TINY["sd2"], 7, 32),
    "sdxl": ModelSpec("sdxl", "unet", "UNet2DConditionModel", TINY["sdxl"], 7, 32, 16),
    "pixart-alpha": ModelSpec(
        "pixart-alpha", "pixart", "PixArtTransformer2DModel", TINY["pixart-alpha"], 6, 24, sized=True
    ),
    "dit-xl2": ModelSpec("dit-xl2", "dit", "DiTTransformer2DModel", TINY["dit-xl2"], sized=True),
    "sd3-medium": ModelSpec("sd3-medium", "sd3", "SD3Transformer2DModel", TINY["sd3-medium"], 5, 16, 8),
    "flux-dev": ModelSpec("flux-dev", "flux", "FluxTransformer2DModel", TINY["flux-dev"], 5, 24, 8),
}
MODELS = tuple(SPECS)
TEXT_TOKENS, TEXT_DIM = 77, 1024

# Tiny video transformers: the same classes and layouts, a few channels wide, a few blocks deep.
TINY_VIDEO: dict[str, dict[str, Any]] = {
    "wan": dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,  # Wan's rotary split: 4 + 4 + 4 channels for (t, h, w)
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=8,
        ffn_dim=32,
        num_layers=4,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    ),
    "hunyuan": dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6),
    ),
    "cogvideox": dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=5,
        patch_size=2,
        max_text_seq_length=6,
        use_rotary_positional_embeddings=True,
    ),
    "ltx": dict(
        in_channels=8,
        out_channels=8,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,
        num_layers=2,
        caption_channels=16,
    ),
}


def _video(name: str, family: str, cls: str, config: dict[str, Any], text: int, text_dim: int,
           vae: tuple[int, int], pooled: int = 0) -> ModelSpec:  # fmt: skip
    """A video transformer's spec; `extra` holds the VAE's (time, space) compression."""
    return ModelSpec(name, family, cls, config, text, text_dim, pooled, extra={"vae": vae})


VIDEO_SPECS: dict[str, ModelSpec] = {
    "wan2.1-1.3b": _video("wan2.1-1.3b", "wan", "WanTransformer3DModel", WAN21_1_3B, 512, 4096, (4, 8)),
    "wan2.1-14b": _video("wan2.1-14b", "wan", "WanTransformer3DModel", WAN21_14B, 512, 4096, (4, 8)),
    "hunyuan-video": _video(
        "hunyuan-video", "hunyuan", "HunyuanVideoTransformer3DModel", HUNYUAN_VIDEO, 256, 4096, (4, 8), 768
    ),
    "cogvideox-5b": _video(
        "cogvideox-5b", "cogvideox", "CogVideoXTransformer3DModel", COGVIDEOX_5B, 226, 4096, (4, 8)
    ),
    "ltx-video": _video("ltx-video", "ltx", "LTXVideoTransformer3DModel", LTX_VIDEO, 128, 4096, (8, 32)),
}
TINY_VIDEO_SPECS: dict[str, ModelSpec] = {
    "wan2.1-1.3b": _video("wan2.1-1.3b", "wan", "WanTransformer3DModel", TINY_VIDEO["wan"], 8, 16, (4, 8)),
    "wan2.1-14b": _video("wan2.1-14b", "wan", "WanTransformer3DModel", TINY_VIDEO["wan"], 8, 16, (4, 8)),
    "hunyuan-video": _video(
        "hunyuan-video", "hunyuan", "HunyuanVideoTransformer3DModel", TINY_VIDEO["hunyuan"], 6, 16, (4, 8), 8
    ),
    "cogvideox-5b": _video(
        "cogvideox-5b", "cogvideox", "CogVideoXTransformer3DModel", TINY_VIDEO["cogvideox"], 6, 16, (4, 8)
    ),
    "ltx-video": _video("ltx-video", "ltx", "LTXVideoTransformer3DModel", TINY_VIDEO["ltx"], 6, 16, (8, 32)),
}
VIDEO_MODELS = tuple(VIDEO_SPECS)

# The sizes each model was published for, as (frames, height, width) in pixels.
VIDEO_SIZES: dict[str, dict[str, tuple[int, int, int]]] = {
    "wan2.1-1.3b": {"480p": (81, 480, 832), "720p": (81, 720, 1280)},
    "wan2.1-14b": {"480p": (81, 480, 832), "720p": (81, 720, 1280)},
    "hunyuan-video": {"720p": (129, 720, 1280)},
    "cogvideox-5b": {"480p": (49, 480, 720)},
    "ltx-video": {"512p": (121, 512, 768)},
}


def model_spec(name: str, tiny: bool = False) -> ModelSpec:
    specs = {**(TINY_SPECS if tiny else SPECS), **(TINY_VIDEO_SPECS if tiny else VIDEO_SPECS)}
    if name not in specs:
        raise ValueError(f"unknown benchmark model {name!r}; available: {', '.join(specs)}")
    return specs[name]


def video_grid(
    name: str, frames: int, height: int, width: int, *, tiny: bool = False
) -> dict[str, tuple[int, ...]]:
    """The latent (frames, height, width) of a video of `frames` x `height` x `width` pixels and its
    token grid (latent over the patch size): e.g. Wan at 81 x 480 x 832 -> latent (21, 60, 104),
    tokens (21, 30, 52) = 32,760."""
    spec = model_spec(name, tiny)
    vt, vs = spec.extra["vae"]
    if (frames - 1) % vt or height % vs or width % vs:
        raise ValueError(
            f"{name}: {frames} frames of {height}x{width} px do not fit its VAE "
            f"(frames = 1 + {vt}k, sides multiples of {vs})"
        )
    latent = ((frames - 1) // vt + 1, height // vs, width // vs)
    cfg = spec.config
    if spec.family == "wan":
        pt, ph, pw = cfg["patch_size"]
    elif spec.family == "cogvideox":
        pt, ph, pw = 1, cfg["patch_size"], cfg["patch_size"]
    else:
        p = cfg.get("patch_size", 1)
        pt, ph, pw = cfg.get("patch_size_t", 1), p, p
    return {"latent": latent, "tokens": (latent[0] // pt, latent[1] // ph, latent[2] // pw)}


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters directly in `dtype` (a 12B-parameter model never exists in fp32)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build_model(
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    *,
    pixels: int | None = None,
    tiny: bool = False,
    layers: int | None = None,
) -> nn.Module:
    """A benchmark denoiser with random weights, in eval mode without gradients.

    `pixels` sets the sample size of the transformers whose position table is fixed (DiT, PixArt);
    `tiny` builds the family's tiny variant; `layers` keeps only the first N transformer blocks
    (`num_layers`) at full width.
    """
    import diffusers

    spec = model_spec(name, tiny)
    config = dict(spec.config)
    if layers is not None:
        if layers < 1 or "num_layers" not in config:
            raise ValueError(
                f"layers={layers!r}: needs a positive number of blocks and a model with num_layers"
            )
        config["num_layers"] = layers
    if spec.sized and pixels is not None:
        config["sample_size"] = latent_size(name, pixels)
    if spec.family == "pixart" and not tiny:
        config["interpolation_scale"] = max(config["sample_size"] // 64, 1)
    torch.manual_seed(seed)
    init_dtype = dtype if torch.device(device).type != "meta" and dtype.is_floating_point else torch.float32
    with torch.device(device), _default_dtype(init_dtype):
        model = getattr(diffusers, spec.cls)(**config)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def latent_size(name: str, pixels: int) -> int:
    """Latent side for an image side in pixels (every benchmark model uses an 8x VAE)."""
    if pixels % 8:
        raise ValueError(f"image size {pixels} is not a multiple of 8")
    return pixels // 8


def example_inputs(
    name: str,
    pixels: int,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    *,
    tiny: bool = False,
) -> dict[str, torch.Tensor]:
    """Keyword inputs of one denoiser forward (the paper's latency set-up: t = 500, random latent
    and conditioning; class 0 on DiT). The first entry is the latent (`call_model` passes it
    positionally). Flux gets packed 2x2 latent patches, sigma 0.5 and guidance 3.5."""
    spec = model_spec(name, tiny)
    s = latent_size(name, pixels)
    gen = torch.Generator().manual_seed(seed)
    cfg = spec.config
    t = torch.full((batch,), 500, dtype=torch.int64)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    if spec.family == "unet":
        out: dict[str, torch.Tensor] = {
            "sample": rand(batch, cfg["in_channels"], s, s),
            "timestep": t,
            "encoder_hidden_states": rand(batch, spec.text_tokens, spec.text_dim),
        }
        if cfg.get("addition_embed_type") == "text_time":
            out["added_cond_kwargs"] = {  # type: ignore[assignment]
                "text_embeds": rand(batch, spec.pooled_dim),
                "time_ids": torch.tensor([pixels, pixels, 0, 0, pixels, pixels], dtype=torch.float32).repeat(
                    batch, 1
                ),
            }
    elif spec.family == "dit":
        out = {
            "hidden_states": rand(batch, cfg["in_channels"], s, s),
            "timestep": t,
            "class_labels": torch.zeros(batch, dtype=torch.int64),
        }
    elif spec.family == "pixart":
        out = {
            "hidden_states": rand(batch, cfg["in_channels"], s, s),
            "timestep": t,
            "encoder_hidden_states": rand(batch, spec.text_tokens, spec.text_dim),
            "added_cond_kwargs": {
                "resolution": torch.tensor([[pixels, pixels]] * batch, dtype=torch.float32),
                "aspect_ratio": torch.ones(batch, 1),
            },
        }  # type: ignore[dict-item]
    elif spec.family == "sd3":
        out = {
            "hidden_states": rand(batch, cfg["in_channels"], s, s),
            "timestep": t,
            "encoder_hidden_states": rand(batch, spec.text_tokens, spec.text_dim),
            "pooled_projections": rand(batch, spec.pooled_dim),
            "return_dict": False,
        }  # type: ignore[dict-item]
    else:  # flux: 2x2 patches of the latent, packed, with their (0, row, col) ids
        h = w = s // 2
        ids = torch.zeros(h, w, 3)
        ids[..., 1] = torch.arange(h)[:, None]
        ids[..., 2] = torch.arange(w)[None, :]
        out = {
            "hidden_states": rand(batch, h * w, cfg["in_channels"]),
            "timestep": torch.full((batch,), 0.5),
            "encoder_hidden_states": rand(batch, spec.text_tokens, spec.text_dim),
            "pooled_projections": rand(batch, spec.pooled_dim),
            "img_ids": ids.reshape(-1, 3),
            "txt_ids": torch.zeros(spec.text_tokens, 3),
            "return_dict": False,
        }  # type: ignore[dict-item]
        if cfg.get("guidance_embeds"):
            out["guidance"] = torch.full((batch,), 3.5)
    # On the meta device the timestep stays on the CPU: a patch reads its value (ToDo's stop_t,
    # BiGain-TD's alpha schedule); `count_flops` moves it to the model's device after the patch's hooks.
    t_device = "cpu" if torch.device(device).type == "meta" else device

    def move(k: str, v: Any) -> Any:
        if isinstance(v, dict):
            return {kk: move(kk, vv) for kk, vv in v.items()}
        if not isinstance(v, torch.Tensor):
            return v
        if k in ("img_ids", "txt_ids"):
            return v.to(t_device)
        if v.is_floating_point() and k not in (
            "timestep",
            "guidance",
            "time_ids",
            "resolution",
            "aspect_ratio",
        ):
            return v.to(device=device, dtype=dtype)
        return v.to(t_device if k == "timestep" else device)

    return {k: move(k, v) for k, v in out.items()}


def video_inputs(
    name: str,
    frames: int,
    height: int,
    width: int,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    *,
    tiny: bool = False,
) -> dict[str, Any]:
    """Keyword inputs of one forward of a video transformer on a `frames` x `height` x `width` video
    (random latent and text states at the model's text length, t = 500). The first entry is the
    latent. CogVideoX gets no rotary table (the pipeline computes it; it adds no matmul) and
    HunyuanVideo a guidance of 6 (x 1000, as its pipeline passes it)."""
    spec = model_spec(name, tiny)
    f, h, w = video_grid(name, frames, height, width, tiny=tiny)["latent"]
    cfg = spec.config
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    t_device = "cpu" if torch.device(device).type == "meta" else device  # as in `example_inputs`
    t = torch.full((batch,), 500, dtype=torch.int64, device=t_device)
    ctx = rand(batch, spec.text_tokens, spec.text_dim)
    c = cfg["in_channels"]
    out: dict[str, Any]
    if spec.family == "wan":
        out = {"hidden_states": rand(batch, c, f, h, w), "timestep": t, "encoder_hidden_states": ctx}
    elif spec.family == "hunyuan":
        out = {
            "hidden_states": rand(batch, c, f, h, w),
            "timestep": t,
            "encoder_hidden_states": ctx,
            "encoder_attention_mask": torch.ones(batch, spec.text_tokens, device=device),
            "pooled_projections": rand(batch, spec.pooled_dim),
            "guidance": torch.full((batch,), 6000.0, device=device, dtype=dtype),
        }
    elif spec.family == "cogvideox":
        out = {"hidden_states": rand(batch, f, c, h, w), "encoder_hidden_states": ctx, "timestep": t}
    elif spec.family == "ltx":
        out = {
            "hidden_states": rand(batch, f * h * w, c),
            "encoder_hidden_states": ctx,
            "timestep": t,
            "encoder_attention_mask": torch.ones(batch, spec.text_tokens, device=device),
            "num_frames": f,
            "height": h,
            "width": w,
        }
    else:  # pragma: no cover - every video spec has one of the families above
        raise ValueError(f"{name} is not a video transformer")
    out["return_dict"] = False
    return out
