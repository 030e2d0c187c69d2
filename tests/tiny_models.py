"""The tiny denoisers of the test suite, one registry keyed by diffusers class name.

Each entry builds a small random-weight model of that class and gives one forward's inputs. Several
configs per class are welcome (SD 2-like and SDXL-like U-Nets; SD3 and SD3.5-like MMDiTs).
tests/test_coverage.py runs every method an adapter takes on every entry, and docs/coverage.md
(`python -m bigain.backbones.coverage --write`) lists the config names as the "tested by" column.

Adding a backbone: one `tiny(...)` line here, written as a call with the class name and the config
name as string literals (the coverage script reads this file without importing it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from conftest import (
    dit_inputs,
    flux_inputs,
    ltx_inputs,
    make_tiny_dit,
    make_tiny_flux,
    make_tiny_ltx,
    make_tiny_pixart,
    make_tiny_sd3,
    make_tiny_sdxl_unet,
    make_tiny_unet,
    make_tiny_wan,
    sd3_inputs,
    unet_inputs,
    wan_inputs,
)

Inputs = tuple[tuple, dict[str, Any]]


@dataclass(frozen=True)
class Tiny:
    """One tiny config of a diffusers denoiser class."""

    cls: str  # the diffusers class name the builder returns
    name: str  # unique over the registry (the test id and the docs' "tested by")
    build: Callable[[], nn.Module]
    inputs: Callable[[], Inputs]  # (args, kwargs) of one forward, the same tensors on every call

    def forward(self, model: nn.Module) -> torch.Tensor:
        """The denoiser's output tensor for these inputs."""
        args, kwargs = self.inputs()
        out = model(*args, **{**kwargs, "return_dict": False})
        if isinstance(out, (list, tuple)):  # diffusers' (sample,) tuple; Kandinsky 5 returns the tensor itself
            out = out[0]
        return torch.stack(out) if isinstance(out, (list, tuple)) else out  # Z-Image: one tensor per sample


TINY: dict[str, list[Tiny]] = {}


def tiny(cls: str, name: str, build: Callable[[], nn.Module], inputs: Callable[[], Inputs]) -> None:
    if any(t.name == name for ts in TINY.values() for t in ts):
        raise ValueError(f"tiny config name {name!r} is used twice")
    TINY.setdefault(cls, []).append(Tiny(cls, name, build, inputs))


def by_name(name: str) -> Tiny:
    return next(t for ts in TINY.values() for t in ts if t.name == name)


def entries() -> list[Tiny]:
    return [t for ts in TINY.values() for t in ts]


def _pixart_inputs() -> Inputs:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 16, 16, generator=g)
    enc = torch.randn(2, 6, 24, generator=g)
    cond = {"resolution": None, "aspect_ratio": None}
    return (x,), dict(encoder_hidden_states=enc, timestep=torch.tensor([700, 30]), added_cond_kwargs=cond)


tiny("UNet2DConditionModel", "sd-unet", make_tiny_unet, lambda: (unet_inputs(2), {}))
tiny("UNet2DConditionModel", "sdxl-unet", make_tiny_sdxl_unet, lambda: (unet_inputs(2), {}))
tiny("DiTTransformer2DModel", "dit", lambda: make_tiny_dit(layers=4), lambda: (dit_inputs(2), {}))
tiny("PixArtTransformer2DModel", "pixart", make_tiny_pixart, _pixart_inputs)
tiny("SD3Transformer2DModel", "sd3", make_tiny_sd3, lambda: ((), sd3_inputs(2)))
tiny("SD3Transformer2DModel", "sd3.5", lambda: make_tiny_sd3(dual=True), lambda: ((), sd3_inputs(2)))
tiny("FluxTransformer2DModel", "flux", make_tiny_flux, lambda: ((), flux_inputs(2)))


def _make_auraflow() -> nn.Module:
    from diffusers import AuraFlowTransformer2DModel

    torch.manual_seed(0)
    return AuraFlowTransformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=2,
        num_single_dit_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=12,
        caption_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=256,
    )


def _auraflow_inputs() -> Inputs:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 18, 14, generator=g)  # a 9x7 token grid: odd and not square
    enc = torch.randn(2, 5, 12, generator=g)
    return (x,), dict(encoder_hidden_states=enc, timestep=torch.tensor([0.7, 0.3]))


def _make_sana() -> nn.Module:
    from diffusers import SanaTransformer2DModel

    torch.manual_seed(0)
    return SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=12,
        sample_size=16,
        patch_size=2,
    )


def _sana_inputs() -> Inputs:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 14, 18, generator=g)  # a 7x9 token grid: odd and not square
    enc = torch.randn(2, 5, 12, generator=g)
    return (x,), dict(encoder_hidden_states=enc, timestep=torch.tensor([700, 300]))


tiny("AuraFlowTransformer2DModel", "auraflow", _make_auraflow, _auraflow_inputs)
tiny("SanaTransformer2DModel", "sana", _make_sana, _sana_inputs)


def _make_cogview3plus() -> nn.Module:
    from diffusers import CogView3PlusTransformer2DModel

    torch.manual_seed(0)
    return CogView3PlusTransformer2DModel(
        patch_size=2,
        in_channels=4,
        num_layers=4,
        attention_head_dim=8,
        num_attention_heads=2,
        out_channels=4,
        text_embed_dim=12,
        time_embed_dim=8,
        condition_dim=4,
        pos_embed_max_size=16,
        sample_size=16,
    )


def _cogview3plus_inputs() -> Inputs:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 18, 14, generator=g)  # a 9x7 token grid: odd and not square
    enc = torch.randn(2, 5, 12, generator=g)
    size = torch.tensor([[18.0, 14.0]] * 2)
    return (x,), dict(
        encoder_hidden_states=enc,
        timestep=torch.tensor([700, 300]),
        original_size=size,
        target_size=size,
        crop_coords=torch.zeros(2, 2),
    )


tiny("CogView3PlusTransformer2DModel", "cogview3plus", _make_cogview3plus, _cogview3plus_inputs)
tiny("WanTransformer3DModel", "wan", make_tiny_wan, lambda: ((), wan_inputs(2)))
tiny("WanTransformer3DModel", "wan-i2v", lambda: make_tiny_wan(i2v=True), lambda: ((), wan_inputs(2, i2v=True)))
tiny("WanTransformer3DModel", "wan2.2-ti2v", make_tiny_wan, lambda: ((), wan_inputs(2, per_token=True)))
tiny("LTXVideoTransformer3DModel", "ltx", make_tiny_ltx, lambda: ((), ltx_inputs(2)))
tiny("LTXVideoTransformer3DModel", "ltx-i2v", make_tiny_ltx, lambda: ((), ltx_inputs(2, per_token=True)))


