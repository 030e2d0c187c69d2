"""apply / remove / compressed / sample_keys, and the report of what a patch did."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..backbones import Backbone, Block, find_backbone, resolve_denoiser
from ..methods import MethodConfig, make_config
from .hooks import BlockPatch, PatchState

_ATTR = "_bigain_patch"


@dataclass
class ModelInfo:
    """A denoiser as bigain sees it: its adapter, its blocks, and the defaults that apply to it."""

    backbone: Backbone
    denoiser: nn.Module
    blocks: list[Block]
    default_blocks: tuple[int, ...] | None  # None: placement by level
    default_level: int

    @property
    def kind(self) -> str:
        return self.backbone.name

    @property
    def sites(self) -> list[Block]:  # older name
        return self.blocks

    @property
    def default_metric(self) -> str:
        return self.backbone.default_metric

    @property
    def patch_size(self) -> int:
        return int(getattr(self.denoiser.config, "patch_size", 1) or 1)

    def role_names(self, block: Block) -> dict[str, str]:
        """Qualified module names of a block's sub-layer roles, e.g. {"attn": "<block>.attn1"}."""
        names = {id(m): n for n, m in block.module.named_modules()}
        return {role: f"{block.name}.{names[id(m)]}" for role, m in block.roles.items()}


def inspect_model(model_or_pipeline: object) -> ModelInfo:
    """Find the denoiser's adapter and list its transformer blocks with their levels."""
    den = resolve_denoiser(model_or_pipeline)
    bb = find_backbone(den)
    blocks = bb.blocks(den)
    return ModelInfo(bb, den, blocks, bb.default_blocks(den, blocks), bb.default_level(blocks))


@dataclass
class PatchedBlock:
    index: int
    name: str
    level: int
    tokens: int | None  # image tokens the block sees at the model's configured sample size
    reduced: int | None  # tokens after reduction (token methods: queries too; KV: keys/values only)


@dataclass
class PatchReport:
    """What `apply` did: which blocks, at which levels, and the token counts at the model's sample size."""

    method: str
    model: str
    options: dict[str, Any]
    blocks: list[PatchedBlock] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def levels(self) -> list[int]:
        return sorted({b.level for b in self.blocks})

    def __str__(self) -> str:
        lines = [f"bigain: {self.method} on {self.model}: {self.num_blocks} block(s) at level(s) {self.levels}"]
        for b in self.blocks:
            tok = "" if b.tokens is None else f" tokens {b.tokens} -> {b.reduced}"
            lines.append(f"  [{b.index}] {b.name} (level {b.level}){tok}")
        return "\n".join(lines)


def select_blocks(info: ModelInfo, cfg: MethodConfig) -> list[tuple[Block, int]]:
    """(block, per-block parameter) for every block the method acts on."""
    if cfg.mechanism == "none":
        return []
    n = len(info.blocks)
    blocks = cfg.blocks
    if blocks == "all":
        chosen = info.blocks
    elif blocks is None or blocks == "default":
        if info.default_blocks is None:
            params = cfg.level_params(info.default_level)
            return [(b, params[b.level]) for b in info.blocks if b.level in params]
        chosen = [info.blocks[i] for i in info.default_blocks]
    else:
        bad = [i for i in blocks if i >= n]
        if bad:
            raise ValueError(f"option blocks={list(blocks)!r} is out of range: this model has {n} blocks (0..{n - 1})")
        chosen = [info.blocks[i] for i in sorted(set(blocks))]
    return [(b, cfg.block_param(b.level)) for b in chosen]


def _token_counts(info: ModelInfo, block: Block, cfg: MethodConfig, param: int) -> tuple[int | None, int | None]:
    grid = info.backbone.sample_grid(info.denoiser)
    if grid is None:
        return None, None
    h, w = info.backbone.block_grid(grid, block.level)
    return h * w, cfg.reduced_tokens(h * w, h, w, param)


