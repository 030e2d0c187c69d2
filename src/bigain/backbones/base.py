"""What the patching layer needs to know about a denoiser family, as data plus a few small functions.

An adapter says where the transformer blocks live, the role of each sub-layer, how the hidden
states are laid out, how to find the token grid and the timestep (0-1000 scale) from the model's
inputs, and the default placement. The hooks in `bigain.patching` are generic over this.

Sub-layer roles:
- "attn":  the attention that token methods reduce and KV methods downsample (self-attention on
           U-Net/DiT/PixArt; the joint image-text attention on SD3/Flux, image stream only);
- "attn2": a second image self-attention reduced with the same plan (SD3.5's dual attention);
- "cross": cross-attention to text (reduced only with merge_crossattn);
- "ff":    the feed-forward (reduced only with merge_mlp).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .. import ops

# The paper's DiT-XL/2 placement: 0-based blocks 1-5 and 7-11 of 28.
PAPER_DIT_BLOCKS = (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)
PAPER_DIT_DEPTH = 28


def relative_placement(num_blocks: int) -> tuple[int, ...]:
    """The paper's DiT placement mapped by relative depth onto a model with `num_blocks` blocks:
    block j is chosen when floor(j * 28 / num_blocks) is one of the paper's indices."""
    return tuple(j for j in range(num_blocks) if (j * PAPER_DIT_DEPTH) // num_blocks in PAPER_DIT_BLOCKS)


@dataclass
class Block:
    """One transformer block a method may act on."""

    index: int  # position among the model's transformer blocks, in forward order
    name: str  # module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0"
    module: nn.Module
    level: int  # the block's token grid is `level` times coarser than level 1 (1 on transformers)
    roles: dict[str, nn.Module] = field(default_factory=dict)
    joint: bool = False  # attention also takes text as encoder_hidden_states (SD3 / Flux double-stream)
    text_prefix: bool = False  # the attention's tokens are [text; image] (Flux single-stream)
    # The attention takes the image as hidden_states and the text as encoder_hidden_states and its
    # processor joins [image; text] before to_q/to_k/to_v (HunyuanVideo single-stream)
    text_suffix: bool = False
    # The attention's hidden_states are [image; other tokens] joined by the model (HiDream: padding to
    # a fixed length, then on single-stream blocks the text); the tokens after the image are kept whole
    image_first: bool = False

    @property
    def block(self) -> nn.Module:  # older name, kept for callers of the report
        return self.module


def double_single_blocks(model: nn.Module, single: str = "text_prefix") -> list[Block]:
    """The Flux-style stack, in forward order: `transformer_blocks` (double-stream: joint attention
    `attn`, feed-forward `ff`), then `single_transformer_blocks` (attention `attn` alone), whose text
    layout is the Block flag `single` ("text_prefix": [text; image], "text_suffix": [image; text])."""
    out = [
        Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn, "ff": b.ff}, joint=True)
        for i, b in enumerate(model.transformer_blocks)
    ]
    layout = {single: True}
    for i, b in enumerate(model.single_transformer_blocks):
        out.append(Block(len(out), f"single_transformer_blocks.{i}", b, 1, {"attn": b.attn}, **layout))
    return out


@dataclass
class ForwardInfo:
    """What one forward of the denoiser looks like, read by the model pre-hook."""

    grid: ops.Grid  # level-1 grid: the latent (1, H, W) on U-Nets, the token grid on transformers
    timesteps: torch.Tensor | None  # (B,) float32 on the 0-1000 scale, on the input's device
    host_timesteps: tuple[float, ...] | None = None  # the same, when the caller gave Python numbers
    extra: dict[str, Any] = field(default_factory=dict)  # adapter-specific