def make_tiny_cogvideox(rotary: bool = True, layers: int = 4, patch_size_t: int | None = None) -> nn.Module:
    """A CogVideoX denoiser in miniature: 2 heads of 16 channels (the rotary tables split 16 into
    4 temporal + 6 + 6 spatial channels), with rotary positions (5B-like) or sincos ones (2B-like)."""
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=12,
        num_layers=layers,
        sample_width=10,
        sample_height=6,
        sample_frames=9,  # 3 latent frames: (3 - 1) * 4 + 1
        patch_size=2,
        patch_size_t=patch_size_t,
        max_text_seq_length=5,
        use_rotary_positional_embeddings=rotary,
    ).eval()


def cogvideox_inputs(
    batch: int = 2, frames: int = 3, size=(6, 10), rotary: bool = True, t=(700, 30), patch_size_t: int = 1, seed: int = 1
) -> dict:
    """One forward's inputs: a (B, F, C, H, W) latent, 5 text tokens, and (rotary) the pipeline's
    (cos, sin) video rows for the frames x (H/2) x (W/2) token grid."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = dict(
        hidden_states=torch.randn(batch, frames, 4, h, w, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, 12, generator=g),
        timestep=torch.tensor(t[:batch]),
        return_dict=False,
    )
    if rotary:
        gh, gw = h // 2, w // 2
        out["image_rotary_emb"] = get_3d_rotary_pos_embed(
            embed_dim=16, crops_coords=((0, 0), (gh, gw)), grid_size=(gh, gw), temporal_size=frames // patch_size_t
        )
    return out


def make_tiny_hunyuan_video(layers: int = 2, single_layers: int = 2, patch_size_t: int = 1) -> nn.Module:
    """A HunyuanVideo denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6), dual-
    then single-stream blocks, one token-refiner layer, patch 2 (and `patch_size_t`)."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    return HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=layers,
        num_single_layers=single_layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=patch_size_t,
        guidance_embeds=False,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6),
    ).eval()


def hunyuan_video_inputs(batch: int = 2, latent=(3, 8, 8), t=(700, 30), seed: int = 1) -> dict:
    """One forward's inputs: a (B, 4, F, H, W) latent and 5 text tokens of which row 0 pads the last
    one and row 1 the last two (the model masks them in every attention)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5)
    mask[0, -1:] = 0
    mask[1:, -2:] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, *latent, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        encoder_attention_mask=mask,
        pooled_projections=torch.randn(batch, 8, generator=g),
        return_dict=False,
    )


tiny("CogVideoXTransformer3DModel", "cogvideox", make_tiny_cogvideox, lambda: ((), cogvideox_inputs(2)))
tiny(
    "CogVideoXTransformer3DModel",
    "cogvideox-sincos",
    lambda: make_tiny_cogvideox(rotary=False),
    lambda: ((), cogvideox_inputs(2, rotary=False)),
)


def make_tiny_qwen_image(layers: int = 4) -> nn.Module:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=12,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def qwen_image_inputs(batch: int = 2, h: int = 6, w: int = 10, text: int = 5, sigma=(0.7, 0.3), mask: bool = False) -> dict:
    """One forward's inputs as QwenImagePipeline passes them: packed tokens, img_shapes, t / 1000."""
    g = torch.Generator().manual_seed(3)
    kw = dict(
        hidden_states=torch.randn(batch, h * w, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, text, 12, generator=g),
        encoder_hidden_states_mask=None,
        timestep=torch.tensor(sigma[:batch]),
        img_shapes=[[(1, h, w)]] * batch,
    )
    if mask:
        m = torch.ones(batch, text, dtype=torch.long)
        m[0, -2:] = 0
        kw["encoder_hidden_states_mask"] = m
    return kw


tiny("QwenImageTransformer2DModel", "qwen-image", make_tiny_qwen_image, lambda: ((), qwen_image_inputs(2)))  # a 6x10 grid
tiny("HunyuanVideoTransformer3DModel", "hunyuan-video", make_tiny_hunyuan_video, lambda: ((), hunyuan_video_inputs(2)))


def make_tiny_cogview4(layers: int = 4) -> nn.Module:
    """A CogView4 denoiser in miniature: 2 heads of 16 channels, patch 2, 3 size conditions of 4."""
    from diffusers import CogView4Transformer2DModel

    torch.manual_seed(0)
    return CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        attention_head_dim=16,
        num_attention_heads=2,
        text_embed_dim=12,
        time_embed_dim=8,
        condition_dim=4,
        sample_size=8,
    ).eval()


def cogview4_inputs(
    batch: int = 2, size=(6, 10), t=(700, 30), tables: bool = False, mask: bool = False, seed: int = 1
) -> dict:
    """One forward's inputs as CogView4Pipeline passes them: a (B, 4, H, W) latent (a 3x5 token grid
    by default), 5 text tokens, the size conditions; `tables`: also the model's own (cos, sin) image
    rows, as a caller may pass them; `mask`: a (B, 5) text mask padding row 0's last two tokens."""
    from diffusers.models.transformers.transformer_cogview4 import CogView4RotaryPosEmbed

    g = torch.Generator().manual_seed(seed)
    h, w = size
    x = torch.randn(batch, 4, h, w, generator=g)
    sizes = torch.tensor([[8 * h, 8 * w]] * batch, dtype=torch.float32)
    out = dict(
        hidden_states=x,
        encoder_hidden_states=torch.randn(batch, 5, 12, generator=g),
        timestep=torch.tensor(t[:batch], dtype=torch.float32),
        original_size=sizes,
        target_size=sizes.clone(),
        crop_coords=torch.zeros(batch, 2),
        return_dict=False,
    )
    if tables:
        out["image_rotary_emb"] = CogView4RotaryPosEmbed(16, 2, (256, 256))(x)
    if mask:
        m = torch.ones(batch, 5)
        m[0, -2:] = 0
        out["attention_mask"] = m
    return out


tiny("CogView4Transformer2DModel", "cogview4", make_tiny_cogview4, lambda: ((), cogview4_inputs(2)))


def make_tiny_chroma(layers: int = 2, single_layers: int = 2) -> nn.Module:
    """A Chroma denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6), double- then
    single-stream blocks, a one-layer approximator, patch 1 on 16 packed channels."""
    from diffusers import ChromaTransformer2DModel

    torch.manual_seed(0)
    return ChromaTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=1,
    ).eval()


