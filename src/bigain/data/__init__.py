"""Data sets by name: ``builtin:fashion-mnist`` (test split shipped), or a folder of IDX files."""

from __future__ import annotations

import os
from pathlib import Path

from .fashion_mnist import (
    CLASS_NAMES,
    IMAGE_SIZE,
    NAME,
    NUM_CLASSES,
    FashionMNIST,
    load_arrays,
    read_idx,
    to_tensor,
    to_uint8,
    write_idx,
)

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "NUM_CLASSES",
    "FashionMNIST",
    "load",
    "load_arrays",
    "read_idx",
    "to_tensor",
    "to_uint8",
    "write_idx",
]

_ALIASES = {NAME, "fashion-mnist", "fashion_mnist"}


def load(name: str | os.PathLike = NAME, split: str = "test", limit: int | None = None) -> FashionMNIST:
    """A data set by name: ``builtin:fashion-mnist`` or a folder of Fashion-MNIST-format IDX files."""
    if str(name) in _ALIASES:
        return FashionMNIST(split=split, limit=limit)
    if Path(name).is_dir():
        return FashionMNIST(split=split, root=name, limit=limit)
    raise ValueError(f"data={str(name)!r}: expected {NAME!r} or a folder of IDX files")
