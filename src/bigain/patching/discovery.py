"""Which modules of a supported diffusers denoiser to hook, and at which grid level each sits."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SUPPORTED = ("UNet2DConditionModel", "DiTTransformer2DModel", "PixArtTransformer2DModel")

# Paper placement on DiT-XL/2 (spec section 2): blocks 1-5 and 7-11 (0-based) of 28.
DIT_DEFAULT_BLOCKS = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)


@dataclass
class BlockSite:
    """One transformer block that a method may act on."""

    index: int  # position among the model's transformer blocks, in forward order
    name: str  # module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0"
    block: nn.Module
    level: int  # grid is `level` times coarser than the latent grid (1 = full resolution)


@dataclass
class ModelInfo:
    kind: str  # "unet" | "dit" | "pixart"
    denoiser: nn.Module
    sites: list[BlockSite]
    patch_size: int  # latent pixels per token side at level 1 (1 on U-Nets)
    default_blocks: tuple[int, ...] | None  # None: placement by level (max_downsample)
    default_metric: str  # "block" (block input) or "attn" (attention input)
    sample_size: tuple[int, int] | None  # the config's latent size, for the report


def resolve_denoiser(model_or_pipeline: object) -> nn.Module:
    """The denoiser of a pipeline (`unet`/`transformer`), a bundle (`denoiser`) or the model itself."""
    for attr in ("denoiser", "unet", "transformer"):
        inner = getattr(model_or_pipeline, attr, None)
        if isinstance(inner, nn.Module):
            return inner
    if isinstance(model_or_pipeline, nn.Module):
        return model_or_pipeline
    raise TypeError(
        f"expected a diffusers pipeline or model, got {type(model_or_pipeline).__name__}; "
        f"supported denoisers: {', '.join(SUPPORTED)}"
    )


def _is_transformer_block(m: nn.Module) -> bool:
    return hasattr(m, "attn1") and hasattr(m, "norm1") and hasattr(m, "ff")


def _unet_sites(unet: nn.Module) -> list[BlockSite]:
    sites: list[BlockSite] = []

    def add(prefix: str, container: nn.Module, level: int) -> None:
        for name, m in container.named_modules():
            if _is_transformer_block(m):
                sites.append(BlockSite(len(sites), f"{prefix}.{name}" if name else prefix, m, level))

    level = 1
    for i, down in enumerate(unet.down_blocks):
        if hasattr(down, "attentions"):
            add(f"down_blocks.{i}.attentions", down.attentions, level)
        if getattr(down, "downsamplers", None) is not None:
            level *= 2
    if getattr(unet, "mid_block", None) is not None and hasattr(unet.mid_block, "attentions"):
        add("mid_block.attentions", unet.mid_block.attentions, level)
    for i, up in enumerate(unet.up_blocks):
        if hasattr(up, "attentions"):
            add(f"up_blocks.{i}.attentions", up.attentions, level)
        if getattr(up, "upsamplers", None) is not None:
            level //= 2
    return sites


def _sample_size(cfg: object) -> tuple[int, int] | None:
    s = getattr(cfg, "sample_size", None)
    if s is None:
        return None
    if isinstance(s, int):
        return (s, s)
    return (int(s[0]), int(s[1]))


def inspect_model(model_or_pipeline: object) -> ModelInfo:
    """Classify the denoiser and list its transformer blocks with their levels."""
    den = resolve_denoiser(model_or_pipeline)
    cls = type(den).__name__
    if cls == "UNet2DConditionModel" or (hasattr(den, "down_blocks") and hasattr(den, "up_blocks")):
        return ModelInfo("unet", den, _unet_sites(den), 1, None, "block", _sample_size(den.config))
    if cls in ("DiTTransformer2DModel", "PixArtTransformer2DModel"):
        blocks = den.transformer_blocks
        sites = [BlockSite(i, f"transformer_blocks.{i}", b, 1) for i, b in enumerate(blocks)]
        kind = "dit" if cls.startswith("DiT") else "pixart"
        patch = int(den.config.patch_size)
        return ModelInfo(kind, den, sites, patch, DIT_DEFAULT_BLOCKS, "attn", _sample_size(den.config))
    raise TypeError(
        f"bigain does not support {cls}; supported denoisers: {', '.join(SUPPORTED)} "
        f"(or a pipeline holding one as `unet`/`transformer`)"
    )
