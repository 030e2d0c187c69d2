"""Input images are never changed silently: 16-bit and float files are scaled (not clipped to
white), what cannot be scaled is refused naming the file, and tiny images warn once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from bigain.classify import images as image_io
from bigain.classify.datasets import load_dataset
from bigain.classify.pipeline import preprocess_image


def _folder_with(tmp_path, array: np.ndarray, name: str = "x.png"):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    Image.fromarray(array).save(tmp_path / "a" / name)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "b" / "y.png")
    return load_dataset(f"folder:{tmp_path}")


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))  # left black, right white
    ds = _folder_with(tmp_path, ramp)
    sample = next(s for s in ds.samples if s.path.endswith("x.png"))
    im = ds.load_image(sample)
    assert Image.open(sample.path).mode.startswith("I;16")  # the file really is 16-bit
    got = np.asarray(im)[..., 0].astype(float)
    want = np.rint(ramp / 257.0)
    assert np.abs(got - want).max() <= 1
    assert (got == 255).mean() < 0.05  # PIL's plain convert makes ~all of it white
    x = preprocess_image(Image.open(sample.path), 64, 1)  # the preprocessing path scales too
    assert torch.allclose(x[0], torch.from_numpy(want / 127.5 - 1).float(), atol=2 / 255)


def test_float_image_out_of_range_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "f.tiff"
    Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(path)
    with pytest.raises(ValueError, match=r"f\.tiff: a floating-point image with values in \[7\.5, 7\.5\]"):
        image_io.open_image(str(path))
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    assert np.asarray(image_io.open_image(str(path)))[0, 0, 0] == 128


def test_tiny_images_warn_once_per_model_size(monkeypatch):
    monkeypatch.setattr(image_io, "_WARNED_SIZES", set())
    small = Image.fromarray(np.zeros((10, 12, 3), np.uint8))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        preprocess_image(small, 64, 3)
        preprocess_image(small, 64, 3)
        preprocess_image(Image.fromarray(np.zeros((40, 40, 3), np.uint8)), 64, 3)  # not far below: quiet
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "12x10 pixels is upscaled to the model's 64x64" in msgs[0], msgs