def chroma_inputs(batch: int = 2, h: int = 6, w: int = 10, text: int = 5, sigma=(0.7, 0.3), seed: int = 1) -> dict:
    """One forward's inputs as ChromaPipeline passes them: packed tokens on an h x w grid, 2-D ids,
    t / 1000, and a (B, text + image) boolean mask over [text; image] in which row 0 masks its last
    text token and row 1 its last two (every image token is kept)."""
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    mask = torch.ones(batch, text + h * w, dtype=torch.bool)
    mask[0, text - 1 : text] = False
    mask[1:, text - 2 : text] = False
    return dict(
        hidden_states=torch.randn(batch, h * w, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, text, 24, generator=g),
        timestep=torch.tensor(sigma[:batch]),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=torch.zeros(text, 3),
        attention_mask=mask,
        return_dict=False,
    )


tiny("ChromaTransformer2DModel", "chroma", make_tiny_chroma, lambda: ((), chroma_inputs(2)))  # a 6x10 grid


def make_tiny_flux2(layers: int = 2, single_layers: int = 2) -> nn.Module:
    """A Flux 2 denoiser in miniature: 2 heads of 16 channels (four rotary axes of 4: t, row, column,
    l), double-stream then parallel single-stream blocks, no guidance embedding, patch 1 on 16
    packed channels."""
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(0)
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        timestep_guidance_channels=16,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    ).eval()


