"""The hooks of a patch, generic over the backbone adapter's description; one hook class per mechanism.

Per forward, a pre-hook on the denoiser asks the adapter for the token grid and the timesteps and
opens a `Forward` (what every block of this forward shares: the random table, the KV weights,
rotary rows); a post-hook on the denoiser closes it, so no tensor of one forward outlives it (a
captured CUDA graph would otherwise keep stale tensors) and a block called outside a forward fails.

- `TokenHooks` ("tokens": ToMe, BiGain-TM, SiTo): a plan per block call from the metric (the block
  input, or the attention input) by the method's `make_plan`; pre-hooks on the sub-layers the method
  reduces give them the reduced image tokens and post-hooks expand their outputs back.
- `KVHooks` ("kv": ToDo, BiGain-TD): the attention gets a downsampled copy of the image tokens as its
  key/value source, through `encoder_hidden_states` on plain self-attention, or through pre-hooks on
  `to_k`/`to_v` where the attention also carries text (SD3/Flux).

Text tokens are never touched. Nothing of the model is replaced, so removing the hooks restores it
exactly. The hot path is sync-free: nothing here reads a device tensor on the host or builds a
tensor from host data inside a forward (see docs/architecture.md, "Hot path").
"""

from __future__ import annotations

import copy
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


def _arg(args: tuple, kwargs: dict, position: int | None, name: str) -> Any:
    """An argument of a sub-layer call, passed by keyword `name` or at `position`."""
    if position is not None and len(args) > position:
        return args[position]
    return kwargs.get(name)


def _with_arg(args: tuple, kwargs: dict, position: int | None, name: str, value: Any) -> tuple[tuple, dict]:
    """The call with that argument replaced (where the caller put it: by position or by keyword)."""
    if position is not None and len(args) > position:
        return args[:position] + (value,) + tuple(args[position + 1 :]), kwargs
    kwargs = dict(kwargs)
    kwargs[name] = value
    return args, kwargs


apply_rope = ops.rope_pairs  # Flux's convention (the default `Backbone.rope`)


def _same(a: Any, b: Any) -> bool:
    """`a is b`, taken through tuples and lists element by element: torch.compile traces `is` between
    two tensors, but not between two tuples that reach a frame from different places (a table passed
    in and one held in the forward's cache after a graph break in the model), where it breaks the
    graph again."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b


def _rows(table: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rows `pos` of a rotary table of (S, D) rows shared by the batch or (B, S, D) rows per sample
    (Lumina2): `pos` (N',) the same for every sample, or (B, N') per sample."""
    if pos.dim() == 1:
        return table[..., pos, :]
    if table.dim() == 2:
        return table[pos]
    return torch.gather(table, 1, pos[..., None].expand(-1, -1, table.shape[-1]))


def _plan_positions(plan: Any) -> torch.Tensor:
    """Original token index of every token of the reduced sequence: (B, N')."""
    keep = getattr(plan, "keep_idx", None)
    if keep is not None:
        return keep
    return torch.cat([plan.kept_idx, plan.dst_idx], dim=1)


class Forward:
    """What the blocks of one denoiser forward share; made by the denoiser pre-hook, dropped after."""

    def __init__(self, state: PatchState, info: ForwardInfo) -> None:
        self.state = state
        self.info = info
        self.grid = info.grid
        self.timesteps = info.timesteps
        if state.host_timesteps is not None:
            # decided when the caller said the timesteps: inside a compiled forward this is one
            # guarded bool (at most one more graph), not a guard on every timestep value
            self.off = state.host_off
        else:
            self.off = state.config.switched_off(info.host_timesteps)
        self.cache: dict[Any, Any] = {}

    def table(self, batch: int, device: torch.device) -> ops.KeyedTable:
        """This forward's random numbers: keyed by the caller's per-row keys (`bigain.sample_keys`),
        else by each row's timestep (no timestep: by 0)."""
        table = self.cache.get("table")
        if table is None:
            st = self.state
            span = (st.seed, st.first_block, st.last_block)
            if st.keys is not None:
                table = ops.KeyedTable.for_keys(st.keys, *span)
            else:
                t = self.timesteps if self.timesteps is not None else torch.zeros(batch, device=device)
                table = ops.KeyedTable.for_timesteps(t, *span)
            self.cache["table"] = table
        return table

    def kv_prepared(self, dtype: torch.dtype) -> tuple:
        key = ("kv", dtype)
        if key not in self.cache:
            self.cache[key] = self.state.config.kv_prepare(self.timesteps, dtype)
        return self.cache[key]


