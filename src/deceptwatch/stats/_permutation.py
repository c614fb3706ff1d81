"""Sign-flip permutation test on per-cluster statistics."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

# Upper bound on the entries of one sign matrix held in memory at once.
_CHUNK_CELLS = 4_000_000
# Relative tolerance under which a permuted statistic counts as a tie with the observed one.
_TIE_RTOL = 1e-12
# A p-value is never reported as exactly 0, even when Hoeffding's bound underflows.
_SMALLEST_P = 1e-300


def _count_at_least(
    signs: npt.NDArray[np.float64], values: npt.NDArray[np.float64], threshold: float
) -> int:
    return int(np.count_nonzero(np.abs(signs @ values) >= threshold))


def sign_flip_test(
    cluster_values: npt.ArrayLike,
    *,
    rng: np.random.Generator,
    max_exact: int = 15,
    n_resamples: int = 20000,
) -> float:
    """Two-sided sign-flip test that the sum of per-cluster values is 0.

    Under the null each cluster's value (a sum or mean of paired differences) is symmetric
    about 0, so its sign can be flipped. The statistic is |sum|: pass per-cluster sums for a
    test of the pair-weighted mean, per-cluster means for the unweighted one. With k clusters, all 2^k sign patterns are enumerated
    when k <= max_exact (the p-value is exact and ``rng`` is not used); otherwise
    ``n_resamples`` random patterns are drawn and p = (b + 1)/(m + 1), b being the number of
    draws at least as extreme as the data and m the number of draws. Ties within a relative
    1e-12 count as at least as extreme. Returns 1.0 when k == 0.

    When no draw is as extreme (b = 0), the Monte Carlo p-value would stop at its floor
    1/(m + 1), which a multiplicity adjustment over many findings multiplies into
    non-significance however strong the effect. The p-value is then the smaller of that
    floor and Hoeffding's bound on the exact one, P(|Σ ε_i x_i| >= t) <= 2 exp(−t²/(2 Σ x_i²))
    for independent random signs ε_i. It stays valid: below the floor it can only be
    reached through the bound, which is never below the exact p-value.
    """
    x = np.asarray(cluster_values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("cluster values must be finite")
    k = x.size
    if k == 0:
        return 1.0
    if max_exact < 0 or max_exact > 30:
        raise ValueError(f"max_exact must lie in [0, 30], got {max_exact}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    observed = abs(float(x.sum()))
    threshold = observed - _TIE_RTOL * max(observed, float(np.abs(x).sum()))
    per_chunk = max(1, _CHUNK_CELLS // k)
    if k <= max_exact:
        total = 1 << k
        bits = np.arange(k, dtype=np.int64)
        extreme = 0
        for start in range(0, total, per_chunk):
            codes = np.arange(start, min(total, start + per_chunk), dtype=np.int64)
            signs = 1.0 - 2.0 * ((codes[:, None] >> bits) & 1).astype(np.float64)
            extreme += _count_at_least(signs, x, threshold)
        return extreme / total
    # Random patterns: one random bit per cluster (1 → keep the sign, 0 → flip), drawn as
    # bytes and unpacked. With the kept set K, the signed sum is 2·Σ_K x − Σ x.
    total_sum = float(x.sum())
    n_bytes = (k + 7) // 8
    extreme = 0
    done = 0
    while done < n_resamples:
        size = min(per_chunk, n_resamples - done)
        raw = rng.integers(0, 256, size=(size, n_bytes), dtype=np.uint8)
        kept = np.unpackbits(raw, axis=1, count=k)
        signed = 2.0 * (kept @ x) - total_sum
        extreme += int(np.count_nonzero(np.abs(signed) >= threshold))
        done += size
    floor = 1.0 / (n_resamples + 1)
    if extreme:
        return (extreme + 1) / (n_resamples + 1)
    bound = 2.0 * math.exp(-(observed**2) / (2.0 * float(np.sum(x * x))))
    return max(min(floor, bound), _SMALLEST_P)
