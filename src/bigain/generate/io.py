"""Saving samples: PNG files, a JSON-lines manifest, and grid images."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MANIFEST_KEYS = ("index", "file")


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, C) uint8."""
    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """A grid PNG of (N, C, H, W) images in [-1, 1]."""
    n = images.shape[0]
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    c, h, w = images.shape[1:]
    canvas = np.full(
        (rows * (h + pad) + pad, nrow * (w + pad) + pad) + ((c,) if c > 1 else ()), 255, np.uint8
    )
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = to_uint8_image(images[i])
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def save_images(
    images: torch.Tensor,
    out_dir: str | os.PathLike,
    records: list[dict],
    manifest: str = "manifest.jsonl",
    ok: list[bool] | None = None,
) -> None:
    """Write one PNG per image and append one manifest record each (fsynced, so a crash loses
    nothing written). A torn last line is cut first (see :class:`bigain.runs.RecordWriter`).

    ``ok[i] = False`` marks image i as failed (NaN/inf pixels): no PNG, a record with ``error`` set.
    """
    from ..runs import RecordWriter

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    ok = [True] * len(records) if ok is None else list(ok)
    with RecordWriter(out / manifest, MANIFEST_KEYS) as writer:
        for img, rec, good in zip(images, records, ok):
            if not good:
                writer.append({**rec, "file": None, "error": "NaN/inf pixels in the sampled image"})
                continue
            name = f"images/{rec['index']:06d}.png"
            Image.fromarray(to_uint8_image(img)).save(out / name)
            writer.append({**rec, "file": name})
