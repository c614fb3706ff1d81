"""Cluster (scenario) bootstrap of a pooled ratio, and of a difference of two ratios."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from deceptwatch.stats._binomial import Interval, _check_confidence

# Upper bound on the entries of one resample × cluster index matrix held in memory at once.
_CHUNK_CELLS = 4_000_000


def resampled_sums(
    columns: npt.NDArray[np.float64], *, n_resamples: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.float64]]:
    """Column sums of cluster bootstrap resamples, in chunks of bounded memory.

    ``columns`` is (clusters, m). Each resample draws k of the k clusters with replacement;
    a chunk is a (resamples in the chunk, m) array of the drawn clusters' column sums, which
    is the same as weighting each cluster by its multinomial multiplicity in that resample.
    """
    k = columns.shape[0]
    per_chunk = max(1, _CHUNK_CELLS // k)
    done = 0
    while done < n_resamples:
        size = min(per_chunk, n_resamples - done)
        picks = rng.integers(0, k, size=(size, k))
        yield np.stack([columns[:, j][picks].sum(axis=1) for j in range(columns.shape[1])], 1)
        done += size


def _check(n_resamples: int, confidence: float) -> None:
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def _percentile(values: npt.NDArray[np.float64], confidence: float) -> Interval:
    if values.size == 0:
        raise ValueError("every bootstrap resample had a total count of 0")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def _columns(*arrays: npt.ArrayLike) -> npt.NDArray[np.float64]:
    cols = [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    if len({c.shape for c in cols}) != 1:
        raise ValueError("the per-cluster arrays differ in length")
    return np.stack(cols, axis=1)


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
    _check(n_resamples, confidence)
    cols = _columns(cluster_sums, cluster_counts)
    if np.any(cols[:, 1] < 0):
        raise ValueError("cluster counts must be non-negative")
    if cols.shape[0] == 0 or not np.any(cols[:, 1] > 0):
        raise ValueError("the bootstrap needs at least one cluster with a positive count")
    ratios: list[npt.NDArray[np.float64]] = []
    for chunk in resampled_sums(cols, n_resamples=n_resamples, rng=rng):
        keep = chunk[:, 1] > 0
        ratios.append(chunk[keep, 0] / chunk[keep, 1])
    return _percentile(np.concatenate(ratios), confidence)


def cluster_bootstrap_difference_interval(
    sums_a: npt.ArrayLike,
    counts_a: npt.ArrayLike,
    sums_b: npt.ArrayLike,
    counts_b: npt.ArrayLike,
    *,
    n_resamples: int,
    confidence: float,
    rng: np.random.Generator,
) -> Interval:
    """Percentile interval of Σ sums_a / Σ counts_a − Σ sums_b / Σ counts_b, resampling the
    clusters jointly (row i of every array is the same cluster, e.g. one scenario run on two
    models), so that what the two ratios share through their clusters cancels.

    Resamples in which either total count is 0 are dropped.
    """
    _check(n_resamples, confidence)
    cols = _columns(sums_a, counts_a, sums_b, counts_b)
    if np.any(cols[:, [1, 3]] < 0):
        raise ValueError("cluster counts must be non-negative")
    if cols.shape[0] == 0 or not (np.any(cols[:, 1] > 0) and np.any(cols[:, 3] > 0)):
        raise ValueError("the bootstrap needs clusters with a positive count on both sides")
    diffs: list[npt.NDArray[np.float64]] = []
    for chunk in resampled_sums(cols, n_resamples=n_resamples, rng=rng):
        keep = (chunk[:, 1] > 0) & (chunk[:, 3] > 0)
        diffs.append(chunk[keep, 0] / chunk[keep, 1] - chunk[keep, 2] / chunk[keep, 3])
    return _percentile(np.concatenate(diffs), confidence)