def flux2_ids(h: int, w: int, t: int = 0) -> torch.Tensor:
    """Flux2Pipeline's image ids: (t, row, column, 0) per token, row-major, (h * w, 4)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([torch.full_like(rows, t), rows, cols, torch.zeros_like(rows)], dim=-1).reshape(-1, 4)


def flux2_inputs(batch: int = 2, h: int = 6, w: int = 10, text: int = 5, sigma=(0.7, 0.3), seed: int = 1) -> dict:
    """One forward's inputs as Flux2Pipeline passes them: packed tokens on an h x w grid, (B, S, 4)
    ids (text ids (0, 0, 0, index)), t / 1000."""
    g = torch.Generator().manual_seed(seed)
    txt_ids = torch.zeros(text, 4, dtype=torch.long)
    txt_ids[:, 3] = torch.arange(text)
    return dict(
        hidden_states=torch.randn(batch, h * w, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, text, 24, generator=g),
        timestep=torch.tensor(sigma[:batch]),
        img_ids=flux2_ids(h, w).expand(batch, -1, -1),
        txt_ids=txt_ids.expand(batch, -1, -1),
        return_dict=False,
    )


tiny("Flux2Transformer2DModel", "flux2", make_tiny_flux2, lambda: ((), flux2_inputs(2)))  # a 6x10 grid
def make_tiny_hunyuan_dit(layers: int = 4) -> nn.Module:
    """A HunyuanDiT denoiser in miniature: 2 heads of 16 channels, patch 2, `layers` blocks (the
    second half fusing long skips from the first), 5 + 6 text tokens (24 and 16 channels), v1.2-style
    conditioning (no style or size embedding)."""
    from diffusers import HunyuanDiT2DModel

    torch.manual_seed(0)
    return HunyuanDiT2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        patch_size=2,
        sample_size=8,
        hidden_size=32,
        num_layers=layers,
        cross_attention_dim=24,
        cross_attention_dim_t5=16,
        pooled_projection_dim=8,
        text_len=5,
        text_len_t5=6,
        use_style_cond_and_image_meta_size=False,
    ).eval()


def hunyuan_dit_inputs(batch: int = 2, size=(12, 20), t=(700, 30), tables: bool = True, seed: int = 1) -> dict:
    """One forward's inputs as HunyuanDiTPipeline passes them: a (B, 4, H, W) latent (a 6x10 token
    grid by default), the two text embeddings with their masks (row 0 pads its last CLIP token and
    last two T5 tokens), timesteps on the 0-1000 scale, and (`tables`) the pipeline's (cos, sin)
    rotary rows of the token grid."""
    from diffusers.models.embeddings import get_2d_rotary_pos_embed
    from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import get_resize_crop_region_for_grid

    g = torch.Generator().manual_seed(seed)
    h, w = size
    mask, mask_t5 = torch.ones(batch, 5, dtype=torch.long), torch.ones(batch, 6, dtype=torch.long)
    mask[0, -1:] = 0
    mask_t5[0, -2:] = 0
    out = dict(
        hidden_states=torch.randn(batch, 4, h, w, generator=g),
        timestep=torch.tensor(t[:batch], dtype=torch.float32),
        encoder_hidden_states=torch.randn(batch, 5, 24, generator=g),
        text_embedding_mask=mask,
        encoder_hidden_states_t5=torch.randn(batch, 6, 16, generator=g),
        text_embedding_mask_t5=mask_t5,
        return_dict=False,
    )
    if tables:
        grid = (h // 2, w // 2)
        crops = get_resize_crop_region_for_grid(grid, 512 // 8 // 2)
        out["image_rotary_emb"] = get_2d_rotary_pos_embed(16, crops, grid, output_type="pt")
    return out


tiny("HunyuanDiT2DModel", "hunyuan-dit", make_tiny_hunyuan_dit, lambda: ((), hunyuan_dit_inputs(2)))  # a 6x10 grid
def make_tiny_lumina2(layers: int = 3, refiner_layers: int = 2, kv_heads: int = 1) -> nn.Module:
    """A Lumina-Image 2.0 denoiser in miniature: 2 query heads of 16 channels over one key/value head
    (grouped-query attention, as the 2B's 24 over 8), rotary axes 4 + 6 + 6, context- and
    noise-refiner blocks then the main blocks, patch 2 on 4 latent channels."""
    from diffusers import Lumina2Transformer2DModel

    torch.manual_seed(0)
    return Lumina2Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=layers,
        num_refiner_layers=refiner_layers,
        num_attention_heads=2,
        num_kv_heads=kv_heads,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),
        axes_lens=(32, 16, 16),
        cap_feat_dim=24,
    ).eval()


def lumina2_inputs(
    batch: int = 2, h: int = 6, w: int = 10, lengths=(5, 5), text: int = 6, t=(0.3, 0.8), seed: int = 1
) -> dict:
    """One forward's inputs as Lumina2Pipeline passes them: a (B, 4, 2h, 2w) latent, the timestep
    reversed to 1 - t / 1000 (0 is noise), captions right-padded to `text` tokens with a (B, text)
    mask whose row i keeps `lengths[i]` tokens. Equal lengths: the image starts at one offset in
    every row of the joint sequence; unequal: the model pads the shorter rows after their image."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, text, dtype=torch.long)
    for i in range(batch):
        mask[i, : lengths[i % len(lengths)]] = 1
    return dict(
        hidden_states=torch.randn(batch, 4, 2 * h, 2 * w, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_hidden_states=torch.randn(batch, text, 24, generator=g),
        encoder_attention_mask=mask,
        return_dict=False,
    )


tiny("Lumina2Transformer2DModel", "lumina2", make_tiny_lumina2, lambda: ((), lumina2_inputs(2)))  # a 6x10 grid
tiny(
    "Lumina2Transformer2DModel",
    "lumina2-mixed-captions",
    make_tiny_lumina2,
    lambda: ((), lumina2_inputs(2, lengths=(6, 3))),
)


def make_tiny_qwen_image21(layers: int = 4) -> nn.Module:
    """A Qwen-Image 2.1 denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6), unpatched
    8-channel latents, 12-channel prompt embeddings."""
    from diffusers import QwenImage21Transformer2DModel

    torch.manual_seed(0)
    return QwenImage21Transformer2DModel(
        patch_size=1,
        in_channels=8,
        out_channels=8,
        num_layers=layers,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=12,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def qwen_image21_inputs(
    batch: int = 2,
    h: int = 6,
    w: int = 10,
    text: int = 7,
    sigma=(0.7, 0.3),
    cond: tuple[int, int] | None = None,
    mask: bool = False,
    seed: int = 3,
) -> dict:
    """One forward's inputs as QwenImage21Pipeline passes them: t / 1000, the prompt's embeddings and
    its `img_mask` (one slot per 2x2 latent tokens) with the target's slots appended, the latents
    (condition images first, the target last) and `img_shapes`. `cond`: a (rows, columns) condition
    image whose slots sit at prompt positions 2 on; `mask`: a padded prompt (row 0's last two tokens)."""
    g = torch.Generator().manual_seed(seed)
    c = cond[0] * cond[1] if cond else 0
    vlm = text + c // 4  # the prompt's sequence: text and the condition image's slots
    img_mask = torch.zeros(batch, vlm + h * w // 4, dtype=torch.bool)
    img_mask[:, 2 : 2 + c // 4] = True
    img_mask[:, vlm:] = True
    kw = dict(
        hidden_states=torch.randn(batch, c + h * w, 8, generator=g),
        encoder_hidden_states=torch.randn(batch, vlm, 12, generator=g),
        timestep=torch.tensor(sigma[:batch]),
        img_shapes=[[*([(1, *cond)] if cond else []), (1, h, w)]] * batch,
        img_mask=img_mask,
    )
    if mask:
        m = torch.ones(batch, vlm, dtype=torch.bool)
        m[0, -2:] = False
        kw["encoder_hidden_states_mask"] = m
    return kw


tiny(
    "QwenImage21Transformer2DModel",
    "qwen-image-2.1",
    make_tiny_qwen_image21,
    lambda: ((), qwen_image21_inputs(2, cond=(2, 4))),  # a 6x10 target after a 2x4 condition image
)


def _make_wan_like(cls_name: str, layers: int, head_dim: int, i2v: bool, **extra) -> nn.Module:
    """A denoiser of Wan's block in miniature (the Wan relatives): 2 heads, patch (1, 2, 2), 4 latent
    channels, 16 text channels (the inputs of `conftest.wan_inputs`)."""
    import diffusers

    torch.manual_seed(0)
    if i2v:
        extra.update(image_dim=8, added_kv_proj_dim=2 * head_dim)
    return getattr(diffusers, cls_name)(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=head_dim,
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


def make_tiny_skyreels_v2(layers: int = 4, i2v: bool = False, **extra) -> nn.Module:
    """A SkyReels-V2 denoiser in miniature: 2 heads of 16 channels."""
    return _make_wan_like("SkyReelsV2Transformer3DModel", layers, 16, i2v, **extra)


def make_tiny_wan_vace(layers: int = 4, vace_layers=(0, 2)) -> nn.Module:
    """A Wan VACE denoiser in miniature: 2 heads of 16 channels, control blocks beside main blocks
    `vace_layers`, 6 control latent channels."""
    return _make_wan_like("WanVACETransformer3DModel", layers, 16, False, vace_layers=list(vace_layers), vace_in_channels=6)


def make_tiny_chronoedit(layers: int = 4, i2v: bool = False) -> nn.Module:
    """A ChronoEdit denoiser in miniature: 2 heads of 12 channels (its rotary tables split the head
    dimension two ways that agree only when it is a multiple of 6), temporal skip 8."""
    return _make_wan_like("ChronoEditTransformer3DModel", layers, 12, i2v)


def wan_vace_inputs(batch: int = 2, grid=(2, 4, 6), control_frames: int | None = None, seed: int = 1, **kw) -> dict:
    """`wan_inputs` plus VACE's control latents (6 channels; `control_frames` fewer frames than the
    video: the model pads the control tokens with zeros) and a scale per control block."""
    from conftest import wan_inputs

    out = wan_inputs(batch, grid=grid, seed=seed, **kw)
    f, h, w = grid
    g = torch.Generator().manual_seed(seed + 100)
    out["control_hidden_states"] = torch.randn(batch, 6, control_frames or f, 2 * h, 2 * w, generator=g)
    return out


tiny("SkyReelsV2Transformer3DModel", "skyreels-v2", make_tiny_skyreels_v2, lambda: ((), wan_inputs(2, grid=(2, 4, 6))))
tiny("WanVACETransformer3DModel", "wan-vace", make_tiny_wan_vace, lambda: ((), wan_vace_inputs(2)))
tiny("ChronoEditTransformer3DModel", "chronoedit", make_tiny_chronoedit, lambda: ((), wan_inputs(2, grid=(2, 4, 6))))


def make_tiny_flux_like(cls_name: str, layers: int = 2, single_layers: int = 2, **extra) -> nn.Module:
    """A denoiser of Flux's blocks in miniature (the Flux relatives): 2 heads of 16 channels (rotary
    axes 4 + 6 + 6), double- then single-stream blocks, 16 packed latent channels, 24 text channels."""
    import diffusers

    torch.manual_seed(0)
    return getattr(diffusers, cls_name)(
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=[4, 6, 6],
        **extra,
    ).eval()


def flux_like_inputs(
    cls_name: str, batch: int = 2, h: int = 6, w: int = 10, text: int = 5, seed: int = 1, t=None, start: int | None = None
) -> dict:
    """One forward's inputs as each relative's pipeline passes them: packed tokens on an h x w grid,
    2-D ids, the timestep on the scale the pipeline uses (Bria: 0-1000; LongCat-Image, Ovis-Image:
    t / 1000). LongCat-Image's ids: text (0, i, i), image (1, start + row, start + col) with `start` the
    text length (its pipeline's 512); `start` is also taken by the others, where ids start at 0."""
    g = torch.Generator().manual_seed(seed)
    longcat = cls_name == "LongCatImageTransformer2DModel"
    offset = (text if start is None else start) if longcat else (start or 0)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 0] = 1.0 if longcat else 0.0
    img_ids[..., 1] = torch.arange(h)[:, None] + offset
    img_ids[..., 2] = torch.arange(w)[None, :] + offset
    txt_ids = torch.zeros(text, 3)
    if longcat:
        txt_ids[:, 1] = txt_ids[:, 2] = torch.arange(text)
    bria = cls_name == "BriaTransformer2DModel"
    if t is None:
        t = (700.0, 300.0) if bria else (0.7, 0.3)
    return dict(
        hidden_states=torch.randn(batch, h * w, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, text, 24, generator=g),
        timestep=torch.tensor(t[:batch]),
        img_ids=img_ids.reshape(-1, 3),
        txt_ids=txt_ids,
        return_dict=False,
    )


def _flux_like(cls_name: str) -> tuple[Callable[[], nn.Module], Callable[[], Inputs]]:
    return (lambda: make_tiny_flux_like(cls_name)), (lambda: ((), flux_like_inputs(cls_name, 2)))


tiny("BriaTransformer2DModel", "bria", *_flux_like("BriaTransformer2DModel"))  # a 6x10 grid
tiny("LongCatImageTransformer2DModel", "longcat-image", *_flux_like("LongCatImageTransformer2DModel"))
tiny("OvisImageTransformer2DModel", "ovis-image", *_flux_like("OvisImageTransformer2DModel"))


def make_tiny_consisid(layers: int = 4, face: bool = False) -> nn.Module:
    """A ConsisID denoiser in miniature: CogVideoX's tiny config (2 heads of 16 channels, rotary
    positions, no temporal patch); `face`: with the identity branch (a 2-layer facial extractor and a
    perceiver cross-attention after every second block), 21 face channels (2/3 of the 32 inner)."""
    from diffusers import ConsisIDTransformer3DModel

    torch.manual_seed(0)
    extra = {}
    if face:
        extra = dict(
            is_train_face=True, cross_attn_interval=2, cross_attn_dim_head=8, cross_attn_num_heads=2, LFE_id_dim=6,
            LFE_vit_dim=8, LFE_depth=2, LFE_dim_head=4, LFE_num_heads=2, LFE_num_id_token=2, LFE_num_querie=3,
            LFE_output_dim=21, LFE_ff_mult=1, LFE_num_scale=2,
        )
    return ConsisIDTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=12,
        num_layers=layers,
        sample_width=10,
        sample_height=6,
        sample_frames=9,
        patch_size=2,
        max_text_seq_length=5,
        use_rotary_positional_embeddings=True,
        **extra,
    ).eval()


def consisid_inputs(batch: int = 2, frames: int = 3, size=(6, 10), face: bool = False, seed: int = 1, **kw) -> dict:
    """`cogvideox_inputs` (rotary video rows) and, with `face`, the identity embedding and two ViT
    feature maps the pipeline passes as `id_cond` / `id_vit_hidden`."""
    out = cogvideox_inputs(batch, frames=frames, size=size, seed=seed, **kw)
    if face:
        g = torch.Generator().manual_seed(seed + 200)
        out["id_cond"] = torch.randn(batch, 6, generator=g)
        out["id_vit_hidden"] = [torch.randn(batch, 4, 8, generator=g) for _ in range(2)]
    return out


tiny("ConsisIDTransformer3DModel", "consisid", make_tiny_consisid, lambda: ((), consisid_inputs(2)))  # 3x3x5
tiny("ConsisIDTransformer3DModel", "consisid-face", lambda: make_tiny_consisid(face=True), lambda: ((), consisid_inputs(2, face=True)))


def make_tiny_hidream(layers: int = 2, single_layers: int = 2, experts: int = 4) -> nn.Module:
    """A HiDream-I1 denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6), double- then
    single-stream blocks with a mixture of `experts` feed-forwards (top 2; 0: a plain SwiGLU), patch 2,
    and a 16 x 16 latent maximum, so a non-square latent is padded to 64 tokens."""
    from diffusers import HiDreamImageTransformer2DModel

    torch.manual_seed(0)
    return HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=16,
        num_attention_heads=2,
        caption_channels=[12, 10],
        text_emb_dim=8,
        num_routed_experts=experts,
        num_activated_experts=2,
        axes_dims_rope=(4, 6, 6),
        max_resolution=(16, 16),
        llama_layers=list(range(layers + single_layers)),
    ).eval()


def hidream_inputs(batch: int = 2, size=(12, 20), t=(700, 30), layers: int = 4, seed: int = 1) -> dict:
    """One forward's inputs as HiDreamImagePipeline passes them: a (B, 4, H, W) latent (a 6 x 10 token
    grid by default, padded by the model), 5 T5 tokens, `layers` Llama layers of 4 tokens, pooled text."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return dict(
        hidden_states=torch.randn(batch, 4, h, w, generator=g),
        timesteps=torch.tensor(t[:batch], dtype=torch.float32),
        encoder_hidden_states_t5=torch.randn(batch, 5, 12, generator=g),
        encoder_hidden_states_llama3=torch.randn(layers, batch, 4, 10, generator=g),
        pooled_embeds=torch.randn(batch, 8, generator=g),
        return_dict=False,
    )


tiny("HiDreamImageTransformer2DModel", "hidream", make_tiny_hidream, lambda: ((), hidream_inputs(2)))  # 6x10, padded to 64


def make_tiny_z_image(layers: int = 4, refiners: int = 1) -> nn.Module:
    """A Z-Image denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6), `refiners`
    noise- and context-refiner blocks, `layers` main blocks, patch 2 on 4 latent channels."""
    from diffusers import ZImageTransformer2DModel

    torch.manual_seed(0)
    model = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=4,
        dim=32,
        n_layers=layers,
        n_refiner_layers=refiners,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=12,
        axes_dims=[4, 6, 6],
        axes_lens=[128, 32, 32],
    ).eval()
    with torch.no_grad():  # the pad tokens start at zero: make them tokens like any other
        model.x_pad_token.normal_()
        model.cap_pad_token.normal_()
    return model


def z_image_inputs(
    batch: int = 2, h: int = 6, w: int = 10, captions=(5, 35), t=(0.3, 0.7), frames: int = 1, seed: int = 1
) -> dict:
    """One forward's inputs as ZImagePipeline passes them: a list of (4, frames, 2h, 2w) latents (an
    h x w token grid, padded by the model to a multiple of 32), a list of captions of `captions`
    tokens (5 and 35: padded to 32 and 64, so the joint sequences differ in length and the model
    masks the shorter one's batch padding, and the image rotary rows differ per sample), and
    t = (1000 - T) / 1000 per sample."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=[torch.randn(4, frames, 2 * h, 2 * w, generator=g) for _ in range(batch)],
        t=torch.tensor(t[:batch]),
        cap_feats=[torch.randn(captions[i % len(captions)], 12, generator=g) for i in range(batch)],
    )


tiny("ZImageTransformer2DModel", "z-image", make_tiny_z_image, lambda: ((), z_image_inputs(2)))  # a 6x10 grid


def make_tiny_hunyuan_video15(layers: int = 4, patch_size_t: int = 1) -> nn.Module:
    """A HunyuanVideo 1.5 denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6),
    `layers` dual-stream blocks, one token-refiner layer, patch 2 (and `patch_size_t`), MLLM text of
    16 channels, ByT5 text of 12, vision tokens of 8."""
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(0)
    return HunyuanVideo15Transformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=patch_size_t,
        text_embed_dim=16,
        text_embed_2_dim=12,
        image_embed_dim=8,
        rope_axes_dim=(4, 6, 6),
    ).eval()


