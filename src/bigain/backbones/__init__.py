"""Backbone adapters, found by `find_backbone`.

A transformer family is a `BackboneSpec` record (`spec.py`; DiT/PixArt, SD3, and the families in
`families.py`); a family that data cannot describe is a `Backbone` subclass written as code (U-Nets,
Flux). `register` adds an adapter (or a spec) at run time; `unregister` takes it out again.
"""

from __future__ import annotations

from torch import nn

from .base import PAPER_DIT_BLOCKS, Backbone, Block, ForwardInfo, as_timesteps, relative_placement
from .chroma import ChromaBackbone
from .cogvideox import CogVideoXBackbone
from .cogvideox_relatives import ConsisIDBackbone
from .cogview4 import CogView4Backbone
from .cosmos import CosmosBackbone
from .dit import DiTBackbone
from .easyanimate import EasyAnimateBackbone
from .families import SPECS
from .flux import FluxBackbone
from .flux2 import Flux2Backbone
from .flux_relatives import BriaBackbone, LongCatImageBackbone, OvisImageBackbone
from .hidream import HiDreamBackbone
from .hunyuan_dit import HunyuanDiTBackbone
from .hunyuan_video import HunyuanVideoBackbone
from .hunyuan_video_relatives import HunyuanImageBackbone, HunyuanVideo15Backbone
from .kandinsky import Kandinsky5Backbone
from .ltx import LTXBackbone
from .ltx2 import LTX2Backbone
from .lumina2 import Lumina2Backbone
from .mochi import MochiBackbone
from .qwen_image import QwenImageBackbone
from .qwen_image21 import QwenImage21Backbone
from .sana_video import SanaVideoBackbone
from .sd3 import SD3Backbone
from .spec import BackboneSpec, SpecBackbone, Stack
from .unet import UNetBackbone
from .wan import WanBackbone
from .wan_relatives import ChronoEditBackbone, SkyReelsV2Backbone, WanVACEBackbone
from .z_image import ZImageBackbone

BACKBONES: list[Backbone] = [
    UNetBackbone(),
    DiTBackbone(),
    SD3Backbone(),
    FluxBackbone(),
    ChromaBackbone(),
    WanBackbone(),
    LTXBackbone(),
    HunyuanVideoBackbone(),
    CogVideoXBackbone(),
    CogView4Backbone(),
    QwenImageBackbone(),
    QwenImage21Backbone(),
    *(SpecBackbone(spec) for spec in SPECS),
    Flux2Backbone(),
    HunyuanDiTBackbone(),
    Lumina2Backbone(),
    SkyReelsV2Backbone(),
    WanVACEBackbone(),
    ChronoEditBackbone(),
    BriaBackbone(),
    LongCatImageBackbone(),
    OvisImageBackbone(),
    ConsisIDBackbone(),
    HiDreamBackbone(),
    ZImageBackbone(),
    HunyuanVideo15Backbone(),
    HunyuanImageBackbone(),
    LTX2Backbone(),
    MochiBackbone(),
    CosmosBackbone(),
    Kandinsky5Backbone(),
    SanaVideoBackbone(),
    EasyAnimateBackbone(),
]
SUPPORTED = tuple(c for b in BACKBONES for c in b.classes)


def _refresh() -> None:
    global SUPPORTED
    SUPPORTED = tuple(c for b in BACKBONES for c in b.classes)


def register(adapter: BackboneSpec | Backbone) -> Backbone:
    """Make bigain take the classes an adapter (or a spec) names; returns the adapter. A registered
    adapter is asked before the built-in ones, so it may also replace one for a class."""
    backbone = SpecBackbone(adapter) if isinstance(adapter, BackboneSpec) else adapter
    if not isinstance(backbone, Backbone):
        raise TypeError(f"register takes a BackboneSpec or a Backbone, got {type(adapter).__name__}")
    if any(b is backbone or (b.name == backbone.name and b.classes == backbone.classes) for b in BACKBONES):
        raise ValueError(
            f"bigain: an adapter {backbone.name!r} for {', '.join(backbone.classes)} is already registered"
        )
    BACKBONES.insert(0, backbone)
    _refresh()
    return backbone


def unregister(adapter: str | BackboneSpec | Backbone) -> None:
    """Take out an adapter given to `register` (or by its name)."""
    for b in list(BACKBONES):
        if (
            b is adapter
            or (isinstance(adapter, str) and b.name == adapter)
            or (isinstance(adapter, BackboneSpec) and getattr(b, "spec", None) is adapter)
        ):
            BACKBONES.remove(b)
            _refresh()
            return
    raise ValueError(f"bigain: no registered adapter {getattr(adapter, 'name', adapter)!r}")


def resolve_denoiser(model_or_pipeline: object) -> nn.Module:
    """The denoiser of a pipeline (`unet`/`transformer`), a bundle (`denoiser`) or the model itself."""
    return resolve_denoisers(model_or_pipeline)[0][1]


# Attributes of a pipeline holding further denoisers beside the first (Wan 2.2 A14B: the low-noise
# expert `transformer_2` beside the high-noise `transformer`).
EXTRA_DENOISERS = ("transformer_2",)


def resolve_denoisers(model_or_pipeline: object) -> list[tuple[str, nn.Module]]:
    """Every denoiser a pipeline holds, as (attribute, module): its `denoiser`/`unet`/`transformer`
    and, where a pipeline (not a module) has one, `transformer_2` (Wan 2.2's second expert). A model
    alone is ``[("", model)]``."""
    found: list[tuple[str, nn.Module]] = []
    for attr in ("denoiser", "unet", "transformer"):
        inner = getattr(model_or_pipeline, attr, None)
        if isinstance(inner, nn.Module):
            found.append((attr, inner))
            break
    for attr in () if isinstance(model_or_pipeline, nn.Module) else EXTRA_DENOISERS:
        inner = getattr(model_or_pipeline, attr, None)
        if isinstance(inner, nn.Module) and all(inner is not m for _, m in found):
            found.append((attr, inner))
    if found:
        return found
    if isinstance(model_or_pipeline, nn.Module):
        return [("", model_or_pipeline)]
    raise TypeError(
        f"expected a diffusers pipeline or model, got {type(model_or_pipeline).__name__}; "
        f"supported denoisers: {', '.join(SUPPORTED)}"
    )


def find_backbone(model: nn.Module) -> Backbone:
    """The adapter for `model`; TypeError listing the supported classes otherwise."""
    for b in BACKBONES:
        if type(model).__name__ in b.classes:
            return b
    for b in BACKBONES:
        if b.matches(model):
            return b
    raise TypeError(
        f"bigain does not support {type(model).__name__}; supported denoisers: {', '.join(SUPPORTED)} "
        "(or a pipeline holding one as `unet`/`transformer`)"
    )


__all__ = [
    "BACKBONES",
    "PAPER_DIT_BLOCKS",
    "SUPPORTED",
    "Backbone",
    "BackboneSpec",
    "Block",
    "ForwardInfo",
    "as_timesteps",
    "SpecBackbone",
    "Stack",
    "find_backbone",
    "register",
    "relative_placement",
    "resolve_denoiser",
    "resolve_denoisers",
    "unregister",
]