class PatchState:
    """Everything a patch keeps on the model: config, adapter, hooks, and the current forward."""

    def __init__(self, config: MethodConfig, backbone: Backbone) -> None:
        self.config = config
        self.backbone = backbone
        self.hooks = HookSet()
        self.patches: list[_BlockHooks] = []
        self.forward: Forward | None = None
        self.keys: torch.Tensor | None = None  # per-row keys from `bigain.sample_keys`, on the device
        self.host_timesteps: tuple[float, ...] | None = None  # from `bigain.host_timesteps`
        self.host_off = False  # the config's switch-off decision for `host_timesteps`
        self.backbone_cache: dict[str, Any] = {}  # what the adapter learns about this model (Flux grids)
        self.seed = int(getattr(config, "seed", 0))
        self.first_block = self.last_block = 0
        self.stream = getattr(config, "rng", None) == "generator" and config.uses_random()
        self._generators: dict[torch.device, torch.Generator] = {}
        self._rebind = False  # a deep copy: its sub-layers' hooks are rebound at its first forward

    def __deepcopy__(self, memo: dict) -> PatchState:
        """A copy of a patched model owns its random state: generators are copied, not shared."""
        new = copy.copy(self)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k == "_generators":
                new._generators = {d: _copy_generator(g) for d, g in v.items()}
            elif k == "config":
                cfg = copy.copy(v)
                if getattr(cfg, "generator", None) is not None:
                    cfg.generator = _copy_generator(cfg.generator)
                new.config = cfg
            elif k != "backbone":
                setattr(new, k, copy.deepcopy(v, memo))
        # The copy's sub-layers still call the original's hooks through diffusers' registry closures;
        # their copies are complete only when the whole model is, so rebind at the copy's first forward.
        new._rebind = True
        return new

    def generator(self, device: torch.device) -> torch.Generator:
        """tomesd's stream (rng="generator"): the config's generator, else one per device from `seed`."""
        gen = getattr(self.config, "generator", None)
        if gen is not None:
            return gen
        device = torch.device(device)
        if device not in self._generators:
            try:
                gen = torch.Generator(device=device)
            except RuntimeError:  # a device without generators (meta): draw on the CPU, copy over
                gen = torch.Generator()
            self._generators[device] = gen.manual_seed(self.seed)
        return self._generators[device]

    def denoiser_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._rebind:
            self.hooks.rebind()
            self._rebind = False
        info = self.backbone.read_forward(module, args, kwargs, self.backbone_cache)
        self.forward = Forward(self, info)

    def denoiser_post(self, module: nn.Module, output: Any) -> None:
        self.forward = None
        for p in self.patches:
            p.clear()
        return None

    def current(self) -> Forward:
        if self.forward is None:
            raise RuntimeError(
                "bigain: a patched block was called outside a forward of its denoiser; call the whole "
                "model (bigain reads the token grid and timesteps from the denoiser's inputs)"
            )
        return self.forward


def _copy_generator(gen: torch.Generator) -> torch.Generator:
    new = torch.Generator(device=gen.device)
    new.set_state(gen.get_state())
    return new


