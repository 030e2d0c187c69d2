"""Fréchet distance, Gaussian feature statistics and their on-disk cache.

Everything here is backbone-agnostic: a *feature extractor* is any callable that maps a float image
batch in [-1, 1] of shape (B, C, H, W) to a (B, D) feature tensor. The Inception network of the
standard FID (``bigain.metrics.inception``) and the fashion CNN (``bigain.metrics.fashion``) are two
such extractors; so is any user function.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "FeatureExtractor",
    "FeatureStats",
    "compute_features",
    "compute_fid",
    "compute_stats",
    "extractor_name",
    "fid_from_features",
    "frechet_distance",
    "iter_batches",
    "stats_cache_key",
]


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------
def _sym_psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition.

    Eigenvalues that round-off pushed slightly below zero are clipped to zero, so a rank-deficient
    covariance (fewer samples than dimensions, or constant features) still has a real square root.
    """
    vals, vecs = np.linalg.eigh(mat)
    vals = np.clip(vals, 0.0, None)
    return (vecs * np.sqrt(vals)) @ vecs.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr( (S1 S2)^{1/2} ) for symmetric PSD S1, S2.

    S1 S2 is not symmetric, and the usual ``scipy.linalg.sqrtm(S1 @ S2)`` works on a general matrix:
    on near-singular covariances it returns complex parts or NaNs, and needs an ad-hoc ``eps * I``
    retry. But S1 S2 is similar to the symmetric PSD matrix M = S1^{1/2} S2 S1^{1/2} (conjugate by
    S1^{1/2}; by continuity when S1 is singular), so both have the same non-negative eigenvalues and
    tr((S1 S2)^{1/2}) = tr(M^{1/2}) = sum(sqrt(eig(M))). ``eigh`` on a symmetric matrix is backward
    stable and always real, which is what makes this path robust.
    """
    s1_half = _sym_psd_sqrt(sigma1)
    m = s1_half @ sigma2 @ s1_half
    m = 0.5 * (m + m.T)  # remove the asymmetry left by round-off
    eig = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def _as_cov(name: str, sigma: Any, dim: int) -> np.ndarray:
    s = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if s.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}) to match the mean, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains non-finite values")
    return 0.5 * (s + s.T)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}). The cross term uses the symmetric
    form tr((S1^{1/2} S2 S1^{1/2})^{1/2}) (see ``_trace_sqrt_product``), which stays real and finite
    for the near-singular covariances that small sample sets produce. The result is clipped at 0
    because FD is a squared distance and round-off can leave it at -1e-12.
    """
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be 1-D of the same length, got {m1.shape} and {m2.shape}")
    if not (np.all(np.isfinite(m1)) and np.all(np.isfinite(m2))):
        raise ValueError("mu1 or mu2 contains non-finite values")
    d = m1.shape[0]
    s1 = _as_cov("sigma1", sigma1, d)
    s2 = _as_cov("sigma2", sigma2, d)
    diff = m1 - m2
    fd = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * _trace_sqrt_product(s1, s2)
    return max(fd, 0.0)


# --------------------------------------------------------------------------------------------------
# Gaussian statistics of a feature set
# --------------------------------------------------------------------------------------------------
@dataclass
class FeatureStats:
    """Mean, covariance and sample count of a (N, D) feature set: all FID needs from a data set.

    Kept separately from the features so a reference set (e.g. 50k real images) is encoded once and
    reused across every method and ratio of a sweep.
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features: Any) -> FeatureStats:
        """Statistics of a (N, D) array; the covariance is unbiased (ddof=1), as in pytorch-fid."""
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be a 2-D (N, D) array, got shape {f.shape}")
        if f.shape[0] < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
        if not np.all(np.isfinite(f)):
            raise ValueError("features contain non-finite values")
        return cls(
            mean=f.mean(axis=0), cov=np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], -1), n=f.shape[0]
        )

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def save(self, path: str | os.PathLike, key: str = "", meta: dict | None = None) -> Path:
        """Write the statistics to an ``.npz`` file atomically (temp file then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(
            tmp,
            mean=self.mean,
            cov=self.cov,
            n=np.int64(self.n),
            key=np.str_(key),
            meta=np.str_(json.dumps(meta or {}, sort_keys=True)),
        )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Read statistics written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            return cls(mean=z["mean"].astype(np.float64), cov=z["cov"].astype(np.float64), n=int(z["n"]))

    @staticmethod
    def load_key(path: str | os.PathLike) -> str:
        """The cache key stored in a statistics file ('' when none was stored)."""
        with np.load(Path(path), allow_pickle=False) as z:
            return str(z["key"]) if "key" in z.files else ""


def fid_from_features(a: Any, b: Any) -> float:
    """FID between two feature sets, each a (N, D) array/tensor or precomputed :class:`FeatureStats`."""
    sa = a if isinstance(a, FeatureStats) else FeatureStats.from_features(a)
    sb = b if isinstance(b, FeatureStats) else FeatureStats.from_features(b)
    if sa.dim != sb.dim:
        raise ValueError(f"feature dimensions differ: {sa.dim} vs {sb.dim}")
    return frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)


