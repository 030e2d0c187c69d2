"""Tiny diffusers models with random weights for the mechanics tests."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel, PixArtTransformer2DModel, UNet2DConditionModel

from bigain import models
from bigain.models import fashion


def make_tiny_unet(seed: int = 0, cross_dim: int = 32) -> UNet2DConditionModel:
    """Two transformer levels (16x16 and 8x8 tokens on a 16x16 latent), like SD's top levels."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def make_tiny_dit(seed: int = 0, layers: int = 4, sample: int = 16) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        sample_size=sample,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()


def make_tiny_pixart(seed: int = 0) -> PixArtTransformer2DModel:
    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        sample_size=16,
        patch_size=2,
        cross_attention_dim=32,
        caption_channels=24,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    ).eval()


def make_tiny_vae(sample_size: int = 16, **config) -> AutoencoderKL:
    """A 2-level VAE (8x less area, 4 latent channels) with random weights; `config` overrides
    (e.g. scaling_factor, shift_factor)."""
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
        **config,
    ).eval()


class TinyTokenizer:
    """A CLIP-tokenizer stand-in: one id per word (a hash of its letters), padded with 1 to max_length."""

    model_max_length = 6

    def __call__(self, prompts, padding, max_length, truncation, return_tensors):
        ids = []
        for p in prompts:
            row = [sum(map(ord, w)) % 97 + 2 for w in p.split()][:max_length]
            ids.append(row + [1] * (max_length - len(row)))
        return {"input_ids": torch.tensor(ids)}


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def run_kw(model, kw: dict):
    """The first output of `model(**kw)` without gradients (the video/joint families' tests)."""
    with torch.no_grad():
        return model(**kw)[0]


def seen_forward(model, kw: dict):
    """The patch's per-forward record as the model's first transformer block saw it (the denoiser's
    post-hook drops it when the forward ends)."""
    import bigain

    seen = []
    block = bigain.inspect_model(model).blocks[0].module
    handle = block.register_forward_pre_hook(
        lambda m, a, k: seen.append(model._bigain_patch.forward), with_kwargs=True
    )
    try:
        run_kw(model, kw)
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture
def tiny_unet() -> UNet2DConditionModel:
    return make_tiny_unet()


@pytest.fixture
def tiny_dit() -> DiTTransformer2DModel:
    return make_tiny_dit()


def unet_inputs(batch: int = 2, size: int | tuple[int, int] = 16, seed: int = 1, t: int = 500):
    g = torch.Generator().manual_seed(seed)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(batch, 4, h, w, generator=g)
    ctx = torch.randn(batch, 7, 32, generator=g)
    return x, torch.full((batch,), t), ctx


def dit_inputs(batch: int = 2, size: int = 16, seed: int = 1, t: int = 500):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=g)
    return x, torch.full((batch,), t), torch.arange(batch) % 10


def make_tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """SDXL's layout in miniature: no attention at the highest resolution, so level 2 comes first."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def make_tiny_sd3(seed: int = 0, dual: bool = False, layers: int = 4):
    """An MMDiT (SD3; SD3.5-like with `dual`: a second image self-attention in the first blocks), the
    benchmark's tiny SD3 config."""
    from diffusers import SD3Transformer2DModel

    from bigain.bench.models import TINY

    torch.manual_seed(seed)
    extra = {"dual_attention_layers": (0, 1), "qk_norm": "rms_norm"} if dual else {}
    return SD3Transformer2DModel(**{**TINY["sd3-medium"], "num_layers": layers, **extra}).eval()


