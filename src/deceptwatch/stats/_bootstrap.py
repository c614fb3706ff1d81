"""Cluster (scenario) bootstrap of a pooled ratio."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from deceptwatch.stats._binomial import Interval, _check_confidence

# Upper bound on the entries of one resample × cluster weight matrix held in memory at once.
_CHUNK_CELLS = 4_000_000


def cluster_bootstrap_interval(
    cluster_sums: npt.ArrayLike,
    cluster_counts: npt.ArrayLike,
    *,
    n_resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> Interval:
    """Percentile interval of the pooled ratio Σ sums / Σ counts under a cluster bootstrap.

    Whole clusters (scenarios) are drawn with replacement, k out of k, so a resample's
    ratio is (w · sums) / (w · counts) with w its multinomial vector of cluster
    multiplicities; the draws are vectorised over resamples in chunks of bounded memory.
    For the oversight gap a cluster's sum is Σ (d_unobserved − d_observed) over its usable
    pairs and its count is the number of those pairs. Resamples whose total count is 0 are
    dropped. A ValueError is raised when there is no cluster with a positive count, or
    when every resample was dropped.
    """
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    sums = np.asarray(cluster_sums, dtype=np.float64).ravel()
    counts = np.asarray(cluster_counts, dtype=np.float64).ravel()
    if sums.shape != counts.shape:
        raise ValueError("cluster_sums and cluster_counts differ in length")
    if np.any(counts < 0):
        raise ValueError("cluster counts must be non-negative")
    k = sums.size
    if k == 0 or not np.any(counts > 0):
        raise ValueError("the bootstrap needs at least one cluster with a positive count")
    per_chunk = max(1, _CHUNK_CELLS // k)
    ratios: list[npt.NDArray[np.float64]] = []
    done = 0
    while done < n_resamples:
        size = min(per_chunk, n_resamples - done)
        # Row r draws k cluster indices with replacement; summing the gathered values is the
        # same as weighting each cluster by its multinomial multiplicity in that resample.
        picks = rng.integers(0, k, size=(size, k))
        num = sums[picks].sum(axis=1)
        den = counts[picks].sum(axis=1)
        keep = den > 0
        ratios.append(num[keep] / den[keep])
        done += size
    if not ratios or sum(r.size for r in ratios) == 0:
        raise ValueError("every bootstrap resample had a total count of 0")
    values = np.concatenate(ratios)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(float(low), float(high))