def hunyuan_video15_inputs(
    batch: int = 2, latent=(2, 12, 20), t=(700, 30), image: bool = True, seed: int = 1
) -> dict:
    """One forward's inputs as the HunyuanVideo 1.5 pipelines pass them: a (B, 4, F, H, W) latent (a
    2x6x10 token grid by default), 5 MLLM tokens (row 0 pads the last one, row 1 the last two), 4
    ByT5 tokens (row 0 pads the last two), and 3 vision tokens (`image`: image-to-video; else zeros,
    which the model masks out as text-to-video)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5)
    mask[0, -1:] = 0
    mask[1:, -2:] = 0
    mask_2 = torch.ones(batch, 4)
    mask_2[0, -2:] = 0
    vision = torch.randn(batch, 3, 8, generator=g)
    return dict(
        hidden_states=torch.randn(batch, 4, *latent, generator=g),
        timestep=torch.tensor(t[:batch], dtype=torch.float32),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        encoder_attention_mask=mask,
        encoder_hidden_states_2=torch.randn(batch, 4, 12, generator=g),
        encoder_attention_mask_2=mask_2,
        image_embeds=vision if image else torch.zeros_like(vision),
        return_dict=False,
    )


tiny(
    "HunyuanVideo15Transformer3DModel",
    "hunyuan-video-1.5",
    make_tiny_hunyuan_video15,
    lambda: ((), hunyuan_video15_inputs(2)),
)


def make_tiny_hunyuan_image(
    layers: int = 2, single_layers: int = 2, patch_size=(2, 2), byt5: bool = True
) -> nn.Module:
    """A HunyuanImage 2.1 denoiser in miniature: 2 heads of 16 channels, dual- then single-stream
    blocks, one token-refiner layer, `patch_size` (two entries: text-to-image on (B, C, H, W)
    latents, rotary axes 8 + 8; three: the refiner's (B, C, F, H, W) latents, axes 4 + 6 + 6), MLLM
    text of 16 channels and, with `byt5`, ByT5 text of 12."""
    from diffusers import HunyuanImageTransformer2DModel

    torch.manual_seed(0)
    return HunyuanImageTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=layers,
        num_single_layers=single_layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=tuple(patch_size),
        text_embed_dim=16,
        text_embed_2_dim=12 if byt5 else None,
        rope_axes_dim=(8, 8) if len(patch_size) == 2 else (4, 6, 6),
    ).eval()


def hunyuan_image_inputs(
    batch: int = 2, latent=(12, 20), t=(700, 30), byt5: bool = True, seed: int = 1
) -> dict:
    """One forward's inputs as HunyuanImagePipeline passes them: a (B, 4, H, W) latent (a 6x10 token
    grid by default; give `latent` three sizes for the refiner's (B, 4, F, H, W)), 5 MLLM tokens
    (row 0 pads the last one, row 1 the last two) and, with `byt5`, 4 ByT5 tokens (row 0 pads the
    last two)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5)
    mask[0, -1:] = 0
    mask[1:, -2:] = 0
    kw = dict(
        hidden_states=torch.randn(batch, 4, *latent, generator=g),
        timestep=torch.tensor(t[:batch], dtype=torch.float32),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        encoder_attention_mask=mask,
        return_dict=False,
    )
    if byt5:
        mask_2 = torch.ones(batch, 4)
        mask_2[0, -2:] = 0
        kw.update(encoder_hidden_states_2=torch.randn(batch, 4, 12, generator=g), encoder_attention_mask_2=mask_2)
    return kw


