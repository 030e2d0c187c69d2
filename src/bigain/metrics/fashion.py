"""Fashion-domain metrics computed with a small classifier CNN instead of Inception.

On 32x32 grayscale Fashion-MNIST-like images, ImageNet Inception features say little; a CNN trained on
the domain (``bigain.models.load_classifier("builtin:fashion-cnn")``) gives a meaningful FID (on its
penultimate features) and a class-conditional accuracy of generated images. The functions accept any
module with ``features(x) -> (B, D)`` and ``__call__(x) -> (B, K)`` logits, input (B, 1, H, W) in
[-1, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bigain.metrics.fid import compute_fid, iter_batches

__all__ = ["CNNFeatureExtractor", "classifier_accuracy", "classifier_correct", "fashion_fid"]


def _resolve(cnn: Any) -> Any:
    if isinstance(cnn, str):  # e.g. "builtin:fashion-cnn"; imported lazily to keep layers independent
        from bigain.models import load_classifier

        cnn = load_classifier(cnn)
    if not (hasattr(cnn, "features") and callable(cnn)):
        raise TypeError("cnn must have a .features(x) method and return logits when called")
    return cnn


def _device_of(cnn: Any) -> torch.device:
    try:
        return next(cnn.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _fit(x: torch.Tensor, image_size: int | None, device: torch.device) -> torch.Tensor:
    x = x.to(device, torch.float32)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    return x


class CNNFeatureExtractor:
    """Adapts a classifier CNN to the :class:`~bigain.metrics.fid.FeatureExtractor` protocol.

    ``image_size`` resizes inputs when set (the CNN's training resolution); otherwise images pass as
    given. The CNN is switched to eval mode so BatchNorm/Dropout do not make features batch-dependent.
    """

    def __init__(self, cnn: Any, image_size: int | None = None, name: str | None = None) -> None:
        self.cnn = _resolve(cnn)
        if hasattr(self.cnn, "eval"):
            self.cnn.eval()
        self.image_size = image_size
        self.device = _device_of(self.cnn)
        self.name = name or f"cnn:{type(self.cnn).__module__}.{type(self.cnn).__qualname__}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.cnn.features(_fit(images, self.image_size, self.device)).flatten(1).float().cpu()


def fashion_fid(
    images: Any,
    reference_images: Any,
    cnn: Any = "builtin:fashion-cnn",
    *,
    batch_size: int = 256,
    image_size: int | None = None,
    progress: bool = True,
) -> float:
    """FID between generated ``images`` and ``reference_images`` in the CNN's penultimate feature space.

    Either side may be a tensor/array (N, 1, H, W) in [-1, 1], an iterable of batches, or a precomputed
    :class:`FeatureStats` (reuse the reference statistics across a sweep; see ``compute_stats``).
    """
    ext = CNNFeatureExtractor(cnn, image_size=image_size)
    return compute_fid(ext, images, reference_images, batch_size=batch_size, progress=progress)


def classifier_correct(
    images: Any,
    labels: Any,
    cnn: Any = "builtin:fashion-cnn",
    *,
    batch_size: int = 256,
    image_size: int | None = None,
) -> np.ndarray:
    """Per-image correctness (bool, (N,)) of the CNN's argmax on ``images`` against ``labels``.

    Returned per image so two methods can be compared with a paired test (``mcnemar``).
    """
    net = _resolve(cnn)
    if hasattr(net, "eval"):
        net.eval()
    device = _device_of(net)
    y = torch.as_tensor(np.asarray(labels)).long().flatten()
    preds = []
    with torch.inference_mode():
        for batch in iter_batches(images, batch_size):
            preds.append(net(_fit(batch, image_size, device)).argmax(dim=-1).cpu())
    if not preds:
        raise ValueError("no images were given")
    p = torch.cat(preds)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"got {p.shape[0]} images but {y.shape[0]} labels")
    return (p == y).numpy()


def classifier_accuracy(
    images: Any,
    labels: Any,
    cnn: Any = "builtin:fashion-cnn",
    *,
    batch_size: int = 256,
    image_size: int | None = None,
) -> float:
    """Fraction (0..1) of ``images`` the CNN classifies as their intended ``labels``: for class-
    conditional generation, how often the generated image shows the class it was asked for."""
    return float(classifier_correct(images, labels, cnn, batch_size=batch_size, image_size=image_size).mean())
