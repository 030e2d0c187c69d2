"""One way to patch a model for benchmarking: bigain's methods, plus the peer tomesd for comparison.

`patched(model, "tomesd", ratio=..., max_downsample=...)` applies tomesd 0.1.3 (if installed) and
removes it on exit; "ceiling" and "ideal" (options `ratio`, `blocks`) apply the bounds of
`bench.bounds`; every other name goes through `bigain.compressed`. `compressed_sublayers` lists
the sub-layers a method would compress (attn1, and attn2/ff when their merging is on), which is what
the speedup ceiling is measured on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from ..methods import make_config
from ..patching import compressed, inspect_model
from .bounds import BOUNDS, bound

TOMESD = "tomesd"
_TOMESD_OPTIONS = (
    "ratio",
    "max_downsample",
    "sx",
    "sy",
    "use_rand",
    "merge_attn",
    "merge_crossattn",
    "merge_mlp",
)


def _check_tomesd_options(options: dict[str, Any]) -> None:
    bad = [k for k in options if k not in _TOMESD_OPTIONS]
    if bad:
        raise ValueError(f"tomesd has no option {bad[0]!r}; its options: {', '.join(_TOMESD_OPTIONS)}")


@contextlib.contextmanager
def patched(model: nn.Module, method: str | None = None, **options: Any) -> Iterator[Any]:
    """Patch `model` with a bigain method or with "tomesd" for the duration of the block.

    None (or "none" without options) leaves the model untouched. Yields the bigain PatchReport,
    or None for tomesd / no method.
    """
    if method is None:
        yield None
        return
    if method == TOMESD:
        import tomesd

        _check_tomesd_options(options)
        tomesd.apply_patch(model, **options)
        try:
            yield None
        finally:
            tomesd.remove_patch(model)
        return
    if method in BOUNDS:
        bad = [k for k in options if k not in ("ratio", "blocks")]
        if bad:
            raise ValueError(f"{method} has no option {bad[0]!r}; its options: ratio, blocks")
        with bound(model, method, **options):
            yield None
        return
    with compressed(model, method, **options) as report:
        yield report


def _tomesd_blocks(model: nn.Module, options: dict[str, Any]) -> list[str]:
    """Blocks tomesd merges: those at downsample level <= max_downsample (levels as bigain's discovery)."""
    _check_tomesd_options(options)
    info = inspect_model(model)
    max_down = int(options.get("max_downsample", 1))
    if info.kind == "unet":
        return [s.name for s in info.sites if s.level <= max_down]
    # Transformers: every token grid is the latent over the patch size, i.e. tomesd's level = patch size.
    return [s.name for s in info.sites] if info.patch_size <= max_down else []


def compressed_sublayers(model: nn.Module, method: str | None, **options: Any) -> list[str]:
    """Qualified names of the sub-layers (`<block>.attn1`, `.attn2`, `.ff`) the method compresses.

    The model is not left patched (bigain methods are applied and removed to read the report).
    """
    if method is None or method == "none":
        return []
    if method == TOMESD:
        blocks = _tomesd_blocks(model, options)
        subs = [
            s
            for s, flag in (("attn1", "merge_attn"), ("attn2", "merge_crossattn"), ("ff", "merge_mlp"))
            if options.get(flag, s == "attn1")
        ]
        return [f"{b}.{s}" for b in blocks for s in subs]
    if method in BOUNDS:
        method, options = "tome", {k: v for k, v in options.items() if k == "blocks"}
    cfg = make_config(method, **options)
    with compressed(model, cfg) as report:
        patched = {b.index for b in report.blocks}
    info = inspect_model(model)
    roles = ("attn",) if cfg.mechanism == "kv" else cfg.reduced_roles()
    if "attn" in roles:
        roles = (*roles, "attn2")  # SD3.5's second self-attention runs on the same reduced tokens
    out = []
    for block in info.blocks:
        if block.index in patched:
            names = info.role_names(block)
            out += [names[r] for r in roles if r in names]
    return out
