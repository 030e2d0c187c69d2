"""What token compression can buy, counted in FLOPs (arithmetic, not timing): video transformers,
and every image family with a bigain adapter.

The attentions a method compresses ("sites": the "attn" sub-layer of each transformer block, and
SD3.5's second self-attention "attn2") come from bigain's backbone adapter when it supports the
model, and otherwise from `LAYOUTS` (data: where the blocks live, which attention of a block is
compressed). One forward on the meta device gives the FLOPs of the model and of each of its modules
(`flops_by_module`) and, per call of each site, (batch, N image tokens, other tokens): with an
adapter, N is the adapter's token grid for that forward and the other tokens are the rest of the
attention's input (a text prefix; padding and text after the image on `image_first` blocks) plus
the text it takes beside it (joint and `text_suffix` blocks). What a compression leaves is then
arithmetic on those shapes, per site of the chosen blocks:

- ceiling: the site costs nothing (its whole attention sub-layer, as `bounds.bound("ceiling")`);
- merge r: its N image tokens become M = N - int(r N) (a free merge: every projection of the image
  stream, fused ones included, runs on M tokens and attention on M image queries and keys beside
  the other tokens); `matching=True` adds the bipartite matching's similarity matmul,
  2 B n_src n_dst C, with one destination per 2x2 window of each frame (n_dst = T (H//2)(W//2)),
  as ToMe and BiGain-TM choose them;
- kv (st, sh, sw): keys and values come from the image tokens pooled st x sh x sw over
  (frames, height, width) (floor), so the key and value projections run on
  K = (T//st)(H//sh)(W//sw) tokens and attention on N image queries over K image keys; queries
  and the output projection keep every token.

`method_flops_left` does the same for a bigain method at its placement: the tokens its plan keeps
(or its pooled keys), plus its plan's own matmuls (`plan_flops`, counted on a bare metric).

Attention is counted as its two matmuls, 4 B heads Nq Nk d, over every token ("softmax" sites);
a site whose counted matmuls say otherwise is block-causal ("prefix": Qwen-Image 2.1's prefix
attends only to itself) or linear attention ("linear": Sana), each with its own arithmetic (see
`Site.form`). Linear layers count 2 m n k (no bias), as FlopCounterMode counts them; pooling,
gathers and scatters are not matmuls and count zero. `measured_flops` counts the same compressions
with the real hooks (the bounds, or a bigain method through `bigain.apply`), and
tests/test_bench_accounting.py checks the arithmetic against them on every tiny config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
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
    proj: dict[str, int]  # FLOPs per image token of each projection of the image stream (2 in out)
    calls: list[tuple[int, int, int]] = field(default_factory=list)  # (batch, image tokens, other tokens)
    grids: list[tuple[int, int, int]] = field(default_factory=list)  # the image's (T, H, W) grid per call
    flops: int = 0  # counted: the whole attention module
    linear: int = 0  # counted: its linear layers (image and text projections)
    role: str = "attn"  # "attn2": a second image self-attention token methods reduce alike (SD3.5)

    @property
    def core(self) -> int:
        """Counted attention matmuls (the module's FLOPs less its linear layers)."""
        return self.flops - self.linear

    def core_formula(self) -> int:
        """The same from the shapes: 4 B heads (N + other)^2 d per call (softmax attention)."""
        return sum(4 * b * self.heads * self.head_dim * (n + t) ** 2 for b, n, t in self.calls)

    @property
    def form(self) -> str:
        """How the counted attention matmuls follow the tokens: "softmax" (QK^T and AV over every
        token, 4 B heads (N + other)^2 d); "prefix" (block-causal, Qwen-Image 2.1: the image queries
        attend to every key, 4 B heads d N (N + other), and the other tokens, a prefix, only to
        themselves, which no compression changes); "linear" (linear attention, Sana and SANA-Video:
        K^T V and Q (K^T V) plus a normaliser, between 4 d^2 and 4 d^2 + 4 d per token and head);
        else "unknown" (the arithmetic refuses the site)."""
        if self.core == self.core_formula():
            return "softmax"
        h, d = self.heads, self.head_dim
        tokens = sum(b * h * (n + t) for b, n, t in self.calls)
        if tokens and self.core % tokens == 0 and 4 * d * d <= self.core // tokens <= 4 * d * (d + 1):
            return "linear"
        low = sum(4 * b * h * d * n * (n + t) for b, n, t in self.calls)
        high = low + sum(4 * b * h * d * t * t for b, n, t in self.calls)
        if low <= self.core < high:
            return "prefix"
        return "unknown"

    def image_attention(self, batch: int, other: int, queries: int, keys: int) -> int:
        """The attention matmuls of one call that depend on the image: `queries` image queries and
        `keys` image keys beside `other` tokens (the prefix's own attention, where it attends to
        itself only, left out). Linear attention: only as many queries as keys (its split between
        them is not known from the count)."""
        h, d = self.heads, self.head_dim
        form = self.form
        if form == "linear":
            if queries != keys:
                raise ValueError(f"{self.name}: linear attention with fewer keys than queries is not modelled")
            per = self.core // sum(b * h * (n + t) for b, n, t in self.calls)
            return batch * h * per * (queries + other)
        if form == "prefix":
            return 4 * batch * h * d * queries * (keys + other)
        return 4 * batch * h * d * (queries + other) * (keys + other)

    def check_form(self) -> None:
        if self.form == "unknown":
            raise ValueError(
                f"{self.name}: its attention matmuls ({self.core} FLOPs) are neither softmax, block-causal "
                "nor linear attention over its tokens; the arithmetic cannot compress it"
            )


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


def is_text_projection(name: str) -> bool:
    """A projection of the text stream of a joint attention, by diffusers' names: add_q_proj,
    add_k_proj, add_v_proj, to_add_out (HiDream: to_q_t, to_k_t, to_v_t, to_out_t)."""
    leaf = name.split(".")[0]
    return leaf.startswith("add_") or leaf == "to_add_out" or leaf.endswith("_t")


def _projection_costs(attn: nn.Module) -> dict[str, int]:
    """FLOPs per token of every linear layer of the attention's image stream, by name: "q", "k", "v",
    "out" for to_q, to_k, to_v, to_out(.0) (Kandinsky 5: to_query, to_key, to_value, out_layer); fused projections under their own names (Flux 2's
    `to_qkv_mlp_proj`, whose MLP share a token method reduces too)."""
    short = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out": "out", "to_out.0": "out"}
    short.update({"to_query": "q", "to_key": "k", "to_value": "v", "out_layer": "out"})  # Kandinsky 5
    out = {}
    for name, lin in attn.named_modules():
        if name and isinstance(lin, nn.Linear) and not is_text_projection(name):
            out[short.get(name, name)] = 2 * lin.in_features * lin.out_features
    return out


def _heads(attn: nn.Module) -> tuple[int, int]:
    """(heads, head dim) of an attention: its `heads` (`num_heads`), and its query projection's width
    over them (or `head_dim`)."""
    heads = int(attn.heads if hasattr(attn, "heads") else attn.num_heads)
    q = getattr(attn, "to_q", getattr(attn, "to_query", None))
    if isinstance(q, nn.Linear):
        return heads, q.out_features // heads
    return heads, int(attn.head_dim)


def _linear_flops(module: nn.Module, prefix: str, by_module: dict[str, int]) -> int:
    return sum(
        by_module.get(f"{prefix}.{n}", 0) for n, m in module.named_modules() if n and isinstance(m, nn.Linear)
    )


def _adapter(model: nn.Module) -> Any:
    from ..patching import inspect_model

    try:
        return inspect_model(model).backbone
    except TypeError:
        return None


def breakdown(model: nn.Module, inputs: Any, kwargs: dict[str, Any] | None = None) -> FlopBreakdown:
    """Count one forward of `model` (built on the meta device for full sizes) and record its sites.

    On a model with a bigain adapter the image tokens of each call are the adapter's grid (read from
    the forward's inputs as the patch reads it); the other tokens the attention attends over are the
    rest of its input (a text prefix, or what follows the image on `image_first` blocks) and, where
    the attention takes the text beside it (`joint`, `text_suffix`), the text. Without an adapter
    (`LAYOUTS`) the input is the image, after a text prefix on `text_prefix` blocks."""
    from .bounds import text_argument

    blocks = attention_blocks(model)
    backbone = _adapter(model)
    names = {id(m): n for n, m in model.named_modules()}
    sites: list[Site] = []
    handles = []
    text_prefix: dict[int, int] = {}
    forward: dict[str, Any] = {}
    cache: dict[str, Any] = {}

    def model_pre(module: nn.Module, args: tuple, kw: dict) -> None:
        forward["grid"] = backbone.read_forward(module, args, kw, cache).grid

    if backbone is not None:
        handles.append(model.register_forward_pre_hook(model_pre, with_kwargs=True))

    for blk, role in [(b, r) for b in blocks for r in ("attn", "attn2") if r in b.roles]:
        attn = blk.roles[role]
        heads, head_dim = _heads(attn)
        site = Site(blk.index, names[id(attn)], heads, head_dim, 0, _projection_costs(attn), role=role)
        sites.append(site)

        def pre(module: nn.Module, args: tuple, kw: dict, site: Site = site, blk: Block = blk) -> None:
            x = args[0] if args else kw["hidden_states"]
            ctx = text_argument(args, kw)
            # the text beside the input, attended over with it (never on a second self-attention)
            takes_text = (blk.joint or blk.text_suffix) and site.role == "attn"
            t = int(ctx.shape[1]) if takes_text and ctx is not None else 0
            size = int(x.shape[1])
            site.width = int(x.shape[-1])
            if backbone is not None:
                g = backbone.block_grid(forward["grid"], blk.level)
                n, grid = g.tokens, (g.frames, g.height, g.width)
                if size < n or (size > n and not (blk.text_prefix or blk.image_first)):
                    raise ValueError(f"{site.name}: {size} tokens in the attention but a {g} image grid")
                t += size - n  # the text prefix, or the tokens after the image
            else:
                n, grid = size, (0, 0, 0)
                if blk.text_prefix:  # [text; image] queries: the text is the block's encoder_hidden_states
                    t = text_prefix.get(blk.index, 0)
                    n -= t
            site.calls.append((int(x.shape[0]), n, t))
            site.grids.append(grid)

        handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
        if blk.text_prefix and backbone is None and role == "attn":

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
    site_names = {s.name for s in sites}  # fused attentions without to_q/to_k/to_v too (Flux 2)
    for n, m in model.named_modules():
        if n in by_module and (n in site_names or all(hasattr(m, a) for a in ("to_q", "to_k", "to_v"))):
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


def _grids(site: Site, grid: tuple[int, int, int] | None) -> list[tuple[int, int, int]]:
    """The image grid of every call: `grid` for each (checked against the tokens), else the grid the
    adapter gave each call."""
    if grid is None:
        if any(g == (0, 0, 0) for g in site.grids):
            raise ValueError(f"{site.name}: no adapter gave its grid; pass the (frames, height, width) token grid")
        return site.grids
    gt, gh, gw = grid
    for _, n, _ in site.calls:
        if n != gt * gh * gw:
            raise ValueError(f"{site.name}: {n} image tokens do not fit the {gt}x{gh}x{gw} token grid")
    return [tuple(grid)] * len(site.calls)


def merge_saving(site: Site, batch: int, n: int, t: int, m: int) -> int:
    """FLOPs a site saves in one call when its n image tokens become m (queries and keys; the
    other t tokens whole; every projection of the image stream on m tokens)."""
    site.check_form()
    proj = batch * sum(site.proj.values()) * (n - m)
    return proj + site.image_attention(batch, t, n, n) - site.image_attention(batch, t, m, m)


def kv_saving(site: Site, batch: int, n: int, t: int, k: int) -> int:
    """FLOPs a site saves in one call when its keys and values come from k of its n image tokens."""
    site.check_form()
    kv = site.proj.get("k", 0) + site.proj.get("v", 0)
    return batch * kv * (n - k) + site.image_attention(batch, t, n, n) - site.image_attention(batch, t, n, k)


def saved_flops(site: Site, grid: tuple[int, int, int] | None, comp: Compression) -> int:
    """FLOPs `comp` removes from one site in one forward; `grid` is the (frames, height, width) token
    grid of the image tokens (None: the grid the adapter gave each call). Negative when a merge's
    matching costs more than it saves."""
    if comp.kind == "ceiling":
        return site.flops
    if comp.kind == "kv" and site.role != "attn":
        return 0  # keys and values are downsampled in the block's attention only
    saved = 0
    for (b, n, t), (gt, gh, gw) in zip(site.calls, _grids(site, grid)):
        if comp.kind == "merge":
            saved += merge_saving(site, b, n, t, kept_tokens(n, comp.ratio))
            if comp.matching:
                dst = gt * (gh // 2) * (gw // 2)
                saved -= 2 * b * (n - dst) * dst * site.width
        else:
            st, sh, sw = comp.pool
            saved += kv_saving(site, b, n, t, (gt // st) * (gh // sh) * (gw // sw))
    return saved


def flops_left(
    bd: FlopBreakdown, grid: tuple[int, int, int] | None, comp: Compression, blocks: Any = None
) -> int:
    """FLOPs of one forward with `comp` on the sites of the placement `blocks` (`grid` None: each
    call's grid from the adapter)."""
    chosen = set(placement(bd.num_blocks, blocks))
    return bd.total - sum(saved_flops(s, grid, comp) for s in bd.sites if s.block in chosen)


def plan_flops(config: Any, batch: int, grid: tuple[int, int, int], width: int) -> int:
    """FLOPs of one token plan of a bigain method (its matching or scoring: ToMe's similarity matmul,
    BiGain-TM's filter, SiTo's scores) on a (batch, tokens, width) metric, counted on the meta
    device: what the method pays beyond a free merge in each block call."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..methods import Draw
    from ..ops import Grid

    g = Grid.of(grid)
    metric = torch.empty(batch, g.tokens, width, device="meta")
    draw = Draw(0, keys=torch.zeros(batch, dtype=torch.int64, device="meta"))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        config.make_plan(metric, g, draw)
    return int(counter.get_total_flops())


def method_flops_left(model: nn.Module, bd: FlopBreakdown, method: Any, **options: Any) -> int:
    """FLOPs of one forward with a bigain method (name or config, `options` as `bigain.apply` takes
    them) at its placement, by arithmetic on the counted shapes: a token method's sites run on the
    tokens its plan keeps (`reduced_tokens`) and pay its plan (`plan_flops`) per call; a KV method's
    keys and values come from the tokens its pooling keeps. Every call's grid comes from the adapter
    (the method must act at every call: a KV method's stop_t is not applied)."""
    from ..methods import make_config
    from ..ops import Grid
    from ..patching import inspect_model
    from ..patching.api import select_blocks

    cfg = make_config(method, **options)
    if cfg.mechanism not in ("tokens", "kv"):
        return bd.total
    info = inspect_model(model)
    params = {b.index: p for b, p in select_blocks(info, cfg)}
    roles = cfg.reduced_roles() if cfg.mechanism == "tokens" else ("attn",)
    if cfg.mechanism == "tokens" and roles != ("attn",):
        raise ValueError(f"the arithmetic reduces the attention only; {cfg.name} reduces {', '.join(roles)}")
    saved = 0
    plans: dict[tuple, int] = {}
    for site in bd.sites:
        if site.block not in params:
            continue
        param = params[site.block]
        if cfg.mechanism == "kv" and site.role != "attn":
            continue  # keys and values are downsampled in the block's attention only
        for (b, n, t), grid in zip(site.calls, _grids(site, None)):
            g = Grid.of(grid)
            kept = cfg.reduced_tokens(n, g, param)
            if cfg.mechanism == "kv":
                saved += kv_saving(site, b, n, t, kept)
                continue
            saved += merge_saving(site, b, n, t, kept)
            if kept < n and site.role == "attn":  # one plan per block call, shared by its attn2
                key = (b, grid, site.width)
                if key not in plans:
                    plans[key] = plan_flops(cfg, b, grid, site.width)
                saved -= plans[key]
    return bd.total - saved


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
