"""The hooks of a patch, generic over the backbone adapter's description and the method's mechanism.

Per forward, a pre-hook on the denoiser asks the adapter for the token grid and the timesteps.
Token methods ("tokens"): a plan is made per block call from the metric (the block input, or the
attention input) by the method's own `make_plan`; pre-hooks on the sub-layers the method reduces
give them the reduced image tokens and post-hooks expand their outputs back. KV methods ("kv"):
the attention gets a downsampled copy of the image tokens as its key/value source, through
`encoder_hidden_states` on plain self-attention, or through pre-hooks on `to_k`/`to_v` where the
attention also carries text (SD3/Flux). Text tokens are never touched. Nothing of the model is
replaced, so removing the hooks restores it exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from ..backbones import Backbone, Block, ForwardInfo
from ..methods import Draw, MethodConfig
from .registry import HookSet


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value,) + tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = value
    return args, kwargs


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on (B, S, heads, D) with tables (S, D) or per-sample (B, S, D); pairs of
    adjacent channels rotate together (Flux's convention), computed in fp32 like diffusers."""
    if cos.dim() == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(3)
    return (x.float() * cos.to(x.device) + rotated.float() * sin.to(x.device)).to(x.dtype)


def _plan_positions(plan: Any) -> torch.Tensor:
    """Original token index of every token of the reduced sequence: (B, N')."""
    keep = getattr(plan, "keep_idx", None)
    if keep is not None:
        return keep
    return torch.cat([plan.kept_idx, plan.dst_idx], dim=1)


def _kv_positions(height: int, width: int, factor: int, device: torch.device) -> torch.Tensor:
    """Token index that each downsampled key sits at (its nearest-exact sample): (N / factor**2,)."""
    grid = torch.arange(height * width, device=device, dtype=torch.float32).view(1, 1, height, width)
    return ops.nearest_exact(grid, factor).flatten().round().to(torch.int64)


class PatchState:
    """Everything a patch keeps on the model: config, adapter, hooks, and the current forward."""

    def __init__(self, config: MethodConfig, backbone: Backbone) -> None:
        self.config = config
        self.backbone = backbone
        self.hooks = HookSet()
        self.forward: ForwardInfo | None = None
        self.kv_off = False
        self.keys: torch.Tensor | None = None
        self.generator: torch.Generator | None = getattr(config, "generator", None)
        if self.generator is None and hasattr(config, "seed"):
            self.generator = torch.Generator().manual_seed(int(config.seed))

    def denoiser_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        info = self.backbone.read_forward(module, args, kwargs)
        self.forward = info
        stop = getattr(self.config, "stop_t", None)
        # Switch-off for KV methods: only when every row is at t <= stop_t. Decided on the host: free
        # for host timesteps; device timesteps are read once (not while compiling: see the docs).
        self.kv_off = False
        if stop is not None and info.timesteps is not None and not ops.is_compiling():
            t = info.host_timesteps if info.host_timesteps is not None else info.timesteps.cpu()
            self.kv_off = bool((t <= stop).all())

    def current(self) -> ForwardInfo:
        if self.forward is None:
            raise RuntimeError("bigain: a block was called outside a forward of the patched denoiser")
        return self.forward


