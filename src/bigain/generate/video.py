"""Saving generated videos: MP4 through PyAV (which ships its own FFmpeg), PNG frames without it,
and contact sheets (a row of evenly spaced frames per sample).

Every file is written under a temporary name and renamed into place, so a run killed mid-write
never leaves a file that looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "MP4_HINT",
    "contact_row",
    "contact_sheet",
    "mp4_available",
    "read_mp4",
    "to_uint8_video",
    "write_mp4",
    "write_png_frames",
]

MP4_HINT = 'pip install "bigain[video]" (PyAV) to get MP4 files'
SHEET_FRAMES = 8
PAD = 2


def mp4_available() -> bool:
    """Whether PyAV is installed (its wheels carry the FFmpeg libraries)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def to_uint8_video(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, C) floats in [0, 1] (what a pipeline gives with ``output_type="np"``) or uint8
    -> (F, H, W, 3) uint8."""
    arr = np.asarray(frames)
    if arr.ndim == 3:  # one image
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected frames of shape (F, H, W, C), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int = 16) -> Path:
    """Encode (F, H, W, 3) uint8 frames as H.264 in an MP4 (odd sizes are padded by one edge row or
    column, as yuv420p needs even sizes). Raises ImportError without PyAV."""
    import av

    path = Path(path)
    video = to_uint8_video(frames)
    f, h, w, _ = video.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        video = np.pad(video, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    tmp = _tmp(path)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height = w + pw, h + ph
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            for frame in video:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """The frames of an MP4 as (F, H, W, 3) uint8 (needs PyAV)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in container.decode(video=0)])


def write_png_frames(frames: np.ndarray, folder: str | os.PathLike) -> Path:
    """One PNG per frame, ``folder/frame_0000.png``, ...; the folder appears complete or not at all."""
    folder = Path(folder)
    video = to_uint8_video(frames)
    tmp = _tmp(folder)
    tmp.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(video):
        Image.fromarray(frame).save(tmp / f"frame_{i:04d}.png")
    if folder.exists():  # a leftover of a run killed before its record was written
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def contact_row(frames: np.ndarray, count: int = SHEET_FRAMES, pad: int = PAD) -> Image.Image:
    """``count`` evenly spaced frames (first and last included; all of them if fewer) in one row."""
    video = to_uint8_video(frames)
    f, h, w, _ = video.shape
    picks = np.unique(np.linspace(0, f - 1, min(count, f)).round().astype(int))
    row = np.full((h + 2 * pad, len(picks) * (w + pad) + pad, 3), 255, np.uint8)
    for j, i in enumerate(picks):
        x0 = pad + j * (w + pad)
        row[pad : pad + h, x0 : x0 + w] = video[i]
    return Image.fromarray(row)


def contact_sheet(rows: list[Image.Image]) -> Image.Image:
    """Rows (one per sample) stacked top to bottom, left-aligned on white."""
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r.convert("RGB"), (0, y))
        y += r.height
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """``image.save`` under a temporary name, then renamed into place."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
