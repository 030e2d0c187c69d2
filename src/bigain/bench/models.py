"""Full-size benchmark denoisers built from their published configs, with random weights.

Weights do not change the cost of a forward, so latency and FLOP measurements need no download.
`device="meta"` builds a model without memory or initialisation time (enough for FLOP counting).
"""

from __future__ import annotations

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

# facebook/DiT-XL-2-256, transformer/config.json.
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

MODELS = ("sd2", "dit-xl2")
TEXT_TOKENS, TEXT_DIM = 77, 1024


def build_model(
    name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> nn.Module:
    """`"sd2"` (SD 2.0 base U-Net) or `"dit-xl2"` (DiT-XL/2, 256 px config), random weights, eval mode."""
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel

    if name not in MODELS:
        raise ValueError(f"unknown benchmark model {name!r}; available: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    with torch.device(device):
        if name == "sd2":
            model = UNet2DConditionModel(**SD2_UNET)
        else:
            model = DiTTransformer2DModel(**DIT_XL2_256)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def latent_size(name: str, pixels: int) -> int:
    """Latent side for an image side in pixels (both models use an 8x VAE)."""
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
) -> dict[str, torch.Tensor]:
    """Keyword inputs of one denoiser forward (the paper's latency set-up: t = 500, random latent and context / class 0)."""
    s = latent_size(name, pixels)
    gen = torch.Generator().manual_seed(seed)
    t = torch.full((batch,), 500, dtype=torch.int64)
    if name == "sd2":
        x = torch.randn(batch, 4, s, s, generator=gen)
        ctx = torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=gen)
        out = {"sample": x, "timestep": t, "encoder_hidden_states": ctx}
    elif name == "dit-xl2":
        x = torch.randn(batch, 4, s, s, generator=gen)
        out = {"hidden_states": x, "timestep": t, "class_labels": torch.zeros(batch, dtype=torch.int64)}
    else:
        raise ValueError(f"unknown benchmark model {name!r}; available: {', '.join(MODELS)}")
    # On the meta device the timestep stays on the CPU: a patch reads its value (ToDo's stop_t,
    # BiGain-TD's alpha schedule); `count_flops` moves it to the model's device after the patch's hooks.
    t_device = "cpu" if torch.device(device).type == "meta" else device
    return {
        k: v.to(device=device, dtype=dtype)
        if v.is_floating_point()
        else v.to(t_device if k == "timestep" else device)
        for k, v in out.items()
    }