class BlockPatch:
    """The hooks of one transformer block and what they share during one block call."""

    def __init__(self, state: PatchState, block: Block, param: int) -> None:
        self.state = state
        self.block = block
        self.cfg = state.config
        self.param = param  # KV methods: the downsample factor of this block
        self.plan: Any = None
        self.salt = (int(getattr(self.cfg, "seed", 0)) * 1_000_003 + block.index * 7919 + 17) & 0xFFFFFFFF
        metric = getattr(self.cfg, "metric", "auto")
        self.metric = state.backbone.default_metric if metric == "auto" else metric
        self._kv_in: torch.Tensor | None = None  # projection mode: the tensor to_k/to_v must replace
        self._kv_src: torch.Tensor | None = None
        self._t_len = 0  # text prefix length of the current call (Flux single-stream blocks)
        # Rotary tables moved out of the attention call when it sees other tokens than the model made:
        # (q image, k image, text) as (cos, sin) pairs; None when the attention applies its own.
        self._rope: tuple[Any, Any, Any] | None = None
        self.rope_kwarg: str | None = getattr(state.backbone, "rope_kwarg", None)

    # -- shared ------------------------------------------------------------------------------
    def _image(self, x: torch.Tensor) -> tuple[int, torch.Tensor, tuple[int, int]]:
        """(text prefix length, image tokens, grid) of a sub-layer input."""
        info = self.state.current()
        if self.block.text_prefix:
            gh, gw = info.grid
            t = x.shape[1] - gh * gw
            img = x[:, t:]
        else:
            t, img = 0, x
        return t, img, self.state.backbone.grid(info, self.block, img.shape[1])

    def _draw(self) -> Draw:
        st = self.state
        trace = None
        if st.keys is None and ops.is_compiling():
            t = st.forward.timesteps if st.forward is not None else None
            trace = torch.zeros(1, dtype=torch.int64) if t is None else t[:1].to(torch.int64)
        return Draw(self.salt, st.keys, st.generator, trace)

    # -- install -----------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        roles = self.block.roles
        attn = roles["attn"]
        if self.rope_kwarg is not None:
            self._install_rope(attn, hooks)
        if self.cfg.mechanism == "kv":
            hooks.pre(attn, self._kv_pre)
            if self.block.joint or self.block.text_prefix:
                if getattr(attn, "fused_projections", False) or not hasattr(attn, "to_k"):
                    raise ValueError(
                        f"bigain: {self.cfg.name} needs separate to_k/to_v projections in {self.block.name}; "
                        "call unfuse_qkv_projections() on the model first"
                    )
                hooks.pre(attn.to_k, self._kv_proj_pre)
                hooks.pre(attn.to_v, self._kv_proj_pre)
                hooks.post(attn, self._kv_post)
            return
        if self.metric == "block":
            hooks.pre(self.block.module, self._block_pre)
        hooks.pre(attn, self._attn_pre)
        reduced = self.cfg.reduced_roles()
        if "attn" in reduced:
            hooks.post(attn, self._expand_post)
            if "attn2" in roles:
                hooks.pre(roles["attn2"], self._reduce_pre)
                hooks.post(roles["attn2"], self._expand_post)
        for role in ("cross", "ff"):
            if role in reduced and role in roles:
                hooks.pre(roles[role], self._reduce_pre)
                hooks.post(roles[role], self._expand_post)

    # -- rotary embeddings (Flux) ------------------------------------------------------------
    def _install_rope(self, attn: nn.Module, hooks: HookSet) -> None:
        if getattr(attn, "norm_q", None) is None or getattr(attn, "norm_k", None) is None:
            raise ValueError(f"bigain: {self.block.name} applies rotary embeddings without q/k norms to hook")
        image_part = not self.block.text_prefix
        hooks.post(attn.norm_q, lambda m, out: self._rope_post(out, 0, image_part))
        hooks.post(attn.norm_k, lambda m, out: self._rope_post(out, 1, image_part))
        if self.block.joint:
            for name in ("norm_added_q", "norm_added_k"):
                if getattr(attn, name, None) is not None:
                    hooks.post(getattr(attn, name), lambda m, out: self._rope_post(out, 2, False))
        hooks.post(attn, self._rope_clear)

    def _take_rope(self, kwargs: dict, q_pos: torch.Tensor | None, k_pos: torch.Tensor | None) -> dict:
        """Remove the rotary tables from the attention call and keep the rows the new tokens need
        (positions None: every image row, in order)."""
        tables = kwargs.get(self.rope_kwarg)
        if tables is None:
            self._rope = None
            return kwargs
        cos, sin = tables
        gh, gw = self.state.current().grid
        n_text = cos.shape[0] - gh * gw
        text = (cos[:n_text], sin[:n_text])
        img_cos, img_sin = cos[n_text:], sin[n_text:]

        def rows(pos: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            if pos is None:
                return img_cos, img_sin
            pos = pos.to(img_cos.device)
            return img_cos[pos], img_sin[pos]

        q_rows = rows(q_pos)
        self._rope = (q_rows, q_rows if k_pos is q_pos else rows(k_pos), text)
        kwargs = dict(kwargs)
        kwargs[self.rope_kwarg] = None
        return kwargs

    def _rope_post(self, out: torch.Tensor, which: int, image_only: bool):
        if self._rope is None:
            return None
        cos, sin = self._rope[which]
        if which == 2 or image_only:
            return apply_rope(out, cos, sin)
        t_cos, t_sin = self._rope[2]
        if cos.dim() == 3:  # per-sample image rows: give the text rows a batch dimension too
            t_cos, t_sin = t_cos.expand(cos.shape[0], -1, -1), t_sin.expand(cos.shape[0], -1, -1)
        return apply_rope(out, torch.cat([t_cos, cos], dim=-2), torch.cat([t_sin, sin], dim=-2))

    def _rope_clear(self, module: nn.Module, output: Any) -> None:
        self._rope = None
        return None

    # -- token methods -----------------------------------------------------------------------
    def _make_plan(self, x: torch.Tensor) -> None:
        _, img, (h, w) = self._image(x)
        self.cfg.check_grid(h, w, f"block {self.block.name}")
        self.plan = self.cfg.make_plan(img, h, w, self._draw())

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if not self.block.text_prefix:
            return self.plan.reduce(x)
        t = self._t_len = x.shape[1] - self.plan.inverse.shape[1]
        return torch.cat([x[:, :t], self.plan.reduce(x[:, t:])], dim=1)

    def _expand(self, y: torch.Tensor) -> torch.Tensor:
        if not self.block.text_prefix:
            return self.plan.expand(y)
        t = self._t_len
        return torch.cat([y[:, :t], self.plan.expand(y[:, t:])], dim=1)

    def _block_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.plan = None
        self._make_plan(_hidden(args, kwargs))

    def _attn_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        x = _hidden(args, kwargs)
        if self.metric == "attn":
            self.plan = None
            self._make_plan(x)
        if self.plan is None or "attn" not in self.cfg.reduced_roles():
            return None
        args, kwargs = _with_hidden(args, kwargs, self._reduce(x))
        if self.rope_kwarg is not None:
            pos = _plan_positions(self.plan)
            kwargs = self._take_rope(kwargs, pos, pos)
        return args, kwargs

    def _reduce_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.plan is None:
            return None
        x = _hidden(args, kwargs)
        n = self.plan.inverse.shape[1]
        if x.shape[1] != n and not self.block.text_prefix:
            raise RuntimeError(
                f"bigain: {self.block.name} got {x.shape[1]} tokens but planned {n} "
                "(feed-forward chunking is not supported with merge_mlp)"
            )
        return _with_hidden(args, kwargs, self._reduce(x))

    def _expand_post(self, module: nn.Module, output: Any):
        if self.plan is None:
            return None
        if isinstance(output, tuple):  # joint attention: (image, text, ...)
            return (self._expand(output[0]),) + tuple(output[1:])
        return self._expand(output)

    # -- KV methods --------------------------------------------------------------------------
    def _kv_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        self._kv_in = self._kv_src = None
        st = self.state
        if st.kv_off or self.param <= 1:
            return None
        x = _hidden(args, kwargs)
        t_len, img, (h, w) = self._image(x)
        self.cfg.check_grid(h, w, self.param, f"block {self.block.name}")
        src = self.cfg.kv_source(img, h, w, self.param, st.current().timesteps)
        if self.block.joint or self.block.text_prefix:
            self._kv_in = x
            self._kv_src = torch.cat([x[:, :t_len], src], dim=1) if t_len else src
            if self.rope_kwarg is not None:
                kwargs = self._take_rope(kwargs, None, _kv_positions(h, w, self.param, x.device))
                return args, kwargs
            return None
        if kwargs.get("encoder_hidden_states") is not None:
            raise RuntimeError(
                f"bigain: {self.cfg.name} gives {self.block.name}'s self-attention its keys and values, "
                "but the call already passes encoder_hidden_states"
            )
        kwargs = dict(kwargs)
        kwargs["encoder_hidden_states"] = src
        return args, kwargs

    def _kv_proj_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self._kv_src is None:
            return None
        if not args or args[0] is not self._kv_in:
            return None
        return (self._kv_src,) + tuple(args[1:]), kwargs

    def _kv_post(self, module: nn.Module, output: Any) -> None:
        self._kv_in = self._kv_src = None
        return None
