"""What token compression can buy on video transformers, counted in FLOPs (arithmetic, not timing).

The attentions a method compresses ("sites": the self-attention of each transformer block; on
CogVideoX and HunyuanVideo the joint video-text attention) come from bigain's backbone adapter when
it supports the model, and otherwise from `LAYOUTS` (data: where the blocks live, which attention of
a block is compressed). One forward on the meta device gives the FLOPs of the model and of each of
its modules (`flops_by_module`) and the tokens each site saw. What a compression leaves is then
arithmetic on those shapes, per site of the chosen blocks:

- ceiling: the site costs nothing (its whole attention sub-layer, as `bounds.bound("ceiling")`);
- merge r: its N image tokens become M = N - int(r N) (a free merge: the query, key, value and
  output projections run on M tokens and attention on (M + text)^2 pairs); `matching=True` adds
  the bipartite matching's similarity matmul, 2 B n_src n_dst C, with one destination per 2x2
  window of each frame (n_dst = T (H//2)(W//2)), as ToMe and BiGain-TM choose them;
- kv (st, sh, sw): keys and values come from the image tokens pooled st x sh x sw over
  (frames, height, width) (floor), so the key and value projections run on
  K = (T//st)(H//sh)(W//sw) tokens and attention on (N + text)(K + text) pairs; queries and the
  output projection keep every token.

Attention is counted as its two matmuls, 4 B heads Nq Nk d; linear layers as 2 m n k (no bias),
as FlopCounterMode counts them. Pooling, gathers and scatters are not matmuls and count zero.
`measured_flops` counts the same compressions with the real hooks (the bounds, or a bigain method
through `bigain.apply`), so the arithmetic can be checked against them as adapters arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..backbones.base import Block, relative_placement
from .bounds import kept_tokens
from .flops import count_flops, flops_by_module


@dataclass(frozen=True)
class VideoLayout:
    """Where a video transformer's blocks live and which of their attentions a method compresses."""

    classes: tuple[str, ...]  # diffusers class names
    lists: tuple[str, ...]  # ModuleList attributes holding the blocks, in forward order
    attn: str  # the compressed attention of a block
    joint: bool  # that attention also attends to the text tokens it gets as encoder_hidden_states


LAYOUTS = (
    VideoLayout(("WanTransformer3DModel",), ("blocks",), "attn1", False),
    VideoLayout(("LTXVideoTransformer3DModel",), ("transformer_blocks",), "attn1", False),
    VideoLayout(("CogVideoXTransformer3DModel",), ("transformer_blocks",), "attn1", True),
    # dual-stream blocks, then single-stream blocks; both attend over [video; text]
    VideoLayout(
        ("HunyuanVideoTransformer3DModel",), ("transformer_blocks", "single_transformer_blocks"), "attn", True
    ),
)


def video_blocks(model: nn.Module) -> list[Block]:
    """The blocks of a video transformer in forward order, each with its compressed attention as
    the "attn" role. TypeError for a model no layout describes."""
    name = type(model).__name__
    for lay in LAYOUTS:
        if name in lay.classes:
            out: list[Block] = []
            for attr in lay.lists:
                for i, b in enumerate(getattr(model, attr)):
                    out.append(
                        Block(len(out), f"{attr}.{i}", b, 1, {"attn": getattr(b, lay.attn)}, joint=lay.joint)
                    )
            return out
    known = ", ".join(c for lay in LAYOUTS for c in lay.classes)
    raise TypeError(f"no video layout for {name}; known: {known}")


def attention_blocks(model: nn.Module) -> list[Block]:
    """The model's blocks with the attention a method compresses: from bigain's adapter where it
    supports the model, otherwise from `LAYOUTS`."""
    from ..patching import inspect_model

    try:
        return inspect_model(model).blocks
    except TypeError:
        return video_blocks(model)


PLACEMENTS = ("all", "relative")


def placement(num_blocks: int, blocks: Any = None) -> tuple[int, ...]:
    """Block indices of a placement: "all"; None or "relative" (the paper's DiT-XL/2 blocks 1-5 and
    7-11 of 28 mapped by relative depth: block j when floor(28 j / D) is one of them); or indices."""
    if blocks == "all":
        return tuple(range(num_blocks))
    if blocks is None or blocks == "relative":
        return relative_placement(num_blocks)
    return tuple(sorted(int(b) for b in blocks))