def is_patched(model_or_pipeline: object) -> bool:
    return hasattr(resolve_denoiser(model_or_pipeline), _ATTR)


def remove(model_or_pipeline: object) -> None:
    """Remove every bigain hook; the model is then exactly as before `apply`. No-op if unpatched."""
    den = resolve_denoiser(model_or_pipeline)
    state: PatchState | None = getattr(den, _ATTR, None)
    if state is None:
        return
    state.hooks.remove()
    delattr(den, _ATTR)


def _empty(info: ModelInfo, cfg: MethodConfig) -> None:
    levels = sorted({b.level for b in info.blocks})
    where = (
        f"max_downsample={cfg.max_downsample}: no transformer block at the selected levels "
        f"(this model has blocks at levels {levels})"
        if info.default_blocks is None and cfg.blocks in (None, "default")
        else f"blocks={cfg.blocks!r}"
    )
    msg = f"bigain: {cfg.name} would compress nothing on {type(info.denoiser).__name__} ({where})"
    if cfg.on_empty == "error":
        raise ValueError(msg + "; pass max_downsample=/blocks= to select blocks, or on_empty='warn'")
    if cfg.on_empty == "warn":
        warnings.warn(msg, stacklevel=3)


def apply(model_or_pipeline: object, method: str | MethodConfig = "bigain-tm", **options: Any) -> PatchReport:
    """Patch a diffusers pipeline or denoiser with a compression method (replacing any earlier patch).

    `method` is a name from `bigain.list_methods()` or a config object; `options` are that method's
    fields (ratio, sx, sy, max_downsample, blocks, use_rand, merge_attn, downsample_factor, alpha, ...).
    """
    cfg = make_config(method, **options)
    info = inspect_model(model_or_pipeline)
    den = info.denoiser
    why = info.backbone.refusal(cfg.name, cfg.mechanism)
    if why:
        raise ValueError(f"bigain: {cfg.name} does not apply to {type(den).__name__}: {why}")
    selected = select_blocks(info, cfg)
    if cfg.mechanism != "none" and not selected:
        _empty(info, cfg)
    remove(den)
    state = PatchState(cfg, info.backbone)
    state.hooks.pre(den, state.denoiser_pre)
    report = PatchReport(cfg.name, type(den).__name__, cfg.as_dict())
    for block, param in selected:
        BlockPatch(state, block, param).install(state.hooks)
        tokens, reduced = _token_counts(info, block, cfg, param)
        report.blocks.append(PatchedBlock(block.index, block.name, block.level, tokens, reduced))
    state.hooks.install()
    setattr(den, _ATTR, state)
    return report


@contextlib.contextmanager
def compressed(model_or_pipeline: object, method: str | MethodConfig = "bigain-tm", **options: Any) -> Iterator[PatchReport]:
    """Context manager: patch on entry, restore the previous state (unpatched or an earlier patch) on exit."""
    den = resolve_denoiser(model_or_pipeline)
    previous: PatchState | None = getattr(den, _ATTR, None)
    report = apply(den, method, **options)
    try:
        yield report
    finally:
        remove(den)
        if previous is not None:
            apply(den, previous.config)


@contextlib.contextmanager
def sample_keys(model_or_pipeline: object, keys: torch.Tensor | None) -> Iterator[None]:
    """Make every random choice of batch row b a pure function of (seed, keys[b], block).

    Used by the diffusion classifier so that all classes of one (image, t, noise) see the
    same ToMe destinations / SiTo noise, whatever else shares the batch. A no-op on an
    unpatched model.
    """
    den = resolve_denoiser(model_or_pipeline)
    state: PatchState | None = getattr(den, _ATTR, None)
    if state is None:
        yield
        return
    old = state.keys
    state.keys = None if keys is None else torch.as_tensor(keys, dtype=torch.int64)
    try:
        yield
    finally:
        state.keys = old