def sd3_inputs(batch: int = 2, size: int | tuple[int, int] = 16, seed: int = 1, t=(500.0, 20.0)) -> dict:
    g = torch.Generator().manual_seed(seed)
    h, w = (size, size) if isinstance(size, int) else size
    return dict(
        hidden_states=torch.randn(batch, 4, h, w, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        pooled_projections=torch.randn(batch, 8, generator=g),
        timestep=torch.tensor(t[:batch]),
        return_dict=False,
    )


def make_tiny_flux(seed: int = 0, double: int = 2, single: int = 3):
    """The benchmark's tiny Flux config without guidance embedding (inputs carry no guidance)."""
    from diffusers import FluxTransformer2DModel

    from bigain.bench.models import TINY

    torch.manual_seed(seed)
    cfg = {**TINY["flux-dev"], "num_layers": double, "num_single_layers": single, "guidance_embeds": False}
    return FluxTransformer2DModel(**cfg).eval()


def flux_inputs(batch: int = 2, h: int = 6, w: int = 8, text: int = 5, seed: int = 1, sigma=(0.5, 0.3)) -> dict:
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    return dict(
        hidden_states=torch.randn(batch, h * w, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, text, 24, generator=g),
        pooled_projections=torch.randn(batch, 8, generator=g),
        timestep=torch.tensor(sigma[:batch]),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text, 3),
        return_dict=False,
    )


def make_tiny_wan(seed: int = 0, layers: int = 4, i2v: bool = False):
    """A Wan 2.1 denoiser in miniature (the tiny pipeline's transformer); `i2v`: with the image
    context of Wan 2.1 I2V (an image embedder and added key/value projections in every `attn2`)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    extra = {"image_dim": 8, "added_kv_proj_dim": 24} if i2v else {}
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        **extra,
    ).eval()


def wan_inputs(
    batch: int = 2, grid=(3, 4, 4), seed: int = 1, t=(700, 30), i2v: bool = False, per_token: bool = False
) -> dict:
    """One forward's inputs on a frames x height x width token grid (patch (1, 2, 2)). `i2v`: 512 text
    tokens (Wan's processor splits the image context off at 512) and 3 image-context tokens;
    `per_token`: Wan 2.2 TI2V-style (B, S) timesteps, the first frame's tokens at 0."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    text = 512 if i2v else 5
    out = dict(
        hidden_states=torch.randn(batch, 4, f, 2 * h, 2 * w, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_hidden_states=torch.randn(batch, text, 16, generator=g),
        return_dict=False,
    )
    if i2v:
        out["encoder_hidden_states_image"] = torch.randn(batch, 3, 8, generator=g)
    if per_token:
        ts = out["timestep"][:, None].expand(batch, f * h * w).clone()
        ts[:, : h * w] = 0
        out["timestep"] = ts
    return out


def make_tiny_ltx(seed: int = 0, layers: int = 4):
    """An LTX-Video denoiser in miniature: 2 heads of 16 channels (inner 32, not a multiple of 6, so
    the rotary tables carry LTX's padding channels)."""
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,
        num_layers=layers,
        caption_channels=16,
    ).eval()


def ltx_inputs(batch: int = 2, grid=(3, 4, 4), seed: int = 1, t=(700, 30), per_token: bool = False) -> dict:
    """One forward's inputs on a frames x height x width token grid, as LTXPipeline passes them
    (packed tokens, the grid as num_frames/height/width, its rope_interpolation_scale at 25 fps).
    `per_token`: image-to-video-style (B, S) timesteps, the first frame's tokens at 0."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    mask = torch.ones(batch, 5)
    mask[:, -1] = 0
    out = dict(
        hidden_states=torch.randn(batch, f * h * w, 4, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_attention_mask=mask,
        num_frames=f,
        height=h,
        width=w,
        rope_interpolation_scale=(8 / 25, 32, 32),
        return_dict=False,
    )
    if per_token:
        ts = out["timestep"][:, None].expand(batch, f * h * w).clone()
        ts[:, : h * w] = 0
        out["timestep"] = ts
    return out


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny fashion-dit (random weights) saved in the registry's folder format."""
    torch.manual_seed(0)
    mods = fashion.build("fashion-dit", tiny=True)
    for m in mods.values():
        m.eval()
    folder = tmp_path_factory.mktemp("tiny-fashion-dit")
    models.save_folder(folder, mods, {"class_names": [f"c{i}" for i in range(10)]}, dtype=torch.float32)
    return folder