@dataclass
class Site:
    """One compressed attention and what one forward cost it."""

    block: int
    name: str  # qualified module name
    heads: int
    head_dim: int
    width: int  # input width of its projections (the width the merge metric compares)
    proj: dict[str, int]  # FLOPs per image token of each projection it has: q, k, v, out (2 in out)
    calls: list[tuple[int, int, int]] = field(default_factory=list)  # (batch, image tokens, text tokens)
    flops: int = 0  # counted: the whole attention module
    linear: int = 0  # counted: its linear layers (image and text projections)

    @property
    def core(self) -> int:
        """Counted attention matmuls (the module's FLOPs less its linear layers)."""
        return self.flops - self.linear

    def core_formula(self) -> int:
        """The same from the shapes: 4 B heads (N + text)^2 d per call."""
        return sum(4 * b * self.heads * self.head_dim * (n + t) ** 2 for b, n, t in self.calls)


@dataclass
class FlopBreakdown:
    """FLOPs of one forward, of its compressible attentions, and of all its attention matmuls."""

    total: int
    sites: list[Site]
    attention: int  # QK^T and AV matmuls of every attention module (sites, cross-attention, text refiners)
    num_blocks: int

    @property
    def attention_share(self) -> float:
        return self.attention / self.total

    def sites_flops(self, blocks: Any = None) -> int:
        chosen = set(placement(self.num_blocks, blocks))
        return sum(s.flops for s in self.sites if s.block in chosen)


def _projection_costs(attn: nn.Module) -> dict[str, int]:
    out = {}
    to_out = getattr(attn, "to_out", None)
    for key, lin in (
        ("q", getattr(attn, "to_q", None)),
        ("k", getattr(attn, "to_k", None)),
        ("v", getattr(attn, "to_v", None)),
        ("out", to_out[0] if isinstance(to_out, (nn.ModuleList, nn.Sequential)) else to_out),
    ):
        if isinstance(lin, nn.Linear):
            out[key] = 2 * lin.in_features * lin.out_features
    return out


def _linear_flops(module: nn.Module, prefix: str, by_module: dict[str, int]) -> int:
    return sum(
        by_module.get(f"{prefix}.{n}", 0) for n, m in module.named_modules() if n and isinstance(m, nn.Linear)
    )


def breakdown(model: nn.Module, inputs: Any, kwargs: dict[str, Any] | None = None) -> FlopBreakdown:
    """Count one forward of `model` (built on the meta device for full sizes) and record its sites."""
    blocks = attention_blocks(model)
    names = {id(m): n for n, m in model.named_modules()}
    sites: list[Site] = []
    handles = []
    text_prefix: dict[int, int] = {}

    for blk in blocks:
        attn = blk.roles["attn"]
        q = attn.to_q
        site = Site(blk.index, names[id(attn)], int(attn.heads), q.out_features // int(attn.heads), q.in_features,
                    _projection_costs(attn))  # fmt: skip
        sites.append(site)

        def pre(module: nn.Module, args: tuple, kw: dict, site: Site = site, blk: Block = blk) -> None:
            x = args[0] if args else kw["hidden_states"]
            ctx = args[1] if len(args) > 1 else kw.get("encoder_hidden_states")
            # joint attention, or text after the video (HunyuanVideo single-stream): text as encoder_hidden_states
            takes_text = blk.joint or getattr(blk, "text_suffix", False)
            t = int(ctx.shape[1]) if takes_text and ctx is not None else 0
            n = int(x.shape[1])
            if blk.text_prefix:  # [text; image] queries (Flux single-stream): text from the block's input
                t = text_prefix.get(blk.index, 0)
                n -= t
            site.calls.append((int(x.shape[0]), n, t))

        handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
        if blk.text_prefix:

            def block_pre(module: nn.Module, args: tuple, kw: dict, blk: Block = blk) -> None:
                ctx = args[1] if len(args) > 1 else kw.get("encoder_hidden_states")
                text_prefix[blk.index] = int(ctx.shape[1]) if ctx is not None else 0

            handles.append(blk.module.register_forward_pre_hook(block_pre, with_kwargs=True))
    try:
        total, by_module = flops_by_module(model, inputs, kwargs=kwargs, explicit=False)
    finally:
        for h in handles:
            h.remove()
    for site in sites:
        module = model.get_submodule(site.name)
        site.flops = by_module.get(site.name, 0)
        site.linear = _linear_flops(module, site.name, by_module)
    attention = 0
    for n, m in model.named_modules():
        if n in by_module and all(hasattr(m, a) for a in ("to_q", "to_k", "to_v")):
            attention += by_module[n] - _linear_flops(m, n, by_module)
    return FlopBreakdown(total, sites, attention, len(blocks))


