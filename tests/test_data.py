"""Fashion-MNIST loader: the shipped test split, IDX reading (gz and raw), tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bigain import data
from bigain.data import fashion_mnist as fm


def test_shipped_test_split():
    images, labels = data.load_arrays("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10
    assert images.max() == 255 and images.min() == 0
    assert (
        len(data.CLASS_NAMES) == 10
        and data.CLASS_NAMES[0] == "T-shirt/top"
        and data.CLASS_NAMES[9] == "Ankle boot"
    )


def test_dataset_by_name_and_tensor_range():
    ds = data.load("builtin:fashion-mnist", split="test", limit=16)
    assert len(ds) == 16
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0
    # the 2 px border is background
    border = torch.cat(
        [x[:, :2].flatten(), x[:, -2:].flatten(), x[:, :, :2].flatten(), x[:, :, -2:].flatten()]
    )
    assert torch.all(border == -1)
    xs, ys = ds.tensors()
    assert xs.shape == (16, 1, 32, 32) and ys.dtype == torch.long
    assert torch.equal(xs[3], x)
    # exact inverse on the 28x28 crop
    assert np.array_equal(data.to_uint8(xs, crop=True), ds.images)
    with pytest.raises(ValueError, match="data="):
        data.load("no-such-data-set")


def _write_split(folder, split, images, labels, ext):
    stems = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }[split]
    data.write_idx(folder / (stems[0] + ext), images)
    data.write_idx(folder / (stems[1] + ext), labels)


@pytest.mark.parametrize("ext", [".gz", ".xz", ""])
def test_idx_files_written_by_the_test(tmp_path, ext):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(7,), dtype=np.uint8)
    _write_split(tmp_path, "train", images, labels, ext)
    name = "train-images-idx3-ubyte" + ext
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (ext == ".gz") and (raw[:3] == b"\xfd7z") == (ext == ".xz")
    assert np.array_equal(data.read_idx(tmp_path / name), images)
    got_i, got_l = data.load_arrays("train", root=tmp_path)
    assert np.array_equal(got_i, images) and np.array_equal(got_l, labels)
    ds = data.load(tmp_path, split="train")
    x, y = ds[6]
    assert x.shape == (1, 32, 32) and y == int(labels[6])
    # hand-computed scaling of one pixel
    assert x[0, 2 + 5, 2 + 9].item() == pytest.approx(images[6, 5, 9] / 127.5 - 1)


def test_idx_header_by_hand(tmp_path):
    # magic 0x00000801 (uint8, 1 dim), size 3, then the bytes
    (tmp_path / "a").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 5, 6, 7]))
    assert data.read_idx(tmp_path / "a").tolist() == [5, 6, 7]
    (tmp_path / "b").write_bytes(bytes([1, 2, 8, 1, 0, 0, 0, 3, 5, 6, 7]))
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 5]))
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "c")


def test_missing_train_split_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_arrays("train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        data.load_arrays("validation")


def test_debian_files_match_shipped_copy():
    if not (fm.DEFAULT_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    shipped = data.load_arrays("test")
    debian = data.load_arrays("test", root=fm.DEFAULT_ROOT)
    assert np.array_equal(shipped[0], debian[0]) and np.array_equal(shipped[1], debian[1])
