"""apply / remove / compressed / sample_keys, and the report of what a patch did."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..backbones import Backbone, Block, find_backbone, resolve_denoiser, resolve_denoisers
from ..methods import MethodConfig, make_config
from .hooks import MECHANISM_HOOKS, PatchState

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
    return _inspect(resolve_denoiser(model_or_pipeline))


def _inspect(den: nn.Module) -> ModelInfo:
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
    """(block, per-block parameter) for every block the method acts on (a block the method would
    leave untouched at its level, e.g. a KV factor of 1, is left out)."""
    if cfg.mechanism not in MECHANISM_HOOKS:
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
    params = [(b, cfg.block_param(b.level, info.default_level)) for b in chosen]
    return [(b, p) for b, p in params if p is not None]


def _token_counts(info: ModelInfo, block: Block, cfg: MethodConfig, param: int) -> tuple[int | None, int | None]:
    grid = info.backbone.sample_grid(info.denoiser)
    if grid is None:
        return None, None
    g = info.backbone.block_grid(grid, block.level)
    return g.tokens, cfg.reduced_tokens(g.tokens, g, param)


def _denoisers(model_or_pipeline: object) -> list[nn.Module]:
    return [den for _, den in resolve_denoisers(model_or_pipeline)]


def is_patched(model_or_pipeline: object) -> bool:
    """Whether the model (or any denoiser of the pipeline, e.g. either Wan 2.2 expert) is patched."""
    return any(hasattr(den, _ATTR) for den in _denoisers(model_or_pipeline))


def remove(model_or_pipeline: object) -> None:
    """Remove every bigain hook (from every denoiser of a pipeline); the model is then exactly as
    before `apply`. No-op if unpatched."""
    for den in _denoisers(model_or_pipeline):
        state: PatchState | None = getattr(den, _ATTR, None)
        if state is None:
            continue
        if state._rebind:  # a deep copy never called: bind its hooks to it before taking them off
            state.hooks.rebind()
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
    """Patch a diffusers pipeline or denoiser with a compression method.

    `method` is a name from `bigain.list_methods()` or a config object; `options` are that method's
    fields (ratio, sx, sy, max_downsample, blocks, use_rand, merge_attn, downsample_factor, alpha, ...).
    A model patched already gets the new patch in place of the old one, with a warning that says so
    (`bigain.remove` first to avoid it).

    A pipeline with several denoisers (Wan 2.2 A14B: `transformer` and `transformer_2`) has each
    patched with the same method and options, each with its own patch state; the one report lists
    both (its `model` names both, its block names start with the attribute).
    """
    cfg = make_config(method, **options)
    named = resolve_denoisers(model_or_pipeline)
    plans: list[tuple[str, ModelInfo, list[tuple[Block, int]]]] = []
    for attr, den in named:  # check every denoiser before patching any
        info = _inspect(den)
        why = info.backbone.refusal(cfg.name, cfg.mechanism)
        if why:
            raise ValueError(f"bigain: {cfg.name} does not apply to {type(den).__name__}: {why}")
        selected = select_blocks(info, cfg)
        if cfg.mechanism != "none" and not selected:
            _empty(info, cfg)
        plans.append((attr, info, selected))
    for _, info, _ in plans:
        den = info.denoiser
        previous: PatchState | None = getattr(den, _ATTR, None)
        if previous is not None:
            warnings.warn(
                f"bigain: {type(den).__name__} was patched with {previous.config.name}; that patch is replaced "
                f"by {cfg.name} (call bigain.remove(model) first to silence this)",
                stacklevel=2,
            )
    several = len(plans) > 1
    model = " + ".join(
        f"{attr} ({type(info.denoiser).__name__})" if several else type(info.denoiser).__name__
        for attr, info, _ in plans
    )
    report = PatchReport(cfg.name, model, cfg.as_dict())
    for attr, info, selected in plans:
        prefix = f"{attr}." if several else ""
        for block, param in _patch(info, cfg, selected):
            tokens, reduced = _token_counts(info, block, cfg, param)
            report.blocks.append(PatchedBlock(block.index, prefix + block.name, block.level, tokens, reduced))
    return report


def _patch(info: ModelInfo, cfg: MethodConfig, selected: list[tuple[Block, int]]) -> list[tuple[Block, int]]:
    """Install `cfg`'s hooks on the selected blocks of one denoiser (in place of any earlier patch)."""
    den = info.denoiser
    remove(den)
    state = PatchState(cfg, info.backbone)
    state.hooks.pre(den, state.denoiser_pre, wrap=True)
    hook_class = MECHANISM_HOOKS.get(cfg.mechanism)
    if selected:
        state.first_block = min(b.index for b, _ in selected)
        state.last_block = max(b.index for b, _ in selected)
    for block, param in selected:
        patch = hook_class(state, block, param)
        info.backbone.install_around(patch, state.hooks, after=False)
        patch.install(state.hooks)
        info.backbone.install_around(patch, state.hooks, after=True)
        state.patches.append(patch)
    state.hooks.post(den, state.denoiser_post, wrap=True)
    state.hooks.install()
    setattr(den, _ATTR, state)
    return selected


