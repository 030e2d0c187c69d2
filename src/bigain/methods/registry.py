"""Methods by name. Adding a method is one module with its config class plus one `register` call."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..textvalues import parse_option_value
from .base import MethodConfig

__all__ = ["ALIASES", "METHODS", "list_methods", "make_config", "parse_option_value", "register"]

METHODS: dict[str, type[MethodConfig]] = {}

# Option names users know from ToDo's command line.
ALIASES = {"factor": "downsample_factor", "factor_level_2": "downsample_factor_level_2"}


def register(cls: type[MethodConfig]) -> type[MethodConfig]:
    """Make a config class available by its `name` (usable as a class decorator)."""
    if cls.mechanism not in ("none", "tokens", "kv"):
        raise ValueError(f"method {cls.name!r}: unknown mechanism {cls.mechanism!r}")
    METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    """Names of the available methods."""
    return list(METHODS)


def make_config(method: str | MethodConfig, **options: Any) -> MethodConfig:
    """Build a validated config from a method name and tomesd/ToDo-style options."""
    if isinstance(method, MethodConfig):
        if options:
            return dataclasses.replace(method, **{ALIASES.get(k, k): v for k, v in options.items()})
        return method
    key = str(method).lower().replace("_", "-")
    if key not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    cls = METHODS[key]
    names = {f.name for f in dataclasses.fields(cls)}
    opts = {}
    for k, v in options.items():
        k = ALIASES.get(k, k)
        if k not in names:
            raise ValueError(f"method {key!r} has no option {k!r}; its options: {', '.join(sorted(names))}")
        opts[k] = v
    return cls(**opts)