tiny("HunyuanImageTransformer2DModel", "hunyuan-image", make_tiny_hunyuan_image, lambda: ((), hunyuan_image_inputs(2)))
tiny(
    "HunyuanImageTransformer2DModel",
    "hunyuan-image-refiner",
    lambda: make_tiny_hunyuan_image(patch_size=(1, 2, 2), byt5=False),
    lambda: ((), hunyuan_image_inputs(2, latent=(1, 12, 20), byt5=False)),
)


def make_tiny_ltx2(layers: int = 2, split: bool = False) -> nn.Module:
    """An LTX-2 denoiser in miniature: video 2 heads of 16 channels (inner 32, not a multiple of 6, so
    the rotary tables carry padding channels), audio 2 heads of 8, 4 latent channels each, text
    captions of 16 channels. `split`: LTX-2.3's options (split rotary tables, gated attention, the
    prompt's cross-attention modulation, the perturbed-attention processor of spatio-temporal guidance)."""
    from diffusers import LTX2VideoTransformer3DModel

    options = {}
    if split:
        options = dict(
            rope_type="split", gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
            audio_cross_attn_mod=True, perturbed_attn=True,
        )
    torch.manual_seed(0)
    return LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=8,
        audio_cross_attention_dim=16,
        num_layers=layers,
        caption_channels=16,
        **options,
    ).eval()


def ltx2_coords(batch: int, grid=(2, 6, 10), audio: int = 5, fps: float = 24.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (video, audio) coordinates the LTX-2 pipelines make with the model's rotary modules (at the
    published VAE scale factors and causal offset; the coordinates do not depend on the widths)."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2AudioVideoRotaryPosEmbed

    cpu = torch.device("cpu")
    video = LTX2AudioVideoRotaryPosEmbed(dim=32).prepare_video_coords(batch, *grid, cpu, fps=fps)
    sound = LTX2AudioVideoRotaryPosEmbed(dim=16, scale_factors=(4,), modality="audio")
    return video, sound.prepare_audio_coords(batch, audio, cpu)


