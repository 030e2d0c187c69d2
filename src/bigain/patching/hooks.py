"""Forward hooks that apply a method to one transformer block, plus the per-model state.

Mechanism (DESIGN.md): a pre-hook on the denoiser records the latent size, the
timesteps and the batch; per block, a pre-hook on the block (metric = block input)
or on `attn1` (metric = attention input) builds a token plan; pre-hooks on `attn1`,
`attn2`, `ff` reduce what those sub-layers receive and post-hooks expand their
outputs. KV methods only pass a downsampled `encoder_hidden_states` to `attn1`.
Nothing of the model is replaced, so removing the hooks restores it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from ..methods import MethodConfig
from .discovery import BlockSite, ModelInfo


def _is_compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - very old torch
        return False


def _first_tensor(args: tuple, kwargs: dict, name: str) -> torch.Tensor:
    return args[0] if args else kwargs[name]


def _replace_first(args: tuple, kwargs: dict, name: str, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value,) + tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs[name] = value
    return args, kwargs


class PatchState:
    """Everything a patch keeps on the model: config, hooks, and what the current forward looks like."""

    def __init__(self, config: MethodConfig, info: ModelInfo) -> None:
        self.config = config
        self.info = info
        self.handles: list[Any] = []
        self.latent_hw: tuple[int, int] | None = None
        self.timesteps: torch.Tensor | None = None
        self.kv_off = False
        self.keys: torch.Tensor | None = None
        self.generator: torch.Generator | None = getattr(config, "generator", None)
        if self.generator is None and hasattr(config, "seed"):
            self.generator = torch.Generator().manual_seed(int(config.seed))
        self.blocks: list[BlockPatch] = []

    # -- denoiser-level hook -------------------------------------------------------------
    def denoiser_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        if x is None or x.dim() != 4:
            raise ValueError("bigain: the denoiser input must be a (B, C, H, W) latent")
        self.latent_hw = (int(x.shape[-2]), int(x.shape[-1]))
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        if t is not None:
            t = torch.as_tensor(t, device=x.device)
            if t.dim() == 0:
                t = t.expand(x.shape[0])
        self.timesteps = t
        stop = getattr(self.config, "stop_t", None)
        if stop is not None and t is not None and not _is_compiling():
            self.kv_off = bool((t <= stop).all())
        else:
            self.kv_off = False

    def grid(self, site: BlockSite, num_tokens: int) -> tuple[int, int]:
        if self.latent_hw is None:
            raise RuntimeError("bigain: block called outside a forward of the patched denoiser")
        h, w = self.latent_hw
        if self.info.kind == "unet":
            gh, gw = ops.level_grid(h, w, site.level)
            if gh * gw != num_tokens:
                gh, gw = ops.level_grid(h, w, ops.infer_level(h, w, num_tokens))
        else:
            p = self.info.patch_size
            gh, gw = h // p, w // p
            if gh * gw != num_tokens:
                raise ValueError(f"bigain: {num_tokens} tokens do not fit a {gh}x{gw} patch grid")
        return gh, gw


class BlockPatch:
    """The hooks of one transformer block and the plan they share during one block call."""

    def __init__(self, state: PatchState, site: BlockSite, level_param: int) -> None:
        self.state = state
        self.site = site
        self.cfg = state.config
        self.level_param = level_param  # KV methods: downsample factor of this block
        self.plan: ops.MergePlan | ops.PrunePlan | None = None
        self.salt = (int(getattr(self.cfg, "seed", 0)) * 1_000_003 + site.index * 7919 + 17) & 0xFFFFFFFF
        metric = getattr(self.cfg, "metric", "auto")
        self.metric = state.info.default_metric if metric == "auto" else metric

    # -- install -------------------------------------------------------------------------
    def install(self) -> list[Any]:
        b = self.site.block
        handles = []
        kind = self.cfg.kind
        if kind == "kv":
            handles.append(b.attn1.register_forward_pre_hook(self._kv_pre, with_kwargs=True))
            return handles
        handles.append(b.register_forward_pre_hook(self._block_pre, with_kwargs=True))
        handles.append(b.attn1.register_forward_pre_hook(self._attn1_pre, with_kwargs=True))
        if self.cfg.merge_attn:
            handles.append(b.attn1.register_forward_hook(self._expand_post))
        for flag, sub in (("merge_crossattn", "attn2"), ("merge_mlp", "ff")):
            module = getattr(b, sub, None)
            if getattr(self.cfg, flag) and module is not None:
                handles.append(module.register_forward_pre_hook(self._reduce_pre, with_kwargs=True))
                handles.append(module.register_forward_hook(self._expand_post))
        return handles

    # -- plans ---------------------------------------------------------------------------
    def _choice(self, metric: torch.Tensor, h: int, w: int) -> torch.Tensor:
        cfg = self.cfg
        keys = self.state.keys
        if cfg.name == "bigain-tm":
            score = ops.laplacian_score(metric, h, w, cfg.norm)
            return ops.score_choice(score, h, w, cfg.sx, cfg.sy, rule=cfg.dst_rule)
        if not cfg.use_rand:
            return ops.fixed_choice(h, w, cfg.sx, cfg.sy, metric.device)
        if keys is not None:
            return ops.keyed_choice(keys.to(metric.device), self.salt, h, w, cfg.sx, cfg.sy)
        if _is_compiling():
            # A torch.Generator cannot be traced: draw from the keyed hash of a per-model step counter.
            return ops.keyed_choice(self._trace_keys(metric.device), self.salt, h, w, cfg.sx, cfg.sy)
        return ops.random_choice(h, w, cfg.sx, cfg.sy, self.state.generator, metric.device)

    def _trace_keys(self, device: torch.device) -> torch.Tensor:
        t = self.state.timesteps
        if t is None:
            return torch.zeros(1, dtype=torch.int64, device=device)
        return t[:1].to(device=device, dtype=torch.int64)

    def _noise(self, metric: torch.Tensor) -> torch.Tensor | None:
        b, n, _ = metric.shape
        if self.cfg.noise_alpha == 0:
            return None
        if self.state.keys is not None:
            return ops.keyed_normal(self.state.keys.to(metric.device), self.salt, n)
        if _is_compiling():
            return ops.keyed_normal(self._trace_keys(metric.device).expand(b), self.salt, n)
        gen = self.state.generator
        return torch.randn((b, n), generator=gen, device=gen.device).to(metric.device)

    def make_plan(self, metric: torch.Tensor) -> None:
        b, n, _ = metric.shape
        h, w = self.state.grid(self.site, n)
        cfg = self.cfg
        if h // cfg.sy == 0 or w // cfg.sx == 0:
            raise ValueError(
                f"option sx={cfg.sx}, sy={cfg.sy} does not fit the {h}x{w} token grid of block "
                f"{self.site.name}: each window must fit in the grid"
            )
        r = int(n * cfg.ratio)
        if r <= 0:
            self.plan = None
            return
        if cfg.kind == "prune":
            self.plan = ops.similarity_prune_plan(
                metric, h, w, r, cfg.sx, cfg.sy, cfg.beta, cfg.noise_alpha, self._noise(metric)
            )
            return
        choice = self._choice(metric, h, w)
        dst, src = ops.partition(choice, h, w, cfg.sx, cfg.sy)
        self.plan = ops.bipartite_merge_plan(metric, dst, src, r, cfg.mode)

    # -- hook bodies ---------------------------------------------------------------------
    def _block_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.plan = None
        if self.metric == "block":
            self.make_plan(_first_tensor(args, kwargs, "hidden_states"))

    def _attn1_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        x = _first_tensor(args, kwargs, "hidden_states")
        if self.metric == "attn":
            self.make_plan(x)
        if self.plan is None or not self.cfg.merge_attn:
            return None
        return _replace_first(args, kwargs, "hidden_states", self.plan.reduce(x))

    def _reduce_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.plan is None:
            return None
        x = _first_tensor(args, kwargs, "hidden_states")
        if x.shape[1] != self.plan.inverse.shape[1]:
            raise RuntimeError(
                f"bigain: {self.site.name} got {x.shape[1]} tokens but planned {self.plan.inverse.shape[1]} "
                "(feed-forward chunking is not supported with merge_mlp)"
            )
        return _replace_first(args, kwargs, "hidden_states", self.plan.reduce(x))

    def _expand_post(self, module: nn.Module, args: tuple, output: torch.Tensor):
        if self.plan is None:
            return None
        return self.plan.expand(output)

    def _kv_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.state.kv_off or self.level_param <= 1 or kwargs.get("encoder_hidden_states") is not None:
            return None
        x = _first_tensor(args, kwargs, "hidden_states")
        h, w = self.state.grid(self.site, x.shape[1])
        s = self.level_param
        if h // s == 0 or w // s == 0:
            raise ValueError(
                f"option downsample_factor={s} does not fit the {h}x{w} token grid of block {self.site.name}"
            )
        t = self.state.timesteps
        alpha = self.cfg.alpha_for(t) if t is not None else self.cfg.alpha_for(torch.full((x.shape[0],), 999.0))
        if isinstance(alpha, torch.Tensor):
            alpha = alpha.to(x.device)
        kwargs = dict(kwargs)
        kwargs["encoder_hidden_states"] = ops.downsample_tokens(x, h, w, s, alpha)
        return args, kwargs
