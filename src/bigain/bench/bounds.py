"""What compression could buy at best: the "ceiling" and the "ideal at ratio r" of a placement.

Both act on the sub-layers a method compresses (the "attn" role of each placed block, plus SD3.5's
"attn2"), found through the backbone adapter, and are removed exactly:

- ceiling: the compressed attentions cost nothing. Their forward is replaced by one that returns
  zeros of the output's shape (for an attention that takes the text separately and returns it, the
  text part too, so nothing of the sub-layer runs). No method can be faster at that placement. On a
  fused block (Flux 2's single-stream attention, whose projections also feed its MLP) the whole
  fused sub-layer is free, as a token method reduces all of it.
- ideal r: the compressed attentions run on M = N - int(r N) of the N image tokens behind a free
  merge: the first M image tokens are kept (a slice, a view) and the output is repeated back to N
  tokens (one copy). On models with an adapter this is a token "method" (`IdealConfig`) through
  bigain's own hooks, so every layout the adapters describe is handled as the methods handle it:
  the text of joint attentions and text prefixes, the [image; rest] sequences of `image_first`
  blocks, rotary tables under any keyword (rows of the kept tokens), attention masks, and the
  adapters' own hooks (Lumina2's per-sample caption offsets). The price of that generality on rotary
  families: the hooks rotate the kept queries and keys themselves (elementwise, no matmul).

Models bigain's methods do not support (no adapter) are bounded at the blocks and placement of
`bench.video` (None: the relative-depth placement) with plain hooks on the attention, for layouts
whose image tokens are the whole input (or follow the text of a joint attention).

The outputs are meaningless; only the cost of a forward is of interest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .. import ops
from ..methods.base import MethodConfig, check, is_real

BOUNDS = ("ceiling", "ideal")


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _replace_hidden(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


def kept_tokens(n: int, ratio: float) -> int:
    """M = the tokens an ideal merge at `ratio` keeps (at least one), as tomesd rounds: N - int(N * r)."""
    return max(1, n - int(n * ratio))


def repeat_tokens(y: torch.Tensor, n: int) -> torch.Tensor:
    """(B, M, C) -> (B, n, C) by repeating the M tokens (one copy kernel: the cheapest "unmerge")."""
    m = y.shape[1]
    reps = -(-n // m)
    return y.repeat(1, reps, 1)[:, :n] if reps > 1 else y[:, :n]


@dataclass
class SlicePlan:
    """The ideal's token plan: keep the first M of N image tokens, repeat the M outputs back to N.
    The interface of bigain's plans (`reduce`, `expand`, `inverse`, `keep_idx`)."""

    keep_idx: torch.Tensor  # (B, M): the kept tokens' positions (0..M-1), for their rotary rows
    inverse: torch.Tensor  # (1, N): token i reads back output i % M (what `repeat_tokens` does)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.keep_idx.shape[1]]

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        return repeat_tokens(y, self.inverse.shape[1])


@dataclass
class IdealConfig(MethodConfig):
    """The ideal at `ratio` as a token method: bigain's hooks give the compressed attentions the
    first M image tokens (`SlicePlan`) wherever the adapter's layout puts them. Not a registered
    method: `bound(model, "ideal", ratio)` applies it."""

    name: ClassVar[str] = "ideal"
    mechanism: ClassVar[str] = "tokens"

    ratio: float = 0.5
    metric: str = "attn"  # the plan needs only the attention input's shape

    def validate(self) -> None:
        super().validate()
        check(is_real(self.ratio) and 0.0 <= self.ratio < 1.0, "ratio", self.ratio, "[0, 1) (the ideal needs a ratio)")

    def reduced_roles(self) -> tuple[str, ...]:
        return ("attn",)

    def uses_random(self) -> bool:
        return False

    def check_grid(self, grid: ops.Grid, where: str) -> None:
        return None

    def reduced_tokens(self, num_tokens: int, grid: ops.Grid, param: int) -> int:
        return kept_tokens(num_tokens, self.ratio)

    def make_plan(self, metric: torch.Tensor, grid: ops.Grid, draw: Any) -> SlicePlan | None:
        b, n = metric.shape[:2]
        m = kept_tokens(n, self.ratio)
        if m == n:
            return None  # nothing removed: the sub-layer runs as the model calls it
        keep = torch.arange(m, device=metric.device).expand(b, m)
        return SlicePlan(keep, (torch.arange(n, device=metric.device) % m)[None])


def _sublayers(model: nn.Module, blocks: Any) -> list[tuple[Any, nn.Module]]:
    """(block, module) of every compressed attention of the placement `blocks` (as in the methods'
    `blocks` option: None = the backbone's default placement, "all", or block indices)."""
    from ..methods import make_config
    from ..patching import compressed, inspect_model

    try:
        info = inspect_model(model)
    except TypeError:  # no adapter yet (video transformers): the blocks and placement of bench.video
        from .video import placement, video_blocks

        found = video_blocks(model)
        chosen = set(placement(len(found), blocks))
        return [(b, b.roles["attn"]) for b in found if b.index in chosen]
    opts = {} if blocks is None else {"blocks": blocks}
    with compressed(model, make_config("tome", **opts)) as report:
        chosen = {b.index for b in report.blocks}
    out = []
    for block in info.blocks:
        if block.index in chosen:
            out += [(block, block.roles[r]) for r in ("attn", "attn2") if r in block.roles]
    return out


