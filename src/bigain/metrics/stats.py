"""Statistics for comparing compressed settings: accuracy intervals (Wilson), the paired test for two
classifiers on the same items (exact McNemar), Holm's correction across a family of tests, paired
bootstrap intervals for an accuracy difference and for a FID difference, and the decision rule that
turns them into "holds / does not hold / cannot tell"."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as st

__all__ = [
    "accuracy_decision",
    "fid_diff_bootstrap",
    "generation_decision",
    "holm",
    "mcnemar",
    "paired_diff_interval",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion, as fractions in [0, 1] (None for n = 0).

    Used for accuracies on few images: unlike the normal approximation it stays inside [0, 1]
    and is not zero-width at 0 % or 100 %.
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be in [0, n={n}]")
    z = float(st.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(correct_a: Any, correct_b: Any, exact_threshold: int | None = None) -> dict[str, Any]:
    """McNemar's test on paired per-item correctness of methods A and B.

    Only the discordant pairs carry information: b = A right & B wrong, c = A wrong & B right. Under
    H0 (equal accuracy) b ~ Binomial(b + c, 1/2). The reported p-value is the exact two-sided
    binomial one, 2 P(X <= min(b, c)) capped at 1 (the same as ``scipy.stats.binomtest``, since the
    null distribution is symmetric). With ``exact_threshold`` set, counts of at least that many
    discordant pairs report the continuity-corrected chi-square (|b - c| - 1)^2 / (b + c) with 1
    degree of freedom instead (the older convention). Both are always returned, so a table can say
    which it used.

    Returns a dict: ``b``, ``c``, ``n`` (items), ``n_discordant``, ``method`` ("exact" or "chi2"),
    ``statistic`` and ``p_value`` of that method, plus ``p_exact``, ``chi2`` and ``p_chi2``.
    """
    a = np.asarray(correct_a).astype(bool).ravel()
    bb = np.asarray(correct_b).astype(bool).ravel()
    if a.shape != bb.shape:
        raise ValueError(f"correct_a and correct_b must have the same length, got {a.size} and {bb.size}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    nd = b + c
    if nd == 0:
        p_exact, chi2, p_chi2 = 1.0, 0.0, 1.0
    else:
        p_exact = min(1.0, 2.0 * float(st.binom.cdf(min(b, c), nd, 0.5)))
        # Edwards' continuity correction; clipped at 0 so b == c gives statistic 0, not 1.
        chi2 = max(abs(b - c) - 1, 0) ** 2 / nd
        p_chi2 = float(st.chi2.sf(chi2, df=1))
    exact = exact_threshold is None or nd < exact_threshold
    return {
        "b": b,
        "c": c,
        "n": int(a.size),
        "n_discordant": nd,
        "method": "exact" if exact else "chi2",
        "statistic": float(min(b, c)) if exact else float(chi2),
        "p_value": p_exact if exact else p_chi2,
        "p_exact": p_exact,
        "chi2": float(chi2),
        "p_chi2": p_chi2,
    }


def holm(p_values: Any) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (1-based) is multiplied by (m - i + 1), made non-decreasing
    along the order and capped at 1. Rejecting where the adjusted p < alpha controls the
    family-wise error rate at alpha for any dependence between the tests.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"p_values must be in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out.tolist()


def paired_diff_interval(
    correct_a: Any, correct_b: Any, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy of A minus accuracy of B on the same items, with a paired bootstrap interval.

    Returns (difference, low, high) as fractions. Resampling items with replacement only moves the
    counts of the three kinds of item (only A right, only B right, both or neither), so the
    bootstrap draws those counts from a multinomial: identical to resampling the items, and cheap.
    """
    a = np.asarray(correct_a).astype(bool).ravel()
    bb = np.asarray(correct_b).astype(bool).ravel()
    if a.shape != bb.shape or a.size == 0:
        raise ValueError(
            f"correct_a and correct_b must be non-empty and of one length, got {a.size}, {bb.size}"
        )
    n = a.size
    b, c = int(np.sum(a & ~bb)), int(np.sum(~a & bb))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, [b / n, c / n, 1 - (b + c) / n], size=n_boot)
    diffs = (draws[:, 0] - draws[:, 1]) / n
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (b - c) / n, float(lo), float(hi)