@dataclass(frozen=True)
class Compression:
    """One way of compressing the sites: "ceiling", "merge" (ratio, matching) or "kv" (pool)."""

    kind: str
    ratio: float = 0.5
    matching: bool = False
    pool: tuple[int, int, int] = (1, 2, 2)  # (frames, height, width) of the key/value pooling

    def __post_init__(self) -> None:
        if self.kind not in ("ceiling", "merge", "kv"):
            raise ValueError(f"kind={self.kind!r}: allowed are ceiling, merge, kv")
        if self.kind == "merge" and not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio={self.ratio!r}: allowed is [0, 1)")
        if self.kind == "kv" and (len(self.pool) != 3 or min(self.pool) < 1):
            raise ValueError(f"pool={self.pool!r}: three factors >= 1 (frames, height, width)")

    @property
    def label(self) -> str:
        if self.kind == "ceiling":
            return "ceiling (compressed attentions free)"
        if self.kind == "merge":
            return f"merge r{self.ratio:g}" + (" + matching" if self.matching else " (free merge)")
        st, sh, sw = self.pool
        return f"kv {sh}x{sw} space" if st == 1 else f"kv {st}x{sh}x{sw} space-time"


def saved_flops(site: Site, grid: tuple[int, int, int], comp: Compression) -> int:
    """FLOPs `comp` removes from one site in one forward; `grid` is the (frames, height, width) token
    grid of the image tokens. Negative when a merge's matching costs more than it saves."""
    if comp.kind == "ceiling":
        return site.flops
    gt, gh, gw = grid
    saved = 0
    for b, n, t in site.calls:
        if n != gt * gh * gw:
            raise ValueError(f"{site.name}: {n} image tokens do not fit the {gt}x{gh}x{gw} token grid")
        c = 4 * b * site.heads * site.head_dim
        if comp.kind == "merge":
            m = kept_tokens(n, comp.ratio)
            saved += b * sum(site.proj.values()) * (n - m) + c * ((n + t) ** 2 - (m + t) ** 2)
            if comp.matching:
                dst = gt * (gh // 2) * (gw // 2)
                saved -= 2 * b * (n - dst) * dst * site.width
        else:
            st, sh, sw = comp.pool
            k = (gt // st) * (gh // sh) * (gw // sw)
            kv = site.proj.get("k", 0) + site.proj.get("v", 0)
            saved += b * kv * (n - k) + c * (n + t) * (n - k)
    return saved


def flops_left(bd: FlopBreakdown, grid: tuple[int, int, int], comp: Compression, blocks: Any = None) -> int:
    """FLOPs of one forward with `comp` on the sites of the placement `blocks`."""
    chosen = set(placement(bd.num_blocks, blocks))
    return bd.total - sum(saved_flops(s, grid, comp) for s in bd.sites if s.block in chosen)


def method_of(comp: Compression) -> tuple[str, dict[str, Any]] | None:
    """The bound or bigain method whose real hooks do what `comp` describes, with its options (KV pooling
    (ft, s, s): `todo` with `frame_factor` ft); None where bigain has no such setting."""
    if comp.kind == "ceiling":
        return "ceiling", {}
    if comp.kind == "merge":
        return ("tome", {"ratio": comp.ratio}) if comp.matching else ("ideal", {"ratio": comp.ratio})
    ft, sy, sx = tuple(comp.pool)
    if sy == sx:
        return "todo", ({"downsample_factor": sx} if ft == 1 else {"downsample_factor": sx, "frame_factor": ft})
    return None


def measured_flops(
    model: nn.Module, inputs: Any, comp: Compression, blocks: Any = None, kwargs: dict[str, Any] | None = None
) -> int | None:
    """FLOPs of one forward with the real hooks of `method_of(comp)` on the placement `blocks`; None
    where there is no such method. TypeError where bigain's methods do not support the model yet."""
    m = method_of(comp)
    if m is None:
        return None
    method, options = m
    chosen = list(placement(len(attention_blocks(model)), blocks))
    return count_flops(model, inputs, method, kwargs=kwargs, explicit=False, blocks=chosen, **options)