# --------------------------------------------------------------------------------------------------
# Extractors, batching, cached reference statistics
# --------------------------------------------------------------------------------------------------
@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps a float image batch in [-1, 1], shape (B, C, H, W), to (B, D) features.

    An optional ``name`` attribute identifies the extractor in cache keys; plain functions are
    identified by their qualified name instead.
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def extractor_name(extractor: Any) -> str:
    """A stable identifier of an extractor for cache keys: ``.name`` if set, else the qualified name."""
    name = getattr(extractor, "name", None)
    if isinstance(name, str) and name:
        return name
    target = extractor if hasattr(extractor, "__qualname__") else type(extractor)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"


def stats_cache_key(extractor: Any, data_id: str) -> str:
    """Hash of (extractor name, caller-given data identity) that names a statistics cache entry."""
    payload = json.dumps({"extractor": extractor_name(extractor), "data": str(data_id)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _to_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def iter_batches(images: Any, batch_size: int) -> Iterator[torch.Tensor]:
    """Yield float (B, C, H, W) batches of at most ``batch_size`` from a tensor/array of images or
    from any iterable of single images (C, H, W) or batches (B, C, H, W), re-batched as needed."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, (torch.Tensor, np.ndarray)):
        t = _to_tensor(images)
        if t.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(t.shape)}")
        for i in range(0, t.shape[0], batch_size):
            yield t[i : i + batch_size].float()
        return
    pending: list[torch.Tensor] = []
    count = 0
    for item in images:
        t = _to_tensor(item)
        if t.ndim == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4:
            raise ValueError(f"each item must be (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
        pending.append(t.float())
        count += t.shape[0]
        while count >= batch_size:
            cat = torch.cat(pending)
            yield cat[:batch_size]
            rest = cat[batch_size:]
            pending = [rest] if rest.shape[0] else []
            count = rest.shape[0]
    if count:
        yield torch.cat(pending)


def _len_hint(images: Any) -> int | None:
    try:
        return len(images)
    except TypeError:
        return None


def compute_features(
    extractor: Any, images: Any, batch_size: int = 64, progress: bool = True, desc: str = "features"
) -> np.ndarray:
    """Run ``extractor`` over all images in batches; returns a float64 (N, D) array."""
    total = _len_hint(images)
    if isinstance(images, (torch.Tensor, np.ndarray)):
        total = int(images.shape[0])
    out: list[np.ndarray] = []
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False)
    with torch.inference_mode():
        for batch in iter_batches(images, batch_size):
            feats = extractor(batch)
            feats = (
                feats.detach().cpu().double().numpy()
                if isinstance(feats, torch.Tensor)
                else np.asarray(feats)
            )
            if feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"extractor must return (B, D) features; got {feats.shape} for a batch of {batch.shape[0]}"
                )
            out.append(feats.astype(np.float64))
            bar.update(batch.shape[0])
    bar.close()
    if not out:
        raise ValueError("no images were given")
    return np.concatenate(out)


def compute_stats(
    extractor: Any,
    images_iterable: Any,
    batch_size: int = 64,
    cache_path: str | os.PathLike | None = None,
    progress: bool = True,
    data_id: str | None = None,
) -> FeatureStats:
    """Feature statistics of a data set, cached on disk so reference sets are encoded once.

    ``cache_path`` is either an ``.npz`` file or a directory (the file is then
    ``<dir>/stats-<key>.npz``; a path without suffix that does not exist yet is taken as a directory). The key hashes the extractor's name and ``data_id``, the caller's
    identity of the data (a folder path plus count, a data set name and split...): the library cannot
    hash the images without reading them all, which is the cost the cache avoids. A file whose stored
    key differs from the current one is recomputed and overwritten rather than silently reused.
    """
    if cache_path is None:
        return FeatureStats.from_features(compute_features(extractor, images_iterable, batch_size, progress))
    if data_id is None:
        raise ValueError("data_id is required with cache_path: it identifies the data in the cache key")
    key = stats_cache_key(extractor, data_id)
    path = Path(cache_path)
    if path.is_dir() or (not path.suffix and not path.exists()):
        path = path / f"stats-{key}.npz"
    if path.exists():
        try:
            if FeatureStats.load_key(path) == key:
                return FeatureStats.load(path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign file: recompute below
    stats = FeatureStats.from_features(compute_features(extractor, images_iterable, batch_size, progress))
    stats.save(path, key=key, meta={"extractor": extractor_name(extractor), "data_id": str(data_id)})
    return stats


def compute_fid(
    extractor: Any,
    images: Any,
    reference: Any,
    batch_size: int = 64,
    progress: bool = True,
) -> float:
    """FID between ``images`` and ``reference`` in ``extractor``'s feature space.

    Either side may be images (tensor/array or iterable of batches, in [-1, 1]) or precomputed
    :class:`FeatureStats`, typically the cached reference from :func:`compute_stats`.
    """

    def stats(x: Any, desc: str) -> FeatureStats:
        if isinstance(x, FeatureStats):
            return x
        return FeatureStats.from_features(compute_features(extractor, x, batch_size, progress, desc=desc))

    return fid_from_features(stats(images, "fid: images"), stats(reference, "fid: reference"))