def ltx2_inputs(
    batch: int = 2, grid=(2, 6, 10), audio: int = 5, t=(700, 30), per_token: bool = False, appended: int = 0,
    coords: bool = True, seed: int = 1,
) -> dict:
    """One forward's inputs as LTX2Pipeline passes them: packed video tokens on a frames x height x
    width grid (and the grid as num_frames/height/width), `audio` audio tokens, 5 text tokens per
    stream (the last one masked), t on the 0-1000 scale (also as `sigma`, which LTX-2.3 reads), and
    the pipeline's video and audio coordinates (`coords`). `per_token`: image-to-video's (B, S)
    timesteps, the first frame's tokens at 0. `appended`: LTX2ConditionPipeline-style keyframe tokens
    after the grid's, at the first frame's first positions, their timesteps 0 (per-token timesteps
    come with the audio's own `audio_timestep`)."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    n = f * h * w + appended
    mask = torch.ones(batch, 5)
    mask[:, -1] = 0
    ts = torch.tensor(t[:batch], dtype=torch.float32)
    out = dict(
        hidden_states=torch.randn(batch, n, 4, generator=g),
        audio_hidden_states=torch.randn(batch, audio, 4, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        audio_encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        timestep=ts,
        sigma=ts,
        encoder_attention_mask=mask,
        audio_encoder_attention_mask=mask,
        num_frames=f,
        height=h,
        width=w,
        audio_num_frames=audio,
        return_dict=False,
    )
    if coords:
        video, sound = ltx2_coords(batch, grid, audio)
        if appended:
            video = torch.cat([video, video[:, :, :appended]], dim=2)
        out.update(video_coords=video, audio_coords=sound)
    if per_token or appended:
        tok = ts[:, None].expand(batch, n).clone()
        if per_token:
            tok[:, : h * w] = 0
        if appended:
            tok[:, n - appended :] = 0
        out.update(timestep=tok, audio_timestep=ts)  # the audio's own step, as the pipelines pass it
    return out


# 4 blocks: the default placement takes block 1; a 2x6x10 video grid, 5 audio tokens
tiny("LTX2VideoTransformer3DModel", "ltx2", lambda: make_tiny_ltx2(4), lambda: ((), ltx2_inputs(2)))
tiny("LTX2VideoTransformer3DModel", "ltx2.3-split", lambda: make_tiny_ltx2(4, split=True), lambda: ((), ltx2_inputs(2, appended=6)))


def make_tiny_mochi(layers: int = 3) -> nn.Module:
    """A Mochi denoiser in miniature: 2 heads of 16 channels on the video stream (32 wide) and a text
    stream 24 wide, patch 2, `layers` blocks (the last one `context_pre_only`). The learned rotary
    frequencies start at zero in diffusers (no rotation at all); here they are drawn at random, so
    the rotary positions matter."""
    from diffusers import MochiTransformer3DModel

    torch.manual_seed(0)
    model = MochiTransformer3DModel(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=layers,
        pooled_projection_dim=24,
        in_channels=4,
        text_embed_dim=16,
        time_embed_dim=16,
        max_sequence_length=5,
    ).eval()
    with torch.no_grad():
        model.pos_frequencies.normal_()
    return model


def mochi_inputs(batch: int = 2, latent=(3, 12, 20), t=(300.0, 970.0), seed: int = 1) -> dict:
    """One forward's inputs as MochiPipeline passes them: a (B, 4, F, H, W) latent (3 frames of a 6x10
    token grid), 5 text tokens of which row 0 pads the last one and row 1 the last two, and Mochi's
    reversed timesteps (1000 - the noise level)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5)
    mask[0, -1:] = 0
    mask[1:, -2:] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, *latent, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, 16, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_attention_mask=mask,
        return_dict=False,
    )


tiny("MochiTransformer3DModel", "mochi", make_tiny_mochi, lambda: ((), mochi_inputs(2)))  # 3x6x10 tokens


def make_tiny_cosmos(layers: int = 3, learnable: bool = False, in_channels: int = 4) -> nn.Module:
    """A Cosmos denoiser in miniature: 2 heads of 16 channels (rotary frequencies 8 temporal + 4 + 4
    spatial, as two halves), patch (1, 2, 2), `layers` blocks. `learnable`: Cosmos 1.0's learnable
    position embedding (and its EDM timesteps); otherwise Cosmos 2.x's. The padding-mask channel is
    off (the model resizes that mask with torchvision, which the test environment lacks)."""
    from diffusers import CosmosTransformer3DModel

    torch.manual_seed(0)
    model = CosmosTransformer3DModel(
        in_channels=in_channels,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=layers,
        mlp_ratio=2.0,
        text_embed_dim=12,
        adaln_lora_dim=8,
        max_size=(8, 32, 32),
        patch_size=(1, 2, 2),
        rope_scale=(1.0, 3.0, 3.0),
        concat_padding_mask=False,
        extra_pos_embed_type="learnable" if learnable else None,
    ).eval()
    if learnable:
        with torch.no_grad():
            for p in model.learnable_pos_embed.parameters():
                p.normal_()
    return model