class _BlockHooks:
    """What the hooks of one transformer block share: the block, its grid, the rotary tables."""

    def __init__(self, state: PatchState, block: Block, param: int) -> None:
        self.state = state
        self.block = block
        self.cfg = state.config
        self.param = param  # KV methods: the downsample factor of this block
        # Rotary tables moved out of the attention call when it sees other tokens than the model made:
        # (q image, k image, text, tokens after the image) as (cos, sin) pairs; None when the attention
        # applies its own.
        self._rope: tuple[Any, Any, Any, Any] | None = None
        self.rope_kwarg: str | None = getattr(state.backbone, "rope_kwarg", None)
        self._t_suffix = 0  # text length after the image in the q/k norm outputs (text_suffix blocks)

    def clear(self) -> None:
        """Drop everything of the forward that just ended."""
        self._rope = None

    def _image(self, x: torch.Tensor) -> tuple[int, torch.Tensor, ops.Grid]:
        """(text prefix length, image tokens, grid) of a sub-layer input."""
        fwd = self.state.current()
        if self.block.text_prefix:
            t = x.shape[1] - fwd.grid.tokens
            img = x[:, t:]
        elif self.block.image_first:  # [image; other tokens]
            t, img = 0, x[:, : fwd.grid.tokens]
        else:
            t, img = 0, x
        return t, img, self.state.backbone.grid(fwd.info, self.block, img.shape[1])

    def install(self, hooks: HookSet) -> None:
        if self.rope_kwarg is not None:
            self._install_rope(self.block.roles["attn"], hooks)

    # -- rotary embeddings (Flux, Wan) -------------------------------------------------------
    def _install_rope(self, attn: nn.Module, hooks: HookSet) -> None:
        norm_q, norm_k, *added = self.state.backbone.rope_norms
        if getattr(attn, norm_q, None) is None or getattr(attn, norm_k, None) is None:
            raise ValueError(f"bigain: {self.block.name} applies rotary embeddings without q/k norms to hook")
        b = self.block
        image_part = not b.text_prefix and not b.text_suffix and not b.image_first
        hooks.post(getattr(attn, norm_q), lambda m, out: self._rope_post(out, 0, image_part))
        hooks.post(getattr(attn, norm_k), lambda m, out: self._rope_post(out, 1, image_part))
        if self.block.joint:
            for name in added:
                if getattr(attn, name, None) is not None:
                    hooks.post(getattr(attn, name), lambda m, out: self._rope_post(out, 2, False))
        hooks.post(attn, self._rope_clear)

    def _split_rope(self, tables: Any, rest: int) -> tuple:
        """(text rows, image cos, image sin, rows of the tokens after the image or None) of an
        attention call's tables, rows on dim -2 ((S, D), or (B, S, D) per sample). On image_first
        blocks the rows are [image; the `rest` tokens after it in the input; text]. The model passes
        one table object to every block of a forward, so the split (the adapter's `rope_rows`: a join
        or a complex table's real and imaginary parts on Qwen-Image) is made once per forward (and
        `rest`), and every block gets the same row tensors (which `_key_rows` recognises by identity)."""
        fwd = self.state.current()
        key = rest if self.block.image_first else None
        seen = fwd.cache.setdefault("rope-rows", [])
        for src, k, split in seen:
            if _same(src, tables) and k == key:
                return split
        cos, sin = self.state.backbone.rope_rows(tables)
        n = fwd.grid.tokens
        if self.block.image_first:
            end = n + rest
            tail = (cos[..., n:end, :], sin[..., n:end, :])
            split = (cos[..., end:, :], sin[..., end:, :]), cos[..., :n, :], sin[..., :n, :], tail
        else:
            n_text = cos.shape[-2] - n
            split = (cos[..., :n_text, :], sin[..., :n_text, :]), cos[..., n_text:, :], sin[..., n_text:, :], None
        seen.append((tables, key, split))  # holds `tables`, so its identities cannot be reused in this forward
        return split

    def _take_rope(self, args: tuple, kwargs: dict, q_pos: torch.Tensor | None, k_rows: Any) -> tuple[tuple, dict]:
        """Remove the rotary tables from the attention call; keep the rows the new tokens need
        (q_pos None: every image row, in order; k_rows: "q" for the queries' rows, or a callable
        giving the key rows from the image tables)."""
        position = self.state.backbone.rope_position
        tables = _arg(args, kwargs, position, self.rope_kwarg)
        if tables is None:
            self._rope = None
            return args, kwargs
        x = _hidden(args, kwargs)
        tables = self._on_device(tables, x.device)
        # image_first blocks: the tokens after the image in the (already reduced) input
        rest = x.shape[1] - (self.state.current().grid.tokens if q_pos is None else q_pos.shape[1])
        text, img_cos, img_sin, tail = self._split_rope(tables, rest)
        if self.block.text_suffix:
            enc = _arg(args, kwargs, 1, "encoder_hidden_states")
            self._t_suffix = 0 if enc is None else enc.shape[1]
        q_rows = (img_cos, img_sin) if q_pos is None else (_rows(img_cos, q_pos), _rows(img_sin, q_pos))
        k = q_rows if k_rows == "q" else k_rows(img_cos, img_sin)
        self._rope = (q_rows, k, text, tail)
        stand_in = self.state.backbone.rope_stand_in(tables)
        return _with_arg(args, kwargs, position, self.rope_kwarg, stand_in)

    def _on_device(self, tables: Any, device: torch.device) -> Any:
        """(cos, sin) tables made on another device than the tokens (CogView4 computes its own on the
        host when the caller passes none) moved to the tokens' device, once per forward: the rows of
        the tokens present are gathered with device indices."""
        if not isinstance(tables, (tuple, list)) or len(tables) != 2:
            return tables
        cos, sin = tables
        if not isinstance(cos, torch.Tensor) or cos.device == device:
            return tables
        seen = self.state.current().cache.setdefault("rope-device", [])
        for src, moved in seen:
            if src is cos:
                return moved
        moved = (cos.to(device), sin.to(device))
        seen.append((cos, moved))
        return moved

    def _rope_post(self, out: torch.Tensor, which: int, image_only: bool):
        if self._rope is None:
            return None
        cos, sin = self._rope[which]
        rope, attn = self.state.backbone.rope, self.block.roles["attn"]
        if which == 2 and cos.shape[-2] == 0:
            return None  # no text rows: the text is not rotated (HunyuanVideo)
        if which == 2 or image_only:
            return rope(out, cos, sin, attn)
        if self.block.image_first:  # [image; rest]: the rest with its own rows
            r_cos, r_sin = self._rope[3]
            if r_cos.shape[-2] == 0:
                return rope(out, cos, sin, attn)
            if cos.dim() == 3:
                r_cos, r_sin = r_cos.expand(cos.shape[0], -1, -1), r_sin.expand(cos.shape[0], -1, -1)
            return rope(out, torch.cat([cos, r_cos], dim=-2), torch.cat([sin, r_sin], dim=-2), attn)
        if self.block.text_suffix:  # [image; text]: rotate the image part, leave the text
            n = out.shape[1] - self._t_suffix
            return torch.cat([rope(out[:, :n], cos, sin, attn), out[:, n:]], dim=1)
        t_cos, t_sin = self._rope[2]
        if cos.dim() == 3:  # per-sample image rows: give the text rows a batch dimension too
            t_cos, t_sin = t_cos.expand(cos.shape[0], -1, -1), t_sin.expand(cos.shape[0], -1, -1)
        return rope(out, torch.cat([t_cos, cos], dim=-2), torch.cat([t_sin, sin], dim=-2), attn)

    def _shorten_mask(
        self, args: tuple, kwargs: dict, hidden: int, cut: int, queries: bool
    ) -> tuple[tuple, dict]:
        """The call with its attention mask cut to `cut` fewer image keys (and as many fewer image
        queries when `queries`), for adapters that name `mask_kwarg`. `hidden`: the length of the
        attention's input before the method changed it. The image entries of such a mask are all
        kept (it masks only padded text), so which image entries go does not matter: the layout
        (`Backbone.mask_layout`) says where the image sits."""
        bb = self.state.backbone
        if bb.mask_kwarg is None or cut == 0:
            return args, kwargs
        if not isinstance(bb.mask_kwarg, str):  # several masks, by keyword (Qwen-Image 2.1), each cut alike
            for name in bb.mask_kwarg:
                args, kwargs = self._shorten_one_mask(args, kwargs, None, name, hidden, cut, queries)
            return args, kwargs
        return self._shorten_one_mask(args, kwargs, bb.mask_position, bb.mask_kwarg, hidden, cut, queries)

    def _shorten_one_mask(
        self, args: tuple, kwargs: dict, position: int | None, name: str, hidden: int, cut: int, queries: bool
    ) -> tuple[tuple, dict]:
        bb = self.state.backbone
        mask = _arg(args, kwargs, position, name)
        if mask is None:
            return args, kwargs
        if bb.mask_layout == "tail":  # (B, keys) or (B, 1, 1, keys), the image keys last
            if not isinstance(mask, torch.Tensor):
                raise ValueError(
                    f"bigain: {self.cfg.name} changes the image keys of {self.block.name}, but its {name} is a "
                    f"{type(mask).__name__}, not a tensor bigain can cut (a flex-attention block mask is made for the "
                    "model's own sequence); use the model's default attention processor"
                )
            if mask.dim() not in (2, 4) or (mask.dim() == 4 and mask.shape[-2] != 1) or mask.shape[-1] < hidden:
                raise ValueError(
                    f"bigain: {self.cfg.name} changes the image keys of {self.block.name}, but its {name} "
                    f"{tuple(mask.shape)} is not the (B, keys) or (B, 1, 1, keys) key mask, image keys last, bigain can cut"
                )
            return _with_arg(args, kwargs, position, name, mask[..., : mask.shape[-1] - cut])
        if bb.mask_layout == "tokens":  # (B, tokens) over the attention's input, the image first
            if mask.dim() != 2 or mask.shape[1] != hidden:
                raise ValueError(
                    f"bigain: {self.cfg.name} changes the image tokens of {self.block.name}, but its {name} "
                    f"{tuple(mask.shape)} is not the (B, {hidden}) mask over its input bigain can cut"
                )
            return _with_arg(args, kwargs, position, name, mask[:, cut:])
        enc = _arg(args, kwargs, 1, "encoder_hidden_states")
        keys = hidden + (0 if enc is None else enc.shape[1])
        if bb.mask_layout == "pairs":  # (B, 1, 1 or queries, keys) over [text; image]: the image last
            if mask.dim() != 4 or mask.shape[-1] != keys or mask.shape[-2] not in (1, keys):
                raise ValueError(
                    f"bigain: {self.cfg.name} changes the image keys of {self.block.name}, but its attention mask "
                    f"{tuple(mask.shape)} is not the (B, 1, {keys}, {keys}) mask over [text; image] bigain can cut"
                )
            rows = keys - cut if queries and mask.shape[-2] != 1 else mask.shape[-2]
            return _with_arg(args, kwargs, position, name, mask[..., :rows, : keys - cut])
        if mask.dim() != 4 or mask.shape[-2] != 1 or mask.shape[-1] != keys:
            raise ValueError(
                f"bigain: {self.cfg.name} changes the image keys of {self.block.name}, but its attention mask "
                f"{tuple(mask.shape)} is not the (B, 1, 1, {keys}) key mask over [image; text] bigain can cut"
            )
        return _with_arg(args, kwargs, position, name, mask[..., cut:])

    def _rope_clear(self, module: nn.Module, output: Any) -> None:
        self._rope = None
        return None


