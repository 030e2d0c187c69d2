"""Classification data sets by name, with their class names, prompts and model class ids.

Every data set here is a sequence of :class:`Sample` records (cheap: no file is read) plus
``load_image(sample)`` (reads the file). A run can therefore record an unreadable image and go on.

Names understood by :func:`load_dataset`:

- ``builtin:fashion-mnist`` (optionally ``builtin:fashion-mnist:train``): the embedded test split.
- ``imagenet:DIR`` an ImageNet-1K ``val`` folder (1000 wnid folders; folder k = ImageNet id k).
- ``imagenet100:DIR`` an ImageNet-100 folder (100 wnid folders; folder k = k-th smallest id of the
  CMC subset used by the diffusion-classifier papers).
- ``pets:DIR`` Oxford-IIIT Pets (``annotations/test.txt`` + ``images/``).
- ``coco:DIR`` COCO-2017 val (``annotations/instances_val2017.json`` + ``val2017/``), multi-label.
- ``folder:DIR`` any class-folder tree (class names from the folder names).
- a plain ``DIR`` is recognised by its layout (Pets, COCO, 1000 / 100 class folders, class folders).

Prompt CSVs (``prompt,classname,classidx``) override the prompts of any data set.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_TEMPLATE",
    "ClassificationDataset",
    "CocoDataset",
    "FashionMNISTDataset",
    "ImageFolderDataset",
    "OxfordPetsDataset",
    "Sample",
    "imagenet100_ids",
    "imagenet_class_names",
    "load_dataset",
    "load_prompts_csv",
    "pets_class_names",
    "pets_prompts",
]

DEFAULT_TEMPLATE = "a photo of a {}."
PETS_TEMPLATE = "a photo of a {}, a type of pet."
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


# --------------------------------------------------------------------------------------------
# shipped class lists
# --------------------------------------------------------------------------------------------
def _resource_lines(name: str) -> list[str]:
    text = resources.files("bigain.classify").joinpath("resources", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names (CLIP-style readable names), in ImageNet id order."""
    names = tuple(_resource_lines("imagenet_classes.txt"))
    assert len(names) == 1000, len(names)
    return names


@cache
def imagenet100_ids() -> tuple[int, ...]:
    """The 100 ImageNet ids of the CMC ImageNet-100 subset (the diffusion-classifier papers' subset), ascending."""
    ids = tuple(sorted(int(x) for line in _resource_lines("imagenet100_ids.txt") for x in line.split()))
    assert len(ids) == 100, len(ids)
    return ids


@cache
def pets_class_names() -> tuple[str, ...]:
    """The 37 Oxford-IIIT Pets breeds in CLASS-ID order (readable names)."""
    names = tuple(_resource_lines("pets_classes.txt"))
    assert len(names) == 37, len(names)
    return names


def pets_prompts() -> list[str]:
    """The shipped Pets prompts: "a photo of a {breed} {cat|dog}, a type of pet."."""
    path = resources.files("bigain.classify").joinpath("resources", "pets_prompts.csv")
    with resources.as_file(path) as p:
        return load_prompts_csv(p)[0]


def load_prompts_csv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(prompts, class names) from a ``prompt,classname,classidx`` CSV, ordered by classidx.

    Class indices must be 0..K-1, each exactly once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    rows: dict[int, tuple[str, str]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "classname", "classidx"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {sorted(missing)}; expected prompt,classname,classidx"
            )
        for line, row in enumerate(reader, start=2):
            try:
                idx = int(row["classidx"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: classidx {row['classidx']!r} is not an integer") from None
            if idx in rows:
                raise ValueError(f"{path}:{line}: class index {idx} appears twice (one prompt per class)")
            rows[idx] = (row["prompt"], row["classname"])
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f"{path}: class indices must be 0..{len(rows) - 1} without gaps")
    return [rows[i][0] for i in range(len(rows))], [rows[i][1] for i in range(len(rows))]


# --------------------------------------------------------------------------------------------
# samples and the base class
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    index: int  # position in the data set
    id: str  # stable identifier (relative path or name): keys the noise and the results
    label: int | tuple[int, ...]  # class index, or the sorted label set of a multi-label image
    path: str | None = None


class ClassificationDataset:
    """Base class: a list of samples, class names, prompts, and the model ids of the classes.

    ``model_class_ids[k]`` is the label of class ``k`` for a class-conditional model trained on a
    larger label set (ImageNet ids for ImageNet-100 on a DiT); None means the identity.
    ``pixel_range`` tells what ``load_image`` returns: ``"pil"`` (a PIL image) or ``"[-1,1]"``
    (a float tensor (C, H, W) already in the model's pixel range).
    """

    name: str = "dataset"
    multi_label: bool = False
    pixel_range: str = "pil"

    def __init__(
        self,
        samples: list[Sample],
        class_names: Sequence[str],
        prompts: Sequence[str] | None = None,
        model_class_ids: Sequence[int] | None = None,
        template: str = DEFAULT_TEMPLATE,
    ) -> None:
        self.samples = samples
        self.class_names = list(class_names)
        self.prompts = (
            list(prompts) if prompts is not None else [template.format(c) for c in self.class_names]
        )
        self.model_class_ids = None if model_class_ids is None else [int(i) for i in model_class_ids]
        self.root: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def load_image(self, sample: Sample) -> Any:
        from .images import open_image

        if sample.path is None:
            raise FileNotFoundError(f"{sample.id}: no file")
        return open_image(sample.path)  # 16-bit and float files are scaled, never clipped

    def subset(self, indices: Sequence[int]) -> ClassificationDataset:
        """A view holding only ``indices`` (in that order); samples keep their ids and files."""
        import copy

        bad = [i for i in indices if not 0 <= int(i) < len(self.samples)]
        if bad:
            raise ValueError(
                f"subset: indices {bad[:5]} out of range for a data set of {len(self.samples)} images"
            )
        if len(set(indices)) != len(indices):
            raise ValueError("subset: indices must be distinct")
        view = copy.copy(self)
        view.samples = [self.samples[int(i)] for i in indices]
        return view

    def set_prompts_csv(self, path: str | os.PathLike) -> None:
        prompts, _names = load_prompts_csv(path)
        if len(prompts) != self.num_classes:
            raise ValueError(f"{path}: {len(prompts)} prompts for a data set of {self.num_classes} classes")
        self.prompts = prompts

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": self.root,
            "size": len(self),
            "num_classes": self.num_classes,
            "multi_label": self.multi_label,
        }


