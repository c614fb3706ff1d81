"""Calibration and evaluation of probe scores: pure functions returning frozen results.

- `threshold_at_fpr`: the flag threshold for a target false-positive rate α on a control
  set of benign scores. Flags are ``score > threshold``. The threshold is the
  ⌈(n + 1)(1 − α)⌉-th smallest benign score (the conformal quantile), so that a new benign
  prompt exchangeable with the control set is flagged with probability at most α.
- `auroc`: the area under the ROC curve (Mann–Whitney, ties counted one half).
- `recall_at_fpr`: the best recall with at most a share α of the set's own negatives
  flagged (the point of the ROC curve at FPR ≤ α).
- `evaluate`: AUROC, recall at α FPR and, given a calibrated threshold, recall and FPR at
  that threshold, each with a seeded percentile bootstrap interval. With `groups` (e.g. the
  scenario of each trial) whole groups are resampled: trials of one scenario are not
  independent, and resampling them one by one would make the intervals too narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deceptwatch.stats import Interval

FloatArray = npt.NDArray[np.float64]
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True, slots=True)
class Threshold:
    """A flag threshold set on benign scores: flags are ``score > value``."""

    value: float
    fpr_target: float
    n_benign: int
    benign_flag_rate: float  # share of the calibration scores above `value` (≤ fpr_target)


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    interval: Interval | None  # None when no bootstrap resample was usable


@dataclass(frozen=True, slots=True)
class ProbeEvaluation:
    """How well scores separate positives (label 1) from negatives (label 0)."""

    n: int
    n_positive: int
    n_negative: int
    auroc: Estimate
    fpr_target: float
    recall_at_fpr: Estimate  # at the set's own α-FPR point of the ROC curve
    threshold: float | None
    recall_at_threshold: Estimate | None
    fpr_at_threshold: Estimate | None
    n_resamples: int
    usable_resamples: int
    confidence: float
    seed: int
    clusters: int | None  # resampled units when grouped


def _scores(scores: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("no scores given")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or infinite values")
    return arr


def _labels(labels: npt.ArrayLike, n: int) -> npt.NDArray[np.bool_]:
    arr = np.asarray(labels).ravel()
    if arr.shape != (n,):
        raise ValueError(f"need one label per score ({n}), got {arr.shape[0]}")
    if not set(np.unique(arr).tolist()) <= {0, 1}:  # bools compare equal to 0 and 1
        raise ValueError("labels must be binary (0/1 or bool)")
    return arr.astype(bool)


def _check_fpr(fpr: float) -> None:
    if not 0 < fpr < 1:
        raise ValueError(f"the target false-positive rate must lie in (0, 1), got {fpr}")


def min_benign(fpr: float) -> int:
    """The fewest benign scores for which a threshold at `fpr` can flag anything."""
    _check_fpr(fpr)
    return max(1, math.ceil(1.0 / fpr - 1.0 - 1e-9))


def threshold_at_fpr(benign_scores: npt.ArrayLike, fpr: float = 0.01) -> Threshold:
    """The conformal (1 − α) quantile of benign scores (see the module docstring)."""
    _check_fpr(fpr)
    s = np.sort(_scores(benign_scores))
    n = s.size
    k = math.ceil((n + 1) * (1.0 - fpr) - 1e-9)  # 1-based rank
    if k > n:
        raise ValueError(
            f"{n} benign scores are too few for a threshold at {100 * fpr:g}% false "
            f"positives: at least {min_benign(fpr)} are needed"
        )
    value = float(s[k - 1])
    return Threshold(value, fpr, n, float(np.mean(s > value)))


def flag_rate(scores: npt.ArrayLike, threshold: float) -> float:
    return float(np.mean(_scores(scores) > threshold))


# ----------------------------------------------------------------------------- weighted core


def _grouped(
    scores: FloatArray, labels: npt.NDArray[np.bool_], weights: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per resample (rows of `weights`), the positive and negative weight at each distinct
    score, in increasing order of score: (values, pos (R, U), neg (R, U))."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = weights[:, order]
    lab = labels[order]
    pos = np.add.reduceat(w * lab, starts, axis=1)
    neg = np.add.reduceat(w * ~lab, starts, axis=1)
    return s[starts], pos, neg


def _metrics(
    scores: FloatArray,
    labels: npt.NDArray[np.bool_],
    weights: FloatArray,
    fpr: float,
    threshold: float | None,
) -> dict[str, FloatArray]:
    values, pos, neg = _grouped(scores, labels, weights)
    tp, tn = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each value
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (tp * tn)
        # flags at "score > values[u]": the lowest u whose negatives above are ≤ α
        neg_above = tn[:, None] - np.cumsum(neg, axis=1)
        pos_above = tp[:, None] - np.cumsum(pos, axis=1)
        ok = neg_above <= fpr * tn[:, None] + 1e-12
        first = np.argmax(ok, axis=1)  # the last column is always ok (nothing above)
        recall = pos_above[np.arange(len(first)), first] / tp
        out = {"auroc": auc, "recall_at_fpr": recall}
        if threshold is not None:
            above = values > threshold
            out["recall_at_threshold"] = (pos * above).sum(axis=1) / tp
            out["fpr_at_threshold"] = (neg * above).sum(axis=1) / tn
    usable = (tp > 0) & (tn > 0)  # a resample without both classes says nothing
    return {k: np.where(usable, v, np.nan) for k, v in out.items()}


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties ½."""
    s = _scores(scores)
    y = _labels(labels, s.size)
    if y.all() or not y.any():
        raise ValueError("AUROC needs both positives and negatives")
    return float(_metrics(s, y, np.ones((1, s.size)), 0.5, None)["auroc"][0])