class TokenHooks(_BlockHooks):
    """Reduce the tokens the chosen sub-layers see (merge or prune plan) and expand their outputs."""

    def __init__(self, state: PatchState, block: Block, param: int) -> None:
        super().__init__(state, block, param)
        self.plan: Any = None
        self.salt = ops.block_salt(state.seed, block.index)
        metric = getattr(self.cfg, "metric", "auto")
        self.metric = state.backbone.default_metric if metric == "auto" else metric
        self.reduced = self.cfg.reduced_roles()
        self._t_len = 0  # text prefix length of the current call (Flux single-stream blocks)

    def clear(self) -> None:
        super().clear()
        self.plan = None

    def install(self, hooks: HookSet) -> None:
        super().install(hooks)
        roles = self.block.roles
        attn = roles["attn"]
        if self.metric == "block":
            hooks.pre(self.block.module, self._block_pre)
        hooks.pre(attn, self._attn_pre)
        if "attn" in self.reduced:
            hooks.post(attn, self._expand_post)
            if "attn2" in roles:
                hooks.pre(roles["attn2"], self._reduce_pre)
                hooks.post(roles["attn2"], self._expand_post)
        for role in ("cross", "ff"):
            if role in self.reduced and role in roles:
                hooks.pre(roles[role], self._reduce_pre)
                hooks.post(roles[role], self._expand_post)
        if "cross" in self.reduced and "cross" in roles and self.rope_kwarg and self.state.backbone.cross_rope:
            self._install_cross_rope(roles["cross"], hooks)

    def _install_cross_rope(self, cross: nn.Module, hooks: HookSet) -> None:
        """A cross-attention that rotates its (image) queries with the block's rotary tables: once its
        queries are reduced, the rows of the tokens present rotate the q norm output; the keys (text)
        are not rotated."""
        if getattr(cross, "norm_q", None) is None:
            raise ValueError(f"bigain: {self.block.name} rotates cross-attention queries without a q norm to hook")
        hooks.pre(cross, self._cross_rope_pre)
        hooks.post(cross.norm_q, lambda m, out: self._rope_post(out, 0, True))
        hooks.post(cross, self._rope_clear)

    def _cross_rope_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.plan is None:
            return None  # queries whole: the processor applies the tables itself
        return self._take_rope(args, kwargs, _plan_positions(self.plan), "q")

    def _draw(self, batch: int, device: torch.device) -> Draw:
        st = self.state
        if not self.cfg.uses_random():
            return Draw(self.salt)
        if st.stream:
            if ops.is_compiling():
                raise RuntimeError(
                    f"bigain: {self.cfg.name} with rng='generator' draws from a torch.Generator, which "
                    "torch.compile cannot trace; use the default rng='keyed'"
                )
            return Draw(self.salt, generator=st.generator(device))
        return Draw(self.salt, table=st.current().table(batch, device), slot=self.block.index)

    def _make_plan(self, x: torch.Tensor) -> None:
        _, img, grid = self._image(x)
        self.cfg.check_grid(grid, f"block {self.block.name}")
        self.plan = self.cfg.make_plan(img, grid, self._draw(img.shape[0], img.device))

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.block.image_first:  # [image; rest]: _t_len is the rest's length
            n = self.plan.inverse.shape[1]
            t = self._t_len = x.shape[1] - n
            return torch.cat([self.plan.reduce(x[:, :n]), x[:, n:]], dim=1) if t else self.plan.reduce(x)
        if not self.block.text_prefix:
            return self.plan.reduce(x)
        t = self._t_len = x.shape[1] - self.plan.inverse.shape[1]
        return torch.cat([x[:, :t], self.plan.reduce(x[:, t:])], dim=1)

    def _expand(self, y: torch.Tensor) -> torch.Tensor:
        if self.block.image_first:
            n = y.shape[1] - self._t_len
            return torch.cat([self.plan.expand(y[:, :n]), y[:, n:]], dim=1) if self._t_len else self.plan.expand(y)
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
        if self.plan is None or "attn" not in self.reduced:
            return None
        reduced = self._reduce(x)
        args, kwargs = _with_hidden(args, kwargs, reduced)
        args, kwargs = self._shorten_mask(args, kwargs, x.shape[1], x.shape[1] - reduced.shape[1], True)
        if self.rope_kwarg is not None:
            args, kwargs = self._take_rope(args, kwargs, _plan_positions(self.plan), "q")
        return args, kwargs

    def _reduce_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self.plan is None:
            return None
        x = _hidden(args, kwargs)
        n = self.plan.inverse.shape[1]
        if x.shape[1] != n and not (self.block.text_prefix or self.block.image_first):
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