def _require_dir(root: str | os.PathLike, what: str) -> Path:
    p = Path(root).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what}: data path {str(root)!r} does not exist")
    if not p.is_dir():
        raise NotADirectoryError(f"{what}: data path {str(root)!r} is not a folder")
    return p.resolve()


# --------------------------------------------------------------------------------------------
# concrete data sets
# --------------------------------------------------------------------------------------------
class ImageFolderDataset(ClassificationDataset):
    """``root/<class folder>/<image>``; classes are the sorted folder names (torchvision order)."""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        class_names: Sequence[str] | None = None,
        model_class_ids: Sequence[int] | None = None,
        template: str = DEFAULT_TEMPLATE,
        name: str = "folder",
    ) -> None:
        root_p = _require_dir(root, name)
        folders = sorted(d.name for d in root_p.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise ValueError(f"{name}: {root} holds no class folders")
        if class_names is None:
            class_names = [f.replace("_", " ") for f in folders]
        if len(class_names) != len(folders):
            raise ValueError(f"{name}: {root} has {len(folders)} class folders, expected {len(class_names)}")
        samples = []
        for k, folder in enumerate(folders):
            for dirpath, dirnames, files in os.walk(root_p / folder):
                dirnames.sort()
                for fname in sorted(files):
                    if fname.lower().endswith(IMAGE_EXTENSIONS):
                        full = Path(dirpath) / fname
                        samples.append(
                            Sample(len(samples), full.relative_to(root_p).as_posix(), k, str(full))
                        )
        super().__init__(samples, class_names, model_class_ids=model_class_ids, template=template)
        self.name = name
        self.root = str(root_p)
        self.folders = folders


def imagenet_dataset(root: str | os.PathLike, template: str = DEFAULT_TEMPLATE) -> ImageFolderDataset:
    names = imagenet_class_names()
    return ImageFolderDataset(
        root, class_names=names, model_class_ids=range(1000), template=template, name="imagenet"
    )


def imagenet100_dataset(root: str | os.PathLike, template: str = DEFAULT_TEMPLATE) -> ImageFolderDataset:
    ids = imagenet100_ids()
    names = [imagenet_class_names()[i] for i in ids]
    return ImageFolderDataset(
        root, class_names=names, model_class_ids=ids, template=template, name="imagenet100"
    )


class OxfordPetsDataset(ClassificationDataset):
    """Oxford-IIIT Pets from its annotation list (``Image CLASS-ID SPECIES BREED-ID``)."""

    name = "pets"

    def __init__(self, root: str | os.PathLike, split: str = "test", template: str = PETS_TEMPLATE) -> None:
        root_p = _require_dir(root, "pets")
        listing = root_p / "annotations" / ("test.txt" if split == "test" else "trainval.txt")
        if not listing.is_file():
            raise FileNotFoundError(f"pets: {listing} does not exist (expected the Oxford-IIIT Pets layout)")
        samples = []
        for n, line in enumerate(listing.read_text().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise ValueError(f"{listing}:{n}: expected 'Image CLASS-ID SPECIES BREED-ID', got {line!r}")
            class_id = int(parts[1])
            if not 1 <= class_id <= 37:
                raise ValueError(f"{listing}:{n}: CLASS-ID {class_id} outside 1..37")
            path = root_p / "images" / f"{parts[0]}.jpg"
            samples.append(Sample(len(samples), parts[0], class_id - 1, str(path)))
        super().__init__(samples, pets_class_names(), template=template)
        if template == PETS_TEMPLATE:  # the shipped prompts say "cat"/"dog" after the breed
            self.prompts = pets_prompts()
        self.root = str(root_p)


class CocoDataset(ClassificationDataset):
    """COCO-2017 val as multi-label classification over the 80 categories (sorted by id)."""

    name = "coco"
    multi_label = True

    def __init__(self, root: str | os.PathLike, template: str = DEFAULT_TEMPLATE) -> None:
        root_p = _require_dir(root, "coco")
        ann = root_p / "annotations" / "instances_val2017.json"
        if not ann.is_file():
            raise FileNotFoundError(f"coco: {ann} does not exist")
        data = json.loads(ann.read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        cat_index = {c["id"]: k for k, c in enumerate(cats)}
        labels: dict[int, set[int]] = {}
        for a in data.get("annotations", []):
            labels.setdefault(a["image_id"], set()).add(cat_index[a["category_id"]])
        image_dir = root_p / "val2017"
        samples = []
        for im in sorted(data["images"], key=lambda i: i["id"]):
            samples.append(
                Sample(
                    len(samples),
                    im["file_name"],
                    tuple(sorted(labels.get(im["id"], ()))),
                    str(image_dir / im["file_name"]),
                )
            )
        super().__init__(samples, [c["name"] for c in cats], template=template)
        self.root = str(root_p)


class FashionMNISTDataset(ClassificationDataset):
    """The embedded Fashion-MNIST split (via ``bigain.data``), as 1×32×32 tensors in [-1, 1]."""

    name = "builtin:fashion-mnist"
    pixel_range = "[-1,1]"

    def __init__(self, split: str = "test") -> None:
        from .. import data

        self._data = data.load("builtin:fashion-mnist", split=split)
        samples = [Sample(i, f"{split}/{i:05d}", int(self._data.labels[i])) for i in range(len(self._data))]
        super().__init__(samples, list(data.CLASS_NAMES))
        self.split = split
        self.root = f"builtin:fashion-mnist:{split}"

    def load_image(self, sample: Sample) -> torch.Tensor:
        return self._data[sample.index][0]


class TensorDataset(ClassificationDataset):
    """In-memory images (N, C, H, W) in [-1, 1] with integer labels; handy for tests and notebooks."""

    pixel_range = "[-1,1]"

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int],
        class_names: Sequence[str],
        name: str = "tensors",
        ids: Sequence[str] | None = None,
    ) -> None:
        ids = [f"{i:06d}" for i in range(len(labels))] if ids is None else list(ids)
        samples = [Sample(i, ids[i], int(labels[i])) for i in range(len(labels))]
        super().__init__(samples, class_names)
        self.images = images
        self.name = name
        self.root = name

    def load_image(self, sample: Sample) -> torch.Tensor:
        return self.images[sample.index]


# --------------------------------------------------------------------------------------------
# by name
# --------------------------------------------------------------------------------------------
def _looks_like(root: Path) -> str:
    if (root / "annotations" / "test.txt").is_file() and (root / "images").is_dir():
        return "pets"
    if (root / "annotations" / "instances_val2017.json").is_file():
        return "coco"
    folders = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(folders) == 1000:
        return "imagenet"
    if len(folders) == 100 and all(d.name.startswith("n") and d.name[1:].isdigit() for d in folders):
        return "imagenet100"
    return "folder"


def load_dataset(
    spec: str, *, prompts_csv: str | os.PathLike | None = None, template: str | None = None
) -> ClassificationDataset:
    """A data set from a name (see the module docstring). A missing path fails at once."""
    spec = str(spec)
    kind, _, rest = spec.partition(":")
    if spec.startswith("builtin:"):
        name, _, split = rest.partition(":")
        if name not in ("fashion-mnist", "fashion_mnist"):
            raise ValueError(f"data={spec!r}: unknown builtin data set; expected builtin:fashion-mnist")
        ds: ClassificationDataset = FashionMNISTDataset(split or "test")
    else:
        if kind not in ("imagenet", "imagenet100", "pets", "coco", "folder") or not rest:
            kind, rest = "auto", spec
        root = _require_dir(rest, f"data={spec!r}")
        if kind == "auto":
            kind = _looks_like(root)
        kw = {} if template is None else {"template": template}
        if kind == "imagenet":
            ds = imagenet_dataset(root, **kw)
        elif kind == "imagenet100":
            ds = imagenet100_dataset(root, **kw)
        elif kind == "pets":
            ds = OxfordPetsDataset(root, **kw)
        elif kind == "coco":
            ds = CocoDataset(root, **kw)
        else:
            ds = ImageFolderDataset(root, **kw)
    if template is not None and spec.startswith("builtin:"):
        ds.prompts = [template.format(c) for c in ds.class_names]
    if prompts_csv is not None:
        ds.set_prompts_csv(prompts_csv)
    ds.spec = spec  # type: ignore[attr-defined]
    return ds
