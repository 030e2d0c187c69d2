"""Accuracy intervals (Wilson) and the paired test for two classifiers on the same items (McNemar)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as st

__all__ = ["mcnemar", "wilson_interval"]


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


def mcnemar(correct_a: Any, correct_b: Any, exact_threshold: int = 25) -> dict[str, Any]:
    """McNemar's test on paired per-item correctness of methods A and B.

    Only the discordant pairs carry information: b = A right & B wrong, c = A wrong & B right. Under
    H0 (equal accuracy) b ~ Binomial(b + c, 1/2). When b + c < ``exact_threshold`` the exact two-sided
    binomial p-value is the reported one (the chi-square approximation is poor for few discordant
    pairs); otherwise the continuity-corrected chi-square (|b - c| - 1)^2 / (b + c) with 1 degree of
    freedom. Both are always returned, so a table can state which it used.

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
    exact = nd < exact_threshold
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
