"""Full-size benchmark denoisers built from their published configs, with random weights.

Weights do not change the cost of a forward, so latency and FLOP measurements need no download.
`device="meta"` builds a model without memory or initialisation time (enough for FLOP counting).
Each model also has a tiny variant of the same family (`tiny=True`), for smoke runs on a CPU.

Models: "sd2" (SD 2.0-base U-Net), "sdxl" (SDXL-base U-Net), "pixart-alpha" (PixArt-α XL/2),
"dit-xl2" (DiT-XL/2), "sd3-medium" (SD3-medium MMDiT), "flux-dev" (FLUX.1-dev). Transformers with
fixed position tables (DiT, PixArt) are built for the requested image size, as their published
checkpoints for that size are.
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


def model_spec(name: str, tiny: bool = False) -> ModelSpec:
    specs = TINY_SPECS if tiny else SPECS
    if name not in specs:
        raise ValueError(f"unknown benchmark model {name!r}; available: {', '.join(specs)}")
    return specs[name]


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
) -> nn.Module:
    """A benchmark denoiser with random weights, in eval mode without gradients.

    `pixels` sets the sample size of the transformers whose position table is fixed (DiT, PixArt);
    `tiny` builds the family's tiny variant.
    """
    import diffusers

    spec = model_spec(name, tiny)
    config = dict(spec.config)
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
