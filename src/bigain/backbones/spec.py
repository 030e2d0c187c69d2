"""A denoiser family described as data: `BackboneSpec`, and `SpecBackbone`, the adapter built from one.

Most transformer denoisers are lists of blocks on one patch grid: what differs between families is
where the block lists live, what each sub-layer is called, how text reaches the attention, which
arguments hold the latent and the timestep, and the default placement. A `BackboneSpec` says exactly
that; `SpecBackbone` turns it into the `Backbone` the hooks use, and `bigain.backbones.register` makes
bigain take the family's classes. Describing a model bigain does not know:

    from bigain.backbones import BackboneSpec, Stack, register

    register(BackboneSpec(
        name="my-dit",
        classes=("MyDiT",),                                  # type(model).__name__
        stacks=(Stack("blocks", {"attn": "attn", "ff": "mlp"}),),
        timestep="t",                                        # the forward's timestep argument
        placement="relative",                                # the paper's DiT placement by depth
    ))

Each `Stack` is one list of blocks (an `nn.ModuleList` at an attribute path of the model), in the
order the forward runs them, with the role of each sub-layer (role -> attribute path on the block;
a sub-layer that is missing or None on some blocks is left out there, except "attn", which every block
needs) and the text layout of its attention:

- "cross":  the attention sees image tokens only; text, if any, comes through a "cross" sub-layer;
- "joint":  the attention also takes the text as `encoder_hidden_states` and projects it itself
            ([text, image] or [image, text] inside the processor; bigain only touches the image part);
- "prefix": the attention's tokens are [text; image] in one sequence (text first).

The token grid is read from the latent argument, (B, C, H, W), over `config.<patch_size_attr>`, or,
where the latent does not say it, by a small function `grid(model, inputs) -> (rows, cols)` given the
forward's arguments by name. The timestep argument times `timestep_scale` must be on the 0-1000 scale
(a flow model that takes sigma in [0, 1] says 1000.0).

A spec's `rope_kwarg` means Flux's rotary layout ((cos, sin) tables of shape (S, D) on adjacent
channel pairs, after the q/k norms); another layout needs a subclass overriding `rope_rows` / `rope`; U-Nets (levels by feature-map resolution) and Flux
(the grid read from `img_ids`) are adapters written as code beside this module.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from .. import ops
from .base import PAPER_DIT_BLOCKS, Backbone, Block, ForwardInfo, as_timesteps, relative_placement

ROLES = ("attn", "attn2", "cross", "ff")
TEXT_LAYOUTS = ("cross", "joint", "prefix")

GridReader = Callable[[nn.Module, Mapping[str, Any]], tuple[int, int]]


@dataclass(frozen=True)
class Stack:
    """One list of transformer blocks of a model."""

    path: str  # attribute path of the block list on the model, e.g. "transformer_blocks"
    roles: Mapping[str, str]  # role -> attribute path on each block, e.g. {"attn": "attn1", "ff": "ff"}
    text: str = "cross"  # "cross" | "joint" | "prefix" (see the module docstring)

    def __post_init__(self) -> None:
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            raise ValueError(f"Stack {self.path!r}: unknown roles {unknown}; roles are {', '.join(ROLES)}")
        if "attn" not in self.roles:
            raise ValueError(f"Stack {self.path!r}: the roles must name the block's attention ('attn')")
        if self.text not in TEXT_LAYOUTS:
            raise ValueError(f"Stack {self.path!r}: text={self.text!r}; one of {', '.join(TEXT_LAYOUTS)}")


@dataclass(frozen=True)
class BackboneSpec:
    """A denoiser family as data (see the module docstring)."""

    name: str  # the adapter's name in reports and docs
    classes: tuple[str, ...]  # the model class names it takes
    stacks: tuple[Stack, ...]  # block lists in forward order
    latent: str = "hidden_states"  # the forward argument holding the (B, C, H, W) latent
    grid: GridReader | None = None  # the level-1 token grid when the latent does not say it
    patch_size_attr: str = "patch_size"  # config attribute: latent pixels per token side
    timestep: str = "timestep"  # the forward argument holding the timesteps
    timestep_scale: float = 1.0  # times the argument gives the 0-1000 scale
    placement: str | tuple[int, ...] = "relative"  # "relative" | "paper-dit" | block indices
    placement_text: str = ""  # the placement in words, for docs/coverage.md (derived if empty)
    default_metric: str = "attn"  # the merge metric: the attention input, or the "block" input
    refuses: Mapping[str, str] = field(default_factory=dict)  # method or mechanism -> reason
    rope_kwarg: str | None = None  # attention keyword carrying Flux-layout rotary tables

    def __post_init__(self) -> None:
        if isinstance(self.classes, str):
            object.__setattr__(self, "classes", (self.classes,))
        if isinstance(self.stacks, Stack):
            object.__setattr__(self, "stacks", (self.stacks,))
        if not self.name or not self.classes or not self.stacks:
            raise ValueError("BackboneSpec needs a name, at least one class and at least one Stack")
        if isinstance(self.placement, str):
            if self.placement not in ("relative", "paper-dit"):
                raise ValueError(
                    f"BackboneSpec {self.name!r}: placement={self.placement!r}; "
                    "'relative', 'paper-dit' or a tuple of block indices"
                )
        else:
            object.__setattr__(self, "placement", tuple(int(i) for i in self.placement))
        if self.default_metric not in ("attn", "block"):
            raise ValueError(f"BackboneSpec {self.name!r}: default_metric must be 'attn' or 'block'")
        if self.timestep_scale <= 0:
            raise ValueError(f"BackboneSpec {self.name!r}: timestep_scale must be positive")

    def describe_placement(self) -> str:
        if self.placement_text:
            return self.placement_text
        if self.placement == "relative":
            return "the DiT-XL/2 placement mapped by relative depth over all blocks in forward order"
        if self.placement == "paper-dit":
            return "blocks 1-5 and 7-11 (0-based), the paper's DiT-XL/2 placement taken literally"
        return "blocks " + ", ".join(str(i) for i in self.placement)


def _spec_attributes(spec: BackboneSpec) -> dict[str, Any]:
    """The `Backbone` attributes a spec sets."""
    return {
        "name": spec.name,
        "classes": tuple(spec.classes),
        "default_metric": spec.default_metric,
        "patch_size_attr": spec.patch_size_attr,
        "placement": spec.describe_placement(),
        "refuses": dict(spec.refuses),
        "rope_kwarg": spec.rope_kwarg,
    }


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@functools.lru_cache(maxsize=256)
def _positions(cls: type) -> dict[str, int]:
    """Positional index of each argument of `cls.forward` (without `self`)."""
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    return {
        p.name: i
        for i, p in enumerate(params)
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


def argument(model: nn.Module, args: tuple, kwargs: dict, name: str) -> Any:
    """The value of the forward argument `name` in this call (None when not given)."""
    if name in kwargs:
        return kwargs[name]
    pos = _positions(type(model)).get(name)
    return args[pos] if pos is not None and pos < len(args) else None


class _Inputs(Mapping):
    """The forward's arguments by name, read on demand (for a spec's `grid` function)."""

    def __init__(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        self._model, self._args, self._kwargs = model, args, kwargs

    def __getitem__(self, name: str) -> Any:
        value = argument(self._model, self._args, self._kwargs, name)
        if value is None and name not in self._kwargs:
            raise KeyError(name)
        return value

    def __iter__(self):
        names = list(_positions(type(self._model)))[: len(self._args)]
        return iter(names + [k for k in self._kwargs if k not in names])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SpecBackbone(Backbone):
    """The adapter a `BackboneSpec` describes: `SpecBackbone(spec)`, or a subclass with a class
    attribute `spec` (its other class attributes are filled from the spec unless it sets them)."""

    spec: ClassVar[BackboneSpec | None] = None
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            for attr, value in _spec_attributes(spec).items():
                if attr not in cls.__dict__:
                    setattr(cls, attr, value)

    def __init__(self, spec: BackboneSpec | None = None) -> None:
        if spec is not None:
            self.spec = spec  # type: ignore[misc]
            for attr, value in _spec_attributes(spec).items():
                setattr(self, attr, value)
        elif self.spec is None:
            raise TypeError("SpecBackbone needs a BackboneSpec")

    def __repr__(self) -> str:
        return f"SpecBackbone({self.spec.name!r})"

    def blocks(self, model: nn.Module) -> list[Block]:
        out: list[Block] = []
        for stack in self.spec.stacks:
            container = _get(model, stack.path)
            if container is None:
                continue  # a model configured without this stack (e.g. no single-stream blocks)
            for i, block in enumerate(container):
                name = f"{stack.path}.{i}"
                roles = {}
                for role, attr in stack.roles.items():
                    module = _get(block, attr)
                    if isinstance(module, nn.Module):
                        roles[role] = module
                if "attn" not in roles:
                    raise TypeError(
                        f"bigain ({self.spec.name}): {name} has no attention at `{stack.roles['attn']}`"
                    )
                out.append(
                    Block(
                        len(out),
                        name,
                        block,
                        1,
                        roles,
                        joint=stack.text == "joint",
                        text_prefix=stack.text == "prefix",
                    )
                )
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        placement = self.spec.placement
        if placement == "relative":
            return relative_placement(len(blocks))
        chosen = PAPER_DIT_BLOCKS if placement == "paper-dit" else placement
        return tuple(i for i in chosen if i < len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        spec = self.spec
        x = argument(model, args, kwargs, spec.latent)
        if spec.grid is None:
            if x is None or x.dim() != 4:
                raise ValueError(f"bigain: the {type(model).__name__} input must be a (B, C, H, W) latent")
            p = int(getattr(model.config, spec.patch_size_attr))
            grid = ops.Grid.image(int(x.shape[-2]) // p, int(x.shape[-1]) // p)
        else:
            if x is None:
                raise ValueError(f"bigain: the {type(model).__name__} forward got no `{spec.latent}`")
            rows, cols = spec.grid(model, _Inputs(model, args, kwargs))
            grid = ops.Grid.image(int(rows), int(cols))
        t = argument(model, args, kwargs, spec.timestep)
        dev, host = as_timesteps(t, x.shape[0], x.device, scale=spec.timestep_scale)
        return ForwardInfo(grid, dev, host)
