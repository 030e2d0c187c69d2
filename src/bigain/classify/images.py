"""Image files read without silent changes: high bit depths scaled (never clipped), and a warning
when images are far smaller than what the model takes.

PIL's ``convert("RGB")`` of a 16-bit grey image (mode ``I;16``/``I``) clips every value above 255
to white instead of scaling it; a float image (``F``) is clipped the same way. ``to_8bit`` scales
such images to 8 bits first, and refuses what it cannot scale faithfully with a message.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["open_image", "to_8bit", "warn_if_small"]

_WARNED_SIZES: set[int] = set()


def to_8bit(image: Any, source: str = "image") -> Any:
    """A PIL image with 8-bit channels: 16-bit (``I;16*``, and ``I`` with values in [0, 65535])
    and float (``F`` in [0, 1]) grey images scaled to ``L``; other modes unchanged. ValueError,
    naming `source`, for values that have no faithful 8-bit reading."""
    from PIL import Image

    mode = image.mode
    if not (mode.startswith("I") or mode == "F"):
        return image
    arr = np.asarray(image, dtype=np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode == "F":
        if not (np.isfinite(arr).all() and lo >= 0.0 and hi <= 1.0):
            raise ValueError(
                f"{source}: a floating-point image with values in [{lo:g}, {hi:g}]; expected values in [0, 1] "
                "(save it as an 8- or 16-bit PNG)"
            )
        scaled = arr * 255.0
    else:
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"{source}: a 32-bit integer image with values in [{lo:g}, {hi:g}]; expected 8- or 16-bit "
                "values (0-255 or 0-65535; save it as an 8- or 16-bit PNG)"
            )
        scaled = arr * (255.0 / 65535.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def open_image(path: str) -> Any:
    """The file as an 8-bit RGB PIL image (high bit depths scaled, see `to_8bit`)."""
    from PIL import Image

    with Image.open(path) as im:
        return to_8bit(im, str(path)).convert("RGB")


def warn_if_small(height: int, width: int, size: int) -> None:
    """Warn once per model input size when an image's shorter side is under half of it: the model
    then sees an upscaled blur, and its accuracy says little about the model."""
    if min(height, width) * 2 > size or size in _WARNED_SIZES:
        return
    _WARNED_SIZES.add(size)
    warnings.warn(
        f"an image of {width}x{height} pixels is upscaled to the model's {size}x{size} input "
        f"({size / min(height, width):.1f}x per side); results on images this small say little about "
        "the model (warned once)",
        stacklevel=3,
    )