class KVHooks(_BlockHooks):
    """Give the attention a downsampled key/value source; queries keep every token."""

    def __init__(self, state: PatchState, block: Block, param: int) -> None:
        super().__init__(state, block, param)
        self.attn = block.roles["attn"]
        self.projections = block.joint or block.text_prefix or block.text_suffix or block.image_first
        self._kv_in: torch.Tensor | None = None  # projection mode: the tensor to_k/to_v must replace
        self._kv_src: torch.Tensor | None = None
        self._kv_hits = 0
        # processors joining text and image before to_k/to_v: [image; text] on text_suffix blocks,
        # else [text; image] (CogVideoX); empty: to_k/to_v see the attention's input
        suffix = block.text_suffix
        self._kv_joins = state.backbone.kv_suffix_join_processors if suffix else state.backbone.kv_text_join_processors
        self._kv_len = 0  # joined mode: the length of the [text; image] sequence to_k/to_v must see

    def clear(self) -> None:
        super().clear()
        self._kv_in = self._kv_src = None

    def install(self, hooks: HookSet) -> None:
        super().install(hooks)
        attn = self.attn
        hooks.pre(attn, self._kv_pre)
        if self.projections:
            self._check_unfused()
            hooks.pre(attn.to_k, self._kv_proj_pre)
            hooks.pre(attn.to_v, self._kv_proj_pre)
            hooks.post(attn, self._kv_post)

    def _check_unfused(self) -> None:
        # a self-attention given its keys and values as encoder_hidden_states needs no to_k to hook
        # (Kandinsky 5 names its projections to_key/to_value)
        missing = self.projections and not hasattr(self.attn, "to_k")
        if getattr(self.attn, "fused_projections", False) or missing:
            raise RuntimeError(
                f"bigain: {self.cfg.name} needs separate to_k/to_v projections in {self.block.name}, but they "
                "are fused; call unfuse_qkv_projections() on the model (or apply bigain after it)"
            )

    def _kv_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        self._kv_in = self._kv_src = None
        fwd = self.state.current()
        if fwd.off:
            return None
        self._check_unfused()  # fused after `apply`: keys and values would bypass the hooks
        refused = fwd.info.extra.get("kv_refused")  # a call the adapter knows KV downsampling cannot serve
        if refused:
            raise ValueError(f"bigain: {self.cfg.name} cannot run on {self.block.name}: {refused}")
        x = _hidden(args, kwargs)
        t_len, img, grid = self._image(x)
        self.cfg.check_grid(grid, self.param, f"block {self.block.name}")
        src = self.cfg.kv_source(img, grid, self.param, fwd.timesteps, fwd.kv_prepared(img.dtype))
        key_rows = lambda c, s: self._key_rows(fwd, c, s, grid)  # noqa: E731
        if self.projections:
            self._kv_in, self._kv_hits = x, 0
            rest = x[:, img.shape[1] :] if self.block.image_first and x.shape[1] > img.shape[1] else None
            parts = ([x[:, :t_len]] if t_len else []) + [src] + ([rest] if rest is not None else [])
            self._kv_src = torch.cat(parts, dim=1) if len(parts) > 1 else src
            if self._kv_joins:
                text = self._joined_text(args, kwargs)
                self._kv_len = text.shape[1] + x.shape[1]
                # the processor's joined sequence: [image; text] on text_suffix blocks, else [text; image]
                self._kv_src = torch.cat([src, text] if self.block.text_suffix else [text, src], dim=1)
            args, kwargs = self._shorten_mask(args, kwargs, x.shape[1], img.shape[1] - src.shape[1], False)
            if self.rope_kwarg is not None:
                return self._take_rope(args, kwargs, None, key_rows)
            return args, kwargs
        if _arg(args, kwargs, 1, "encoder_hidden_states") is not None:
            raise RuntimeError(
                f"bigain: {self.cfg.name} gives {self.block.name}'s self-attention its keys and values, "
                "but the call already passes encoder_hidden_states"
            )
        args, kwargs = _with_arg(args, kwargs, 1, "encoder_hidden_states", src)
        if self.rope_kwarg is not None:
            return self._take_rope(args, kwargs, None, key_rows)
        return args, kwargs

    def _key_rows(self, fwd: Forward, cos: torch.Tensor, sin: torch.Tensor, grid: ops.Grid) -> tuple:
        """Rotary rows of the downsampled keys (their nearest-exact sample's position): the same for
        every block of the forward, so gathered once."""
        seen = fwd.cache.setdefault("rope-kv", [])
        for table, factor, rows in seen:
            if table is cos and factor == self.param:
                return rows
        pos = self.cfg.kv_positions(grid, self.param, cos.device)
        rows = (_rows(cos, pos), _rows(sin, pos))
        seen.append((cos, self.param, rows))
        return rows

    def _joined_text(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The text a processor that joins text and image before to_k/to_v puts first (CogVideoX) or
        last (HunyuanVideo single-stream)."""
        processor = type(getattr(self.attn, "processor", None)).__name__
        text = _arg(args, kwargs, 1, "encoder_hidden_states")
        if processor not in self._kv_joins or text is None:
            order = "[image; text]" if self.block.text_suffix else "[text; image]"
            raise RuntimeError(
                f"bigain: {self.cfg.name} could not give {self.block.name} its keys and values: its attention "
                f"processor {processor} is not one bigain knows to join {order} before to_k/to_v "
                f"({', '.join(self._kv_joins)}); use diffusers' default attention processor"
            )
        return text

    def _kv_proj_pre(self, module: nn.Module, args: tuple, kwargs: dict):
        if self._kv_src is None:
            return None
        if self._kv_joins:  # the joined sequence: a tensor made inside the processor
            if args and args[0].dim() == 3 and args[0].shape[1] == self._kv_len:
                self._kv_hits += 1
                return (self._kv_src,) + tuple(args[1:]), kwargs
            raise RuntimeError(
                f"bigain: {self.cfg.name} could not give {self.block.name} its keys and values: to_k/to_v "
                f"got {tuple(args[0].shape) if args else 'no tensor'}, not the joined text and image sequence "
                f"of {self._kv_len} tokens"
            )
        if not args or args[0] is not self._kv_in:
            raise RuntimeError(
                f"bigain: {self.cfg.name} could not give {self.block.name} its keys and values: the "
                "attention processor passes another tensor to to_k/to_v than the attention's input "
                "(a processor bigain does not know); use diffusers' default attention processor"
            )
        self._kv_hits += 1
        return (self._kv_src,) + tuple(args[1:]), kwargs

    def _kv_post(self, module: nn.Module, output: Any) -> None:
        pending, hits = self._kv_src is not None, self._kv_hits
        self._kv_in = self._kv_src = None
        if pending and hits < 2:
            raise RuntimeError(
                f"bigain: {self.cfg.name} did nothing in {self.block.name}: its keys and values never went "
                "through to_k/to_v (fused projections or a processor bigain does not know)"
            )
        return None


MECHANISM_HOOKS: dict[str, type[_BlockHooks]] = {"tokens": TokenHooks, "kv": KVHooks}