@contextlib.contextmanager
def compressed(model_or_pipeline: object, method: str | MethodConfig = "bigain-tm", **options: Any) -> Iterator[PatchReport]:
    """Context manager: patch on entry, restore the previous state (unpatched or an earlier patch) on
    exit, of every denoiser of a pipeline."""
    dens = _denoisers(model_or_pipeline)
    previous: list[PatchState | None] = [getattr(den, _ATTR, None) for den in dens]
    remove(model_or_pipeline)
    report = apply(model_or_pipeline, method, **options)
    try:
        yield report
    finally:
        for den, prev in zip(dens, previous):
            remove(den)
            if prev is not None:
                apply(den, prev.config)


def _states(model_or_pipeline: object) -> list[tuple[nn.Module, PatchState]]:
    """(denoiser, patch state) of every patched denoiser."""
    found = [(den, getattr(den, _ATTR, None)) for den in _denoisers(model_or_pipeline)]
    return [(den, st) for den, st in found if st is not None]


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host keys onto the device without stalling it: through pinned memory on CUDA."""
    if x.device == device:
        return x
    if x.device.type == "cpu" and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _model_device(den: nn.Module) -> torch.device:
    for p in den.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def sample_keys(model_or_pipeline: object, keys: torch.Tensor | None) -> Iterator[None]:
    """Make every random choice of batch row b a pure function of (seed, keys[b], block).

    Used by the diffusion classifier so that all classes of one (image, t, noise) see the
    same ToMe destinations / SiTo noise, whatever else shares the batch. The keys go to the
    model's device here, once, not in every block. A no-op on an unpatched model.
    """
    states = _states(model_or_pipeline)
    olds = [state.keys for _, state in states]
    if keys is not None and states:
        keys = torch.as_tensor(keys, dtype=torch.int64)
    try:
        for den, state in states:  # each expert's keys on its own device
            state.keys = None if keys is None else _to_device(keys, _model_device(den))
        yield
    finally:
        for (_, state), old in zip(states, olds):
            state.keys = old


@contextlib.contextmanager
def host_timesteps(model_or_pipeline: object, timesteps: Any) -> Iterator[None]:
    """Tell the patch the timesteps (0-1000 scale, one per batch row or one for all) of the forwards
    inside, as host numbers.

    bigain never reads a timestep tensor (on a GPU the read would stall the host every forward), so a
    decision on t (ToDo / BiGain-TD switch off at t <= stop_t) is taken from Python-number timesteps
    or from these. The sampler and the classifier pass what they hold; under torch.compile the
    decision is a guarded Python value (one extra graph for the switched-off step, no recompiles).
    """
    states = [state for _, state in _states(model_or_pipeline)]
    if not states:
        yield
        return
    olds = [(state.host_timesteps, state.host_off) for state in states]
    if isinstance(timesteps, torch.Tensor):
        if timesteps.device.type != "cpu":
            raise ValueError("bigain.host_timesteps takes host values (Python numbers or a CPU tensor)")
        values = tuple(float(v) for v in timesteps.reshape(-1).tolist())
    elif isinstance(timesteps, (int, float)):
        values = (float(timesteps),)
    else:
        values = tuple(float(v) for v in timesteps)
    try:
        for state in states:
            state.host_timesteps, state.host_off = values, state.config.switched_off(values)
        yield
    finally:
        for state, old in zip(states, olds):
            state.host_timesteps, state.host_off = old


def set_grid(model_or_pipeline: object, grid: tuple[int, int] | None) -> None:
    """Pin the token grid (rows, cols) for forwards with that many image tokens, where the model's
    inputs do not say it without a host read (Flux's `img_ids` under torch.compile); None unpins."""
    states = [state for _, state in _states(model_or_pipeline)]
    if not states:
        raise ValueError("bigain.set_grid: the model is not patched; call bigain.apply first")
    if grid is not None:
        ok = isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(v, int) and v > 0 for v in grid)
        if not ok:
            raise ValueError(f"bigain.set_grid: grid={grid!r} must be (rows, cols), two positive integers")
        grid = (int(grid[0]), int(grid[1]))
    for state in states:
        state.backbone_cache["pinned"] = grid
