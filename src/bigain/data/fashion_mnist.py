"""Fashion-MNIST: IDX reading, the shipped test split, and the 32x32 [-1, 1] tensors the models use.

The test split (10k images, uint8) ships inside the package as ``fashion_mnist_test.npz`` so the
demo, the tests and the evaluation need no download. Training reads the IDX files installed by
Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``), or any
folder holding the four IDX files (gzip-compressed or raw).
"""

from __future__ import annotations

import gzip
import lzma
import os
from pathlib import Path

import numpy as np
import torch

NAME = "builtin:fashion-mnist"
CLASS_NAMES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 32  # 28x28 padded with 2 px of background on each side
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SHIPPED_TEST = Path(__file__).with_name("fashion_mnist_test.npz")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
APT_HINT = (
    "the Fashion-MNIST training split is not shipped with bigain; install it with "
    "`apt-get install dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist) "
    "or pass a folder holding the IDX files"
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip- or xz-compressed, or raw, detected from its first bytes)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:6] == b"\xfd7zXZ\x00":  # xz: about 15 % smaller than gzip for the training images
        raw = lzma.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header < count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX file (shape {shape})")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file; compressed when the name ends in ``.gz`` or ``.xz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    elif str(path).endswith(".xz"):
        payload = lzma.compress(payload)
    Path(path).write_bytes(payload)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem + ".xz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    return None


def load_arrays(split: str = "test", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split.

    ``root=None``: the test split comes from the file shipped in the package, the train split
    from the Debian package's folder. Otherwise ``root`` is a folder holding the IDX files.
    """
    if split not in _FILES:
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    if root is None and split == "test" and SHIPPED_TEST.is_file():
        with np.load(SHIPPED_TEST) as f:
            return f["images"].copy(), f["labels"].copy()
    folder = Path(root) if root is not None else DEFAULT_ROOT
    img_stem, lbl_stem = _FILES[split]
    img_path, lbl_path = _find(folder, img_stem), _find(folder, lbl_stem)
    if img_path is None or lbl_path is None:
        raise FileNotFoundError(f"no Fashion-MNIST {split} IDX files in {folder}: {APT_HINT}")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
    return images.astype(np.uint8), labels.astype(np.uint8)


def to_tensor(images: np.ndarray | torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 (N, 28, 28) or (28, 28) -> float32 (N, 1, size, size) in [-1, 1], zero-padded."""
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    x = x.float().div(127.5).sub(1.0)[:, None]
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"images of {h}x{w} do not fit in {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    x = torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top), value=-1.0)
    return x[0] if squeeze else x


def to_uint8(x: torch.Tensor, crop: bool = False) -> np.ndarray:
    """Inverse of `to_tensor`: (N, 1, H, W) in [-1, 1] -> uint8 (N, H, W) (cropped to 28x28 if asked)."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
    x = x[:, 0] if x.ndim == 4 else x
    if crop:
        h, w = x.shape[-2:]
        x = x[..., (h - 28) // 2 : (h - 28) // 2 + 28, (w - 28) // 2 : (w - 28) // 2 + 28]
    return x.numpy()


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as (image (1, 32, 32) float in [-1, 1], label int) pairs."""

    name = NAME
    class_names = CLASS_NAMES
    num_classes = NUM_CLASSES

    def __init__(self, split: str = "test", root: str | os.PathLike | None = None, limit: int | None = None):
        images, labels = load_arrays(split, root)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.split = split
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_tensor(self.images[i]), int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one (N, 1, 32, 32) float tensor and labels as a LongTensor."""
        return to_tensor(self.images), torch.as_tensor(self.labels.astype(np.int64))