def recall_at_fpr(scores: npt.ArrayLike, labels: npt.ArrayLike, fpr: float = 0.01) -> float:
    """The highest recall at which at most a share `fpr` of the negatives is flagged."""
    _check_fpr(fpr)
    s = _scores(scores)
    y = _labels(labels, s.size)
    if y.all() or not y.any():
        raise ValueError("recall at a false-positive rate needs both positives and negatives")
    return float(_metrics(s, y, np.ones((1, s.size)), fpr, None)["recall_at_fpr"][0])


def _interval(values: FloatArray, confidence: float) -> Interval | None:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return Interval(float(low), float(high))


def evaluate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    threshold: float | None = None,
    fpr: float = 0.01,
    groups: npt.ArrayLike | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ProbeEvaluation:
    """AUROC and recall at `fpr` (and at `threshold`, if given), with percentile bootstrap
    intervals from `n_resamples` seeded resamples (of `groups` when given). Resamples that
    lack positives or negatives are dropped (``usable_resamples`` says how many were kept)."""
    _check_fpr(fpr)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 0:
        raise ValueError("n_resamples must be non-negative")
    s = _scores(scores)
    y = _labels(labels, s.size)
    if y.all() or not y.any():
        raise ValueError("evaluation needs both positives and negatives")
    point = {
        k: float(v[0]) for k, v in _metrics(s, y, np.ones((1, s.size)), fpr, threshold).items()
    }
    if groups is None:
        unit = np.arange(s.size)
        k = s.size
    else:
        g = np.asarray(groups).ravel()
        if g.shape != s.shape:
            raise ValueError("need one group per score")
        _, unit = np.unique(g, return_inverse=True)
        k = int(unit.max()) + 1
    rng = np.random.default_rng(seed)
    boot: dict[str, list[FloatArray]] = {key: [] for key in point}
    per_chunk = max(1, _CHUNK_CELLS // max(k, s.size))
    done = 0
    while done < n_resamples:
        size = min(per_chunk, n_resamples - done)
        picks = rng.integers(0, k, size=(size, k))
        counts = np.zeros((size, k))
        np.add.at(counts, (np.repeat(np.arange(size), k), picks.ravel()), 1.0)
        weights = counts[:, unit]  # each trial weighted by its unit's multiplicity
        for key, v in _metrics(s, y, weights, fpr, threshold).items():
            boot[key].append(v)
        done += size
    samples = {key: np.concatenate(v) if v else np.empty(0) for key, v in boot.items()}
    usable = int(np.isfinite(samples["auroc"]).sum()) if n_resamples else 0

    def est(key: str) -> Estimate:
        return Estimate(point[key], _interval(samples[key], confidence) if n_resamples else None)

    return ProbeEvaluation(
        n=int(s.size),
        n_positive=int(y.sum()),
        n_negative=int((~y).sum()),
        auroc=est("auroc"),
        fpr_target=fpr,
        recall_at_fpr=est("recall_at_fpr"),
        threshold=threshold,
        recall_at_threshold=est("recall_at_threshold") if threshold is not None else None,
        fpr_at_threshold=est("fpr_at_threshold") if threshold is not None else None,
        n_resamples=n_resamples,
        usable_resamples=usable,
        confidence=confidence,
        seed=seed,
        clusters=k if groups is not None else None,
    )
