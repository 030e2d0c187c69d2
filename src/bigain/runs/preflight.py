"""Checks that need the loaded model, run before a run folder is written.

Some settings can only be judged against the model itself: whether ``sx``/``sy`` windows fit the
token grid, whether a placement selects any block, whether a downsample factor divides the grid.
They surface at the first forward. Running that forward once here, on a single row, means a bad
setting fails before any folder or ``config.json`` exists, so the corrected rerun is not refused
as "a different run".
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_method_on_model", "normalise_options"]


def normalise_options(method: str | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """Every option of ``method`` with its defaults filled in and aliases resolved (the run identity):
    ``seed=0`` given explicitly and no ``seed`` at all are the same run. Raises ValueError/TypeError
    for an unknown method or a bad option."""
    options = dict(options or {})
    if method in (None, "", "none") and not options:
        return {}
    import bigain

    cfg = bigain.make_config(method or "none", **options)
    out = cfg.as_dict() if hasattr(cfg, "as_dict") else dict(vars(cfg))
    out.pop("method", None)
    out.pop("generator", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@torch.inference_mode()
def check_method_on_model(bundle: Any, method: str | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate ``method`` and ``options`` against the loaded ``bundle`` (one denoiser forward on one
    row under the method, then the model is restored). Returns the normalised options.

    Any error the method would raise at the run's first forward is raised here instead, prefixed
    with the method's name.
    """
    normalised = normalise_options(method, options)
    if method in (None, "", "none"):
        return normalised
    import bigain

    denoiser = bundle.denoiser
    try:
        p = next(denoiser.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, *bundle.sample_shape), generator=g).to(device=device, dtype=dtype)
    t = torch.tensor([bundle.num_train_timesteps // 2], device=device)
    y = torch.tensor([0], device=device)
    try:
        with bigain.compressed(bundle, method, **dict(options or {})):
            bundle.predict_eps(x, t, y)
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        raise ValueError(f"method {method!r} with {dict(options or {})} does not fit this model: {e}") from e
    return normalised