class _Ideal:
    """Hooks of one attention of a model without an adapter (`bench.video.LAYOUTS`): keep the first M
    image tokens, repeat the output back to N. Models with an adapter take `IdealConfig` instead."""

    def __init__(self, block: Any, ratio: float) -> None:
        self.block = block
        self.ratio = ratio
        self.n = 0  # image tokens of the current call
        self.t_len = 0  # text prefix (Flux single-stream blocks)

    def block_pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ctx = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
        self.t_len = int(ctx.shape[1]) if ctx is not None else 0

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = _hidden(args, kwargs)
        t = self.t_len if self.block.text_prefix else 0
        self.n = x.shape[1] - t
        m = kept_tokens(self.n, self.ratio)
        args, kwargs = _replace_hidden(args, kwargs, x[:, : t + m])
        ctx = kwargs.get("encoder_hidden_states")
        t_rows = t + (int(ctx.shape[1]) if ctx is not None else 0)

        def cut(rope: Any) -> Any:
            return tuple(_rope_rows(r, self.n, m, t_rows) for r in rope)

        for key in ("image_rotary_emb", "rotary_emb"):
            if kwargs.get(key) is not None:
                kwargs = {**kwargs, key: cut(kwargs[key])}
        if len(args) > 3 and isinstance(args[3], tuple):  # Wan: attn1(hidden, None, None, rotary_emb)
            args = (*args[:3], cut(args[3]), *args[4:])
        mask = kwargs.get("attention_mask")
        c = t_rows - t
        if isinstance(mask, torch.Tensor) and c and mask.shape[-1] == self.n + c:
            # a key mask over [image; text] (HunyuanVideo): the first m image keys and the text keys
            kwargs = {**kwargs, "attention_mask": torch.cat([mask[..., :m], mask[..., self.n :]], dim=-1)}
        return args, kwargs

    def post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):  # joint attention: (image, text, ...)
            return (repeat_tokens(output[0], self.n), *output[1:])
        if self.block.text_prefix:
            t = self.t_len
            return torch.cat([output[:, :t], repeat_tokens(output[:, t:], self.n)], dim=1)
        return repeat_tokens(output, self.n)


def _rope_rows(r: torch.Tensor, n: int, m: int, t_rows: int) -> torch.Tensor:
    """A rotary table cut to the kept tokens. Tables are (rows, d) (Flux, HunyuanVideo) or (B, rows,
    ...) (Wan, LTX-Video); rows are the n image tokens, or [text; image] (Flux: t_rows text rows)."""
    dim = 0 if r.dim() == 2 else 1
    rows = r.shape[dim]
    keep = m if rows == n else t_rows + m
    return r.narrow(dim, 0, keep)


def text_argument(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The text an attention call takes beside its hidden_states: `encoder_hidden_states` by keyword,
    else the first later positional (B, T, C) tensor of the hidden states' batch and width (HiDream
    passes a (B, S) mask before it)."""
    ctx = kwargs.get("encoder_hidden_states")
    if ctx is not None or not args:
        return ctx
    x = args[0]
    for a in args[1:]:
        if isinstance(a, torch.Tensor) and a.dim() == 3 and a.shape[0] == x.shape[0] and a.shape[-1] == x.shape[-1]:
            return a
    return None


def _zero_forward(block: Any) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        x = _hidden(args, kwargs)
        ctx = text_argument(args, kwargs)
        # joint attention, or text after the video (HunyuanVideo single-stream): (image, text) out
        if (block.joint or block.text_suffix) and ctx is not None:
            return torch.zeros_like(x), torch.zeros_like(ctx)
        return torch.zeros_like(x)

    return forward


def _has_adapter(model: nn.Module) -> bool:
    from ..patching import inspect_model

    try:
        inspect_model(model)
    except TypeError:
        return False
    return True


def _patched_blocks(model: nn.Module, report: Any) -> list[Any]:
    from ..patching import inspect_model

    chosen = {b.index for b in report.blocks}
    return [b for b in inspect_model(model).blocks if b.index in chosen]


@contextlib.contextmanager
def compressed_ideal(model: nn.Module, ratio: float, blocks: Any = None) -> Iterator[Any]:
    """The ideal at `ratio` on the placement `blocks`, through bigain's hooks (models with an
    adapter); yields the patch report."""
    from ..patching import compressed

    opts = {} if blocks is None else {"blocks": blocks}
    with compressed(model, IdealConfig(ratio=ratio, **opts)) as report:
        yield report


@contextlib.contextmanager
def bound(model: nn.Module, kind: str, ratio: float | None = None, blocks: Any = None) -> Iterator[int]:
    """Apply the "ceiling" or the "ideal" (at `ratio`) to the placement `blocks`; yields how many
    attentions it acts on. Everything is restored on exit."""
    if kind not in BOUNDS:
        raise ValueError(f"kind={kind!r}: allowed are {', '.join(BOUNDS)}")
    if kind == "ideal" and (ratio is None or not 0.0 <= ratio < 1.0):
        raise ValueError(f"ratio={ratio!r}: the ideal needs a ratio in [0, 1)")
    if kind == "ideal" and _has_adapter(model):
        with compressed_ideal(model, float(ratio), blocks) as report:
            yield sum(1 + ("attn2" in b.roles) for b in _patched_blocks(model, report))
        return
    subs = _sublayers(model, blocks)
    handles: list[Any] = []
    saved: list[tuple[nn.Module, Any]] = []
    try:
        for block, module in subs:
            if kind == "ceiling":
                saved.append((module, module.__dict__.get("forward")))
                module.forward = _zero_forward(block)
            else:
                ideal = _Ideal(block, float(ratio))
                if block.text_prefix:
                    handles.append(block.module.register_forward_pre_hook(ideal.block_pre, with_kwargs=True))
                handles.append(module.register_forward_pre_hook(ideal.pre, with_kwargs=True))
                handles.append(module.register_forward_hook(ideal.post))
        yield len(subs)
    finally:
        for h in handles:
            h.remove()
        for module, fwd in saved:
            if fwd is None:
                del module.forward
            else:
                module.forward = fwd