def _weighted_stats(feats: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of the multiset that takes row i w[i] times."""
    n = w.sum()
    mu = (w @ feats) / n
    x = feats - mu
    return mu, (x.T * w) @ x / (n - 1)


def fid_diff_bootstrap(
    feats_a: list[Any],
    feats_b: list[Any],
    ref_mean: Any,
    ref_cov: Any,
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | None = None,
    chunk: int = 50,
) -> dict[str, Any]:
    """FID(A) - FID(B) averaged over sample seeds, with a paired bootstrap interval.

    ``feats_a[s]`` and ``feats_b[s]`` are the (N, D) features of the samples of seed s; row i of
    both comes from the same class and starting noise, so each bootstrap draw resamples the same
    rows of A and B (per seed), against fixed reference statistics. Returns the FID of each
    setting per seed, their means, the mean difference and its interval.

    The reference is fixed, so its square root is taken once and each draw needs only the
    eigenvalues of R^1/2 S R^1/2 (the symmetric form of tr((S R)^1/2) that `frechet_distance`
    uses); draws are computed in float64 batches of `chunk` with torch, on `device` (a GPU makes
    the 1,000 draws of a 2,000-sample, 256-feature comparison take seconds).
    """
    import torch

    from .fid import _sym_psd_sqrt

    if len(feats_a) != len(feats_b) or not feats_a:
        raise ValueError("feats_a and feats_b need the same, non-zero number of seeds")
    fa = [np.asarray(f, dtype=np.float64) for f in feats_a]
    fb = [np.asarray(f, dtype=np.float64) for f in feats_b]
    for x, y in zip(fa, fb):
        if x.shape != y.shape or x.ndim != 2:
            raise ValueError(f"paired feature sets must have one (N, D) shape, got {x.shape} and {y.shape}")
    dev = torch.device(device or "cpu")
    mu_r = torch.as_tensor(np.asarray(ref_mean, dtype=np.float64), device=dev)
    cov_r = np.asarray(ref_cov, dtype=np.float64)
    ref_half = torch.as_tensor(_sym_psd_sqrt(cov_r), device=dev)
    tr_r = float(np.trace(cov_r))

    def fids(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """FID of the multisets that take row i of f w[b, i] times, for each row b of w."""
        n = w.sum(1, keepdim=True)
        mu = (w @ f) / n
        second = (f[None] * w[..., None]).transpose(1, 2) @ f  # sum_i w_i x_i x_i^T, (B, D, D)
        cov = (second - n[..., None] * mu[:, :, None] * mu[:, None, :]) / (n[..., None] - 1)
        m = ref_half @ cov @ ref_half
        eig = torch.linalg.eigvalsh(0.5 * (m + m.transpose(1, 2))).clamp_min(0)
        diff = mu - mu_r
        tr = cov.diagonal(dim1=1, dim2=2).sum(1)
        return ((diff * diff).sum(1) + tr + tr_r - 2 * eig.sqrt().sum(1)).clamp_min(0)

    ta = [torch.as_tensor(x, device=dev) for x in fa]
    tb = [torch.as_tensor(y, device=dev) for y in fb]
    per_seed_a = [float(fids(x, torch.ones(1, len(x), dtype=x.dtype, device=dev))[0]) for x in ta]
    per_seed_b = [float(fids(y, torch.ones(1, len(y), dtype=y.dtype, device=dev))[0]) for y in tb]
    rng = np.random.default_rng(seed)
    deltas = np.zeros(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        for x, y in zip(ta, tb):
            w = torch.as_tensor(rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=b), device=dev)
            w = w.to(torch.float64)
            deltas[start : start + b] += (fids(x, w) - fids(y, w)).cpu().numpy()
    deltas /= len(fa)
    lo, hi = np.quantile(deltas, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "fid_a": per_seed_a,
        "fid_b": per_seed_b,
        "mean_a": float(np.mean(per_seed_a)),
        "mean_b": float(np.mean(per_seed_b)),
        "delta": float(np.mean(per_seed_a) - np.mean(per_seed_b)),
        "low": float(lo),
        "high": float(hi),
        "confidence": confidence,
        "n_boot": n_boot,
    }


def accuracy_decision(
    diff: float, high: float, p_adjusted: float, headroom: float | None = None, alpha: float = 0.05
) -> str:
    """The pre-registered verdict on "the candidate classifies better than its baseline".

    ``diff`` and ``high`` (upper end of its interval) and ``headroom`` (accuracy of the uncompressed
    model minus the baseline's) are fractions; ``p_adjusted`` is the Holm-adjusted exact McNemar p.
    Significant gain: "holds"; significant loss, or a gain of one point or more ruled out: "does
    not hold"; a non-significant result where the baseline loses under one point: "cannot tell (no
    headroom)"; otherwise "cannot tell".
    """
    if p_adjusted < alpha:
        return "holds" if diff > 0 else "does not hold"
    if headroom is not None and headroom < 0.01:
        return "cannot tell (no headroom)"
    if high < 0.01:
        return "does not hold"
    return "cannot tell"


def generation_decision(low: float, high: float, baseline_fid: float, margin_fraction: float = 0.10) -> str:
    """The pre-registered verdict on "generation is kept against the baseline" from the interval
    (low, high) of FID(candidate) - FID(baseline): kept when the whole interval lies at or below a
    margin of ``margin_fraction`` of the baseline's FID, not kept when it lies wholly above it."""
    margin = margin_fraction * baseline_fid
    if high <= margin:
        return "holds"
    if low > margin:
        return "does not hold"
    return "cannot tell"
