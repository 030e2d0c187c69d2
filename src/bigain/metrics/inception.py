"""The FID Inception-v3 network in plain torch, and the Inception Score.

Standard FID numbers (pytorch-fid, the TF reference) come from a specific Inception-v3: the
TensorFlow graph ``inception-2015-12-05`` (1008 output classes), whose blocks differ from the usual
torchvision Inception-v3 in three places:

* the pooling branch of the A/C blocks and of the first E block averages over valid pixels only
  (TF's ``avg_pool`` with SAME padding ignores the padding, i.e. ``count_include_pad=False``);
* the pooling branch of the last E block (``Mixed_7c``) is a *max* pool;
* there is no auxiliary classifier, and ``fc`` has 1008 outputs.

The module and parameter names below follow that checkpoint (pytorch-fid's
``pt_inception-2015-12-05-*.pth``: ``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch_pool.bn.*``,
``fc.weight``...), so the file loads with ``strict=True``. No weights are downloaded: the user points
at a local file. torchvision is not needed.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bigain.metrics.fid import iter_batches

__all__ = [
    "FIDInceptionV3",
    "InceptionExtractor",
    "compute_inception_score",
    "inception_score",
    "load_fid_inception",
]

FID_INPUT_SIZE = 299
FID_NUM_CLASSES = 1008
FID_FEATURE_DIM = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, as in the TF graph) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: Any, stride: int = 1, padding: Any = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _c(cin: int, cout: int, k: Any, s: int = 1, p: Any = 0) -> BasicConv2d:
    return BasicConv2d(cin, cout, k, s, p)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # 3x3 stride-1 average over valid pixels only (TF SAME-padding semantics).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | pool->1x1 (Mixed_5b/5c/5d)."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _c(cin, 64, 1)
        self.branch5x5_1 = _c(cin, 48, 1)
        self.branch5x5_2 = _c(48, 64, 5, p=2)
        self.branch3x3dbl_1 = _c(cin, 64, 1)
        self.branch3x3dbl_2 = _c(64, 96, 3, p=1)
        self.branch3x3dbl_3 = _c(96, 96, 3, p=1)
        self.branch_pool = _c(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class _ReductionB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _c(cin, 384, 3, s=2)
        self.branch3x3dbl_1 = _c(cin, 64, 1)
        self.branch3x3dbl_2 = _c(64, 96, 3, p=1)
        self.branch3x3dbl_3 = _c(96, 96, 3, s=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        k17, p17, k71, p71 = (1, 7), (0, 3), (7, 1), (3, 0)
        self.branch1x1 = _c(cin, 192, 1)
        self.branch7x7_1 = _c(cin, c7, 1)
        self.branch7x7_2 = _c(c7, c7, k17, p=p17)
        self.branch7x7_3 = _c(c7, 192, k71, p=p71)
        self.branch7x7dbl_1 = _c(cin, c7, 1)
        self.branch7x7dbl_2 = _c(c7, c7, k71, p=p71)
        self.branch7x7dbl_3 = _c(c7, c7, k17, p=p17)
        self.branch7x7dbl_4 = _c(c7, c7, k71, p=p71)
        self.branch7x7dbl_5 = _c(c7, 192, k17, p=p17)
        self.branch_pool = _c(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class _ReductionD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _c(cin, 192, 1)
        self.branch3x3_2 = _c(192, 320, 3, s=2)
        self.branch7x7x3_1 = _c(cin, 192, 1)
        self.branch7x7x3_2 = _c(192, 192, (1, 7), p=(0, 3))
        self.branch7x7x3_3 = _c(192, 192, (7, 1), p=(3, 0))
        self.branch7x7x3_4 = _c(192, 192, 3, s=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b = layer(b)
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class _BlockE(nn.Module):
    """8x8 block with split 1x3/3x1 heads (Mixed_7b: TF average pool; Mixed_7c: max pool)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _c(cin, 320, 1)
        self.branch3x3_1 = _c(cin, 384, 1)
        self.branch3x3_2a = _c(384, 384, (1, 3), p=(0, 1))
        self.branch3x3_2b = _c(384, 384, (3, 1), p=(1, 0))
        self.branch3x3dbl_1 = _c(cin, 448, 1)
        self.branch3x3dbl_2 = _c(448, 384, 3, p=1)
        self.branch3x3dbl_3a = _c(384, 384, (1, 3), p=(0, 1))
        self.branch3x3dbl_3b = _c(384, 384, (3, 1), p=(1, 0))
        self.branch_pool = _c(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used by FID: input (B, 3, 299, 299) in [-1, 1]; returns pool3 and logits.

    ``forward`` returns ``(features, logits)``: the 2048-d global average pool ("pool3", the FID
    feature) and the 1008 class logits of ``fc`` (used by the Inception Score).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _c(3, 32, 3, s=2)
        self.Conv2d_2a_3x3 = _c(32, 32, 3)
        self.Conv2d_2b_3x3 = _c(32, 64, 3, p=1)
        self.Conv2d_3b_1x1 = _c(64, 80, 1)
        self.Conv2d_4a_3x3 = _c(80, 192, 3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _ReductionB(288)
        self.Mixed_6b = _BlockC(768, c7=128)
        self.Mixed_6c = _BlockC(768, c7=160)
        self.Mixed_6d = _BlockC(768, c7=160)
        self.Mixed_6e = _BlockC(768, c7=192)
        self.Mixed_7a = _ReductionD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FID_FEATURE_DIM, FID_NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        feats = x.mean(dim=(2, 3))
        return feats, self.fc(feats)


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def load_fid_inception(weights_path: str | os.PathLike, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load a local FID Inception state dict with strict key matching.

    Strict loading is the point: a file from another Inception variant (torchvision's, with
    ``AuxLogits`` and 1000 classes) fails loudly instead of giving silently incomparable FIDs. Missing
    BatchNorm ``num_batches_tracked`` counters (older checkpoints) are filled in, since they do not
    affect inference.
    """
    model = FIDInceptionV3()
    sd = dict(_read_state_dict(weights_path))
    for key, buf in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros_like(buf)
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval().requires_grad_(False)


class InceptionExtractor:
    """FID feature extractor: images in [-1, 1] (B, C, H, W) -> 2048-d pool3 features.

    Like pytorch-fid, images are resized to 299x299 bilinearly (no antialias); grayscale inputs are
    repeated to 3 channels. :meth:`features_and_logits` also returns the 1008 logits for IS.
    """

    name = "fid-inception-v3-2015-12-05/pool3"

    def __init__(
        self,
        weights: str | os.PathLike | FIDInceptionV3,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        model = weights if isinstance(weights, FIDInceptionV3) else load_fid_inception(weights)
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        x = images.to(self.device, torch.float32).clamp(-1.0, 1.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")
        if x.shape[-2:] != (FID_INPUT_SIZE, FID_INPUT_SIZE):
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        return x.to(self.dtype)

    @torch.inference_mode()
    def features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2048) pool3 features and (B, 1008) logits, both float32 on CPU."""
        feats, logits = self.model(self._prepare(images))
        return feats.float().cpu(), logits.float().cpu()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(images)[0]


def inception_score(logits: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) from class logits, as (mean, std) over splits.

    The score is computed per split (p(y) is the split's marginal) and averaged, the usual protocol;
    computed in float64 with log-softmax so confident logits do not underflow.
    """
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {z.shape}")
    if not 1 <= splits <= z.shape[0]:
        raise ValueError(f"splits must be in [1, N={z.shape[0]}], got {splits}")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    scores = []
    for part in np.array_split(logp, splits):
        p = np.exp(part)
        log_marginal = np.log(p.mean(axis=0) + 1e-300)
        kl = (p * (part - log_marginal)).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def compute_inception_score(
    extractor: InceptionExtractor,
    images: Any,
    splits: int = 10,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[float, float]:
    """Inception Score of images in [-1, 1] with the FID Inception's 1008 logits, as (mean, std)."""
    logits = []
    total = int(images.shape[0]) if hasattr(images, "shape") else None
    bar = tqdm(total=total, desc="inception score", unit="img", disable=not progress, leave=False)
    for batch in iter_batches(images, batch_size):
        logits.append(extractor.features_and_logits(batch)[1])
        bar.update(batch.shape[0])
    bar.close()
    if not logits:
        raise ValueError("no images were given")
    return inception_score(torch.cat(logits), splits=splits)
