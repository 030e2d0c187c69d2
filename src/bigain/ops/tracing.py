"""Whether the code is being traced by torch.compile: traced code must not sync with the host,
draw from a torch.Generator or take paths (Triton launchers, host reads) a graph cannot hold."""

from __future__ import annotations

import torch


def is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())  # torch < 2.3
