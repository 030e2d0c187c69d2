"""Image preprocessing equals torchvision's Resize(size, bicubic) + CenterCrop(size) to the pixel.

torchvision is not a dependency, so the expected geometry is written out by hand from its rules:
short side -> size, long side -> int(size * long / short) (truncated), crop offset
int(round((resized - size) / 2)) with round-half-even.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bigain.classify.pipeline import preprocess_image, resize_crop_geometry

# (width, height, size) -> (resized width, resized height, crop left, crop top)
GEOMETRY = [
    ((500, 375, 512), (682, 512, 85, 0)),  # landscape: 682.67 truncates to 682 (rounding gives 683)
    ((375, 500, 512), (512, 682, 0, 85)),  # portrait
    ((500, 333, 512), (768, 512, 128, 0)),  # 768.77 -> 768 (rounding gives 769)
    ((515, 512, 512), (515, 512, 2, 0)),  # no resize; offset round(1.5) = 2 (flooring gives 1)
    ((512, 515, 512), (512, 515, 0, 2)),
    ((519, 512, 512), (519, 512, 4, 0)),  # round(3.5) = 4
    ((517, 512, 512), (517, 512, 2, 0)),  # round(2.5) = 2: half to even
    ((513, 512, 512), (513, 512, 0, 0)),  # round(0.5) = 0
    ((640, 640, 512), (512, 512, 0, 0)),  # square
    ((1000, 999, 512), (512, 512, 0, 0)),  # 512.51 -> 512: nothing left to crop
    ((333, 501, 256), (256, 385, 0, 64)),  # odd sizes; round(64.5) = 64
    ((300, 200, 512), (768, 512, 128, 0)),  # smaller than the target: scaled up
    ((4, 4, 8), (8, 8, 0, 0)),  # smaller and square
    ((7, 5, 4), (5, 4, 0, 0)),  # 5.6 -> 5 (rounding gives 6 and a crop offset of 1)
]


@pytest.mark.parametrize(("args", "expected"), GEOMETRY)
def test_geometry_table(args, expected):
    assert resize_crop_geometry(*args) == expected


def test_geometry_rejects_empty_sizes():
    with pytest.raises(ValueError, match="positive"):
        resize_crop_geometry(0, 5, 4)


def _noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)


def _to_unit(im: Image.Image) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).float() / 255.0
    arr = arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1)
    return (arr - 0.5) / 0.5  # ToTensor + Normalize(0.5, 0.5)


@pytest.mark.parametrize(
    ("width", "height", "size", "resized", "box"),
    [
        (500, 375, 512, (682, 512), (85, 0, 597, 512)),
        (375, 500, 512, (512, 682), (0, 85, 512, 597)),
        (7, 5, 4, (5, 4), (0, 0, 4, 4)),
    ],
)
def test_pixels_equal_resize_then_center_crop(width, height, size, resized, box):
    im = _noise_image(width, height)
    expected = _to_unit(im.resize(resized, Image.BICUBIC).crop(box))
    got = preprocess_image(im, size, 3)
    assert got.shape == (3, size, size)
    assert torch.equal(got, expected)


def test_crop_offset_rounds_half_to_even_on_pixels():
    # Already at the target size on the short side: no resampling, so the crop is an exact copy.
    im = _noise_image(515, 512, seed=1)
    got = preprocess_image(im, 512, 3)
    full = _to_unit(im)
    assert torch.equal(got, full[:, :, 2:514])
    assert not torch.equal(got, full[:, :, 1:513])


def test_grayscale_model_gets_one_channel_same_geometry():
    im = _noise_image(500, 375, mode="L", seed=2)
    got = preprocess_image(im, 512, 1)
    expected = _to_unit(im.resize((682, 512), Image.BICUBIC).crop((85, 0, 597, 512)))
    assert got.shape == (1, 512, 512) and torch.equal(got, expected)


def test_palette_image_is_converted_to_rgb_before_resizing():
    # The reference's data sets convert to RGB when loading a file, before Resize; PIL would
    # otherwise resize a palette image with nearest-neighbour instead of bicubic.
    rgb = _noise_image(30, 20, seed=3)
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    got = preprocess_image(pal, 16, 3)
    expected = _to_unit(pal.convert("RGB").resize((24, 16), Image.BICUBIC).crop((4, 0, 20, 16)))
    assert torch.equal(got, expected)
    after = _to_unit(pal.resize((24, 16), Image.BICUBIC).crop((4, 0, 20, 16)).convert("RGB"))
    assert not torch.equal(got, after)