def cosmos_inputs(
    batch: int = 2, latent=(3, 12, 20), t=(0.7, 0.03), condition: bool = False, per_frame: bool = False, seed: int = 1
) -> dict:
    """One forward's inputs as the Cosmos 2 pipelines pass them: a (B, 4, F, H, W) latent (3 frames of a
    6x10 token grid), 5 text tokens with a text mask (row 1 pads its last two), and the noise fraction
    t in [0, 1]. `condition`: video-to-world's condition_mask channel (the first frame given);
    `per_frame`: its (B, 1, F, 1, 1) timesteps, the first frame nearly clean."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5)
    mask[1:, -2:] = 0
    frames = latent[0]
    out = dict(
        hidden_states=torch.randn(batch, 4, *latent, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_hidden_states=torch.randn(batch, 5, 12, generator=g),
        attention_mask=mask,
        return_dict=False,
    )
    if condition:
        cond = torch.zeros(batch, 1, *latent)
        cond[:, :, 0] = 1.0
        out["condition_mask"] = cond
    if per_frame:
        ts = torch.tensor(t[:batch])[:, None, None, None, None].repeat(1, 1, frames, 1, 1)
        ts[:, :, 0] = 0.001
        out["timestep"] = ts
    return out


tiny("CosmosTransformer3DModel", "cosmos2", make_tiny_cosmos, lambda: ((), cosmos_inputs(2)))  # 3x6x10 tokens
tiny(
    "CosmosTransformer3DModel",
    "cosmos2-video2world",
    lambda: make_tiny_cosmos(in_channels=5),
    lambda: ((), cosmos_inputs(2, condition=True, per_frame=True)),
)


def make_tiny_kandinsky5(layers: int = 4, text_layers: int = 1, visual_cond: bool = False) -> nn.Module:
    """A Kandinsky 5 denoiser in miniature: 2 heads of 16 channels (rotary axes 4 + 6 + 6), one text
    block, `layers` visual blocks, patch (1, 2, 2) on 4 latent channels. The modulation layers start
    at zero in diffusers (every block an identity): they are drawn at random here."""
    from diffusers import Kandinsky5Transformer3DModel

    torch.manual_seed(0)
    model = Kandinsky5Transformer3DModel(
        in_visual_dim=4,
        in_text_dim=12,
        in_text_dim2=8,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=32,
        ff_dim=64,
        num_text_blocks=text_layers,
        num_visual_blocks=layers,
        axes_dims=(4, 6, 6),
        visual_cond=visual_cond,
    ).eval()
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__ == "Kandinsky5Modulation":
                module.out_layer.weight.normal_(std=0.2)
                module.out_layer.bias.normal_(std=0.2)
    return model


def kandinsky5_inputs(
    batch: int = 2, grid=(2, 6, 10), text: int = 5, t=(700.0, 30.0), visual_cond: bool = False, seed: int = 1
) -> dict:
    """One forward's inputs as Kandinsky5T2VPipeline passes them: a channels-last (B, F, 2H, 2W, 4)
    latent for an F x H x W token grid (with `visual_cond`, the conditioning frame and its mask as 5
    more channels), `text` prompt tokens, the pooled prompt, and the rotary positions of the grid and
    the text. The model returns its output tensor itself with return_dict=False."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    x = torch.randn(batch, f, 2 * h, 2 * w, 4, generator=g)
    if visual_cond:
        cond, mask = torch.zeros_like(x), torch.zeros(batch, f, 2 * h, 2 * w, 1)
        cond[:, :1], mask[:, :1] = torch.randn(batch, 1, 2 * h, 2 * w, 4, generator=g), 1.0
        x = torch.cat([x, cond, mask], dim=-1)
    return dict(
        hidden_states=x,
        encoder_hidden_states=torch.randn(batch, text, 12, generator=g),
        timestep=torch.tensor(t[:batch]),
        pooled_projections=torch.randn(batch, 8, generator=g),
        visual_rope_pos=[torch.arange(f), torch.arange(h), torch.arange(w)],
        text_rope_pos=torch.arange(text),
    )


# Kandinsky 5 returns its output tensor itself with return_dict=False: `Tiny.forward` compares sample 0.
tiny("Kandinsky5Transformer3DModel", "kandinsky5", make_tiny_kandinsky5, lambda: ((), kandinsky5_inputs(2)))
tiny(
    "Kandinsky5Transformer3DModel",
    "kandinsky5-i2v",
    lambda: make_tiny_kandinsky5(visual_cond=True),
    lambda: ((), kandinsky5_inputs(2, visual_cond=True)),
)


def make_tiny_sana_video(layers: int = 4) -> nn.Module:
    """A SANA-Video denoiser in miniature: 2 heads of 16 channels (Wan's rotary split 8 + 4 + 4),
    linear self-attention and cross-attention of 2 heads of 16, patch (1, 2, 2) on 4 latent channels."""
    from diffusers import SanaVideoTransformer3DModel

    torch.manual_seed(0)
    return SanaVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=layers,
        num_cross_attention_heads=2,
        cross_attention_head_dim=16,
        cross_attention_dim=32,
        caption_channels=12,
        mlp_ratio=2.0,
        sample_size=8,
        patch_size=(1, 2, 2),
    ).eval()


def sana_video_inputs(batch: int = 2, grid=(2, 6, 10), t=(700.0, 30.0), i2v: bool = False, seed: int = 1) -> dict:
    """One forward's inputs as SanaVideoPipeline passes them: a (B, 4, F, 2H, 2W) latent for an
    F x H x W token grid, 5 text tokens of which row 0 pads the last one and row 1 the last two, and
    the timesteps; with `i2v`, SanaImageToVideoPipeline's per-token timesteps (B, 1, F, H, W), 0 on
    the conditioning frame."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    mask = torch.ones(batch, 5)
    mask[0, -1:] = 0
    mask[1:, -2:] = 0
    timestep = torch.tensor(t[:batch])
    if i2v:
        cond = torch.zeros(batch, 1, f, h, w)
        cond[:, :, 0] = 1.0
        timestep = timestep[:, None, None, None, None] * (1 - cond)
    return dict(
        hidden_states=torch.randn(batch, 4, f, 2 * h, 2 * w, generator=g),
        encoder_hidden_states=torch.randn(batch, 5, 12, generator=g),
        encoder_attention_mask=mask,
        timestep=timestep,
        return_dict=False,
    )


tiny("SanaVideoTransformer3DModel", "sana-video", make_tiny_sana_video, lambda: ((), sana_video_inputs(2)))
tiny("SanaVideoTransformer3DModel", "sana-video-i2v", make_tiny_sana_video, lambda: ((), sana_video_inputs(2, i2v=True)))


def make_tiny_easyanimate(layers: int = 4, mmdit_layers: int | None = None) -> nn.Module:
    """An EasyAnimate denoiser in miniature: 2 heads of 16 channels, patch 2 on 4 latent channels,
    12 text channels; every block MMDiT (as published) unless `mmdit_layers` says fewer."""
    from diffusers import EasyAnimateTransformer3DModel

    torch.manual_seed(0)
    return EasyAnimateTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        patch_size=2,
        num_layers=layers,
        mmdit_layers=layers if mmdit_layers is None else mmdit_layers,
        time_embed_dim=16,
        text_embed_dim=12,
    ).eval()


def easyanimate_inputs(batch: int = 2, grid=(2, 6, 10), text: int = 5, t=(700.0, 30.0), seed: int = 1) -> dict:
    """One forward's inputs as EasyAnimatePipeline passes them: a (B, 4, F, 2H, 2W) latent for an
    F x H x W token grid, `text` prompt tokens and the timesteps (the model makes its rotary tables)."""
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    return dict(
        hidden_states=torch.randn(batch, 4, f, 2 * h, 2 * w, generator=g),
        timestep=torch.tensor(t[:batch]),
        encoder_hidden_states=torch.randn(batch, text, 12, generator=g),
        return_dict=False,
    )


tiny("EasyAnimateTransformer3DModel", "easyanimate", make_tiny_easyanimate, lambda: ((), easyanimate_inputs(2)))
