"""apply / remove / compressed / sample_keys, and the report of what a patch did."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import ops
from ..methods import MethodConfig, make_config
from .discovery import BlockSite, ModelInfo, inspect_model, resolve_denoiser
from .hooks import BlockPatch, PatchState

_ATTR = "_bigain_patch"


@dataclass
class PatchedBlock:
    index: int
    name: str
    level: int
    tokens: int | None  # tokens the block sees at the config's sample size
    reduced: int | None  # tokens after reduction (merge/prune: queries too; kv: keys/values only)


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


def _select(info: ModelInfo, cfg: MethodConfig) -> list[tuple[BlockSite, int]]:
    """(site, level parameter) for every block the method acts on."""
    if cfg.kind == "none":
        return []
    n = len(info.sites)
    blocks = cfg.blocks
    kv_factor = getattr(cfg, "downsample_factor", 1)
    if blocks == "all":
        chosen = info.sites
    elif blocks is None or blocks == "default":
        if info.default_blocks is None:
            levels = cfg.levels()
            return [(s, levels[s.level]) for s in info.sites if s.level in levels]
        chosen = [info.sites[i] for i in info.default_blocks if i < n]
    else:
        bad = [i for i in blocks if i >= n]
        if bad:
            raise ValueError(f"option blocks={list(blocks)!r} is out of range: this model has {n} blocks (0..{n - 1})")
        chosen = [info.sites[i] for i in sorted(set(blocks))]
    if cfg.kind == "kv":
        levels = cfg.levels()
        return [(s, levels.get(s.level, kv_factor)) for s in chosen]
    return [(s, 1) for s in chosen]


def _token_counts(info: ModelInfo, site: BlockSite, cfg: MethodConfig, param: int) -> tuple[int | None, int | None]:
    if info.sample_size is None:
        return None, None
    h, w = info.sample_size
    if info.kind == "unet":
        gh, gw = ops.level_grid(h, w, site.level)
    else:
        gh, gw = h // info.patch_size, w // info.patch_size
    n = gh * gw
    if cfg.kind == "kv":
        return n, (gh // param) * (gw // param)
    n_src = n - (gh // cfg.sy) * (gw // cfg.sx)
    return n, n - max(0, min(int(n * cfg.ratio), n_src))


def is_patched(model_or_pipeline: object) -> bool:
    return hasattr(resolve_denoiser(model_or_pipeline), _ATTR)


def remove(model_or_pipeline: object) -> None:
    """Remove every bigain hook; the model is then exactly as before `apply`. No-op if unpatched."""
    den = resolve_denoiser(model_or_pipeline)
    state: PatchState | None = getattr(den, _ATTR, None)
    if state is None:
        return
    for h in state.handles:
        h.remove()
    delattr(den, _ATTR)


def apply(model_or_pipeline: object, method: str | MethodConfig = "bigain-tm", **options: Any) -> PatchReport:
    """Patch a diffusers pipeline or denoiser with a compression method (replacing any earlier patch).

    `method` is a name from `bigain.methods()` or a config object; `options` are that method's
    fields (ratio, sx, sy, max_downsample, blocks, use_rand, merge_attn, downsample_factor, alpha, ...).
    """
    cfg = make_config(method, **options)
    info = inspect_model(model_or_pipeline)
    den = info.denoiser
    selected = _select(info, cfg)
    if cfg.kind != "none" and not selected:
        where = (
            f"max_downsample={cfg.max_downsample}: no transformer block at levels {sorted(cfg.levels())} "
            f"(this model has blocks at levels {sorted({s.level for s in info.sites})})"
            if info.default_blocks is None
            else f"blocks={cfg.blocks!r}"
        )
        msg = f"bigain: {cfg.name} would compress nothing on {type(den).__name__} ({where})"
        if cfg.on_empty == "error":
            raise ValueError(msg + "; pass max_downsample=/blocks= to select blocks, or on_empty='warn'")
        if cfg.on_empty == "warn":
            warnings.warn(msg, stacklevel=2)
    remove(den)
    state = PatchState(cfg, info)
    state.handles.append(den.register_forward_pre_hook(state.denoiser_pre_hook, with_kwargs=True))
    report = PatchReport(cfg.name, type(den).__name__, cfg.as_dict())
    for site, param in selected:
        bp = BlockPatch(state, site, param)
        state.blocks.append(bp)
        state.handles.extend(bp.install())
        tokens, reduced = _token_counts(info, site, cfg, param)
        report.blocks.append(PatchedBlock(site.index, site.name, site.level, tokens, reduced))
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