def call_arg(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    """A call's argument: positional at `position` when given so, else keyword `name` (None if absent)."""
    return args[position] if len(args) > position else kwargs.get(name)


def with_call_arg(args: tuple, kwargs: dict, position: int, name: str, value: Any) -> tuple[tuple, dict]:
    """The call's (args, kwargs) with that argument replaced by `value`, where the caller put it."""
    if len(args) > position:
        return args[:position] + (value,) + tuple(args[position + 1 :]), kwargs
    return args, {**kwargs, name: value}


def as_timesteps(
    t: Any, batch: int, device: torch.device, scale: float = 1.0
) -> tuple[torch.Tensor | None, tuple[float, ...] | None]:
    """(device timesteps, host timesteps or None): (B,) float32 on the 0-1000 scale, and the same
    as Python floats when the caller passed Python numbers.

    A tensor is never read (on a GPU a read stalls the host); a Python number becomes a device
    tensor by a fill (no host-to-device copy).
    """
    if t is None:
        return None, None
    if isinstance(t, torch.Tensor):
        if t.dim() == 0:
            t = t.reshape(1)
        if t.shape[0] != batch:
            t = t.expand(batch)
        dev = t.to(device=device, dtype=torch.float32)
        return (dev * scale if scale != 1.0 else dev), None
    if isinstance(t, numbers.Number):
        dev = torch.full((batch,), float(t), device=device, dtype=torch.float32)
        values = [float(t)] * batch
    else:
        values = [float(v) for v in t]
        if len(values) == 1 and batch != 1:
            values = values * batch
        dev = torch.tensor(values, device=device, dtype=torch.float32)
    if scale != 1.0:
        dev = dev * scale
    return dev, tuple(v * scale for v in values)


def patch_grid_forward(model: nn.Module, args: tuple, kwargs: dict, t_pos: int) -> ForwardInfo:
    """ForwardInfo of a transformer that patchifies a (B, C, H, W) latent (`hidden_states`, first
    argument) with `config.patch_size`, its timestep at position `t_pos` or keyword `timestep`."""
    x = args[0] if args else kwargs.get("hidden_states")
    if x is None or x.dim() != 4:
        raise ValueError(f"bigain: the {type(model).__name__} input must be a (B, C, H, W) latent")
    t = args[t_pos] if len(args) > t_pos else kwargs.get("timestep")
    dev, host = as_timesteps(t, x.shape[0], x.device)
    p = int(model.config.patch_size)
    return ForwardInfo(ops.Grid.image(int(x.shape[-2]) // p, int(x.shape[-1]) // p), dev, host)


class Backbone:
    """One denoiser family. Subclasses fill in the class attributes and the small functions."""

    name: ClassVar[str] = ""
    classes: ClassVar[tuple[str, ...]] = ()  # diffusers class names this adapter takes
    default_metric: ClassVar[str] = "attn"  # the merge metric: "block" input or "attn" input
    patch_size_attr: ClassVar[str] = "patch_size"
    placement: ClassVar[str] = ""  # the default placement in words (docs/coverage.md)
    # Methods this family does not take, by method name or mechanism ("tokens", "kv"), with the
    # reason `apply` gives; every method is taken by default.
    refuses: ClassVar[dict[str, str]] = {}
    # Rotary tables passed to the "attn" sub-layer, by keyword `rope_kwarg` or at argument position
    # `rope_position`; None: the family has none (or applies them before the attention). When a
    # method changes the tokens that attention sees, the hooks take the tables out of the call and
    # apply `rope` to the q/k norm outputs with the rows of the tokens actually present.
    rope_kwarg: ClassVar[str | None] = None
    rope_position: ClassVar[int | None] = None
    # The "cross" sub-layer is called with the same rotary tables (by `rope_kwarg`) and rotates its
    # queries with the image rows, the keys (text) not (HunyuanDiT): when `merge_crossattn` reduces
    # its queries, the hooks take the tables out of that call too and rotate the q norm output with
    # the rows of the tokens present.
    cross_rope: ClassVar[bool] = False
    # The attention's q/k norms whose outputs the hooks rotate: image (or joined) query and key, then
    # the text query and key of a joint attention (absent ones are skipped).
    rope_norms: ClassVar[tuple[str, str, str, str]] = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")
    # Joint blocks whose attention processor joins [text; image] (encoder_hidden_states first) before
    # to_k/to_v (CogVideoX): the processor classes known to do so. KV methods then give to_k/to_v
    # [text; downsampled image] in place of the joined sequence; any other processor is refused.
    kv_text_join_processors: ClassVar[tuple[str, ...]] = ()
    # The same for `text_suffix` blocks, whose processor joins [image; text] (HunyuanVideo single-stream).
    kv_suffix_join_processors: ClassVar[tuple[str, ...]] = ()
    # An attention mask passed to the "attn" sub-layer (keyword `mask_kwarg`, or position
    # `mask_position`) whose image entries are all kept (it masks only padded text). `mask_layout`
    # "keys": a (B, 1, 1, keys) key mask over [image; text] (HunyuanVideo); when a method shortens
    # the image keys, the hooks drop that many entries from the front. "pairs": a (B, 1, queries,
    # keys) mask over [text; image] (Chroma); the hooks drop image keys (and, when the queries are
    # shortened too, image queries) from the end. "tail": a key mask without query rows, (B, keys) or
    # (B, 1, 1, keys), the image keys last (Qwen-Image 2.1); the hooks drop image keys from the end.
    # "tokens": a (B, tokens) mask over the attention's hidden_states, image first (HiDream's
    # padded-key mask); the hooks drop entries from the front. A tuple of keywords names several
    # such masks of one call, each cut alike. None: no mask is adjusted.
    mask_kwarg: ClassVar[str | tuple[str, ...] | None] = None
    mask_position: ClassVar[int | None] = None
    mask_layout: ClassVar[str] = "keys"

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The (cos, sin) tables of an attention call as (S, D) rows ([text; image] rows on Flux)."""
        return tables

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        """Rotate a q/k norm output `x` of `attn` with (S, D) or per-sample (B, S, D) rows."""
        return ops.rope_pairs(x, cos, sin)

    def install_around(self, patch: Any, hooks: Any, after: bool) -> None:
        """The adapter's own hooks around the method's on one patched block, for a layout the generic
        hooks cannot read as the model passes it (Lumina2: a per-sample caption length in front of
        the image). Called just before the method's hooks are registered (`after` False: pre
        functions added now run before the method's) and just after (`after` True: pre functions
        run after the method's, post functions last). `patch` is the block's hook object (its
        `block`; `patch.state.current()` is the forward's record, whose `cache` is dropped with
        the forward); `hooks` the patch's `HookSet`. Nothing by default."""

    def rope_stand_in(self, tables: Any) -> Any:
        """What the attention gets in place of its rotary tables once the hooks rotate q/k themselves
        (None: nothing; a processor that always rotates gets tables that change nothing)."""
        return None

    def refusal(self, method: str, mechanism: str) -> str | None:
        """Why this family refuses a method (by its name or its mechanism), or None."""
        return self.refuses.get(method) or self.refuses.get(mechanism)

    def matches(self, model: nn.Module) -> bool:
        return type(model).__name__ in self.classes

    def blocks(self, model: nn.Module) -> list[Block]:  # pragma: no cover - abstract
        raise NotImplementedError

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        """Default placement as block indices, or None to place by level (`max_downsample`)."""
        return None

    def default_level(self, blocks: list[Block]) -> int:
        """The level that level-placed methods act on by default."""
        return 1

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:  # pragma: no cover
        """The forward's grid and timesteps. `cache`: this patch's own dict, for what an adapter
        learns once per model (never shared between models)."""
        raise NotImplementedError

    def grid(self, info: ForwardInfo, block: Block, num_tokens: int) -> ops.Grid:
        """The token grid of `block` in this forward."""
        grid = info.grid
        if grid.tokens != num_tokens:
            shape = f"{grid.height}x{grid.width}" if grid.is_image else str(grid)
            raise ValueError(f"bigain: {num_tokens} image tokens do not fit the {shape} token grid of {block.name}")
        return grid

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        """The level-1 grid at the model's configured sample size (for the report), if known."""
        s = getattr(model.config, "sample_size", None)
        if s is None:
            return None
        h, w = (s, s) if isinstance(s, int) else (int(s[0]), int(s[1]))
        p = int(getattr(model.config, self.patch_size_attr, 1) or 1)
        return ops.Grid.image(h // p, w // p)

    def block_grid(self, grid: ops.Grid, level: int) -> ops.Grid:
        """The token grid of a block at `level` given the level-1 grid."""
        return grid
