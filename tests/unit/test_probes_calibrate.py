"""Calibration and evaluation: AUROC and recall against scikit-learn and scipy on fixed data,
the conformal threshold's rank, and the bootstrap (seeded, weighted = resampled, clustered)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_auc_score, roc_curve

from deceptwatch.probes import (
    auroc,
    evaluate,
    flag_rate,
    min_benign,
    recall_at_fpr,
    threshold_at_fpr,
)
from deceptwatch.probes._calibrate import _metrics


def _fixed(n: int = 400, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.35
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s * 2) / 2  # many tied scores
    return s, y


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_and_mann_whitney(seed: int, ties: bool) -> None:
    s, y = _fixed(seed=seed, ties=ties)
    ours = auroc(s, y)
    assert ours == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    u = mannwhitneyu(s[y], s[~y]).statistic
    assert ours == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)


def test_auroc_known_values() -> None:
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5
    with pytest.raises(ValueError, match="both positives and negatives"):
        auroc([1, 2], [1, 1])


def _reference_recall(s: np.ndarray, y: np.ndarray, fpr: float) -> float:
    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    return float(t[f <= fpr + 1e-12].max())


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("ties", [False, True])
def test_recall_at_fpr_matches_the_roc_curve(fpr: float, ties: bool) -> None:
    for seed in range(3):
        s, y = _fixed(seed=seed, ties=ties)
        assert recall_at_fpr(s, y, fpr) == pytest.approx(_reference_recall(s, y, fpr))


def test_conformal_threshold_rank() -> None:
    scores = np.arange(1, 200, dtype=float)[::-1]  # 199 distinct benign scores, shuffled order
    th = threshold_at_fpr(scores, 0.01)
    k = math.ceil(200 * 0.99)  # 198th smallest
    assert th.value == k
    assert th.n_benign == 199
    assert th.benign_flag_rate == pytest.approx(1 / 199)  # only 199 > 198
    # a new exchangeable benign score exceeds the k-th of n with probability (n + 1 − k)/(n + 1)
    assert (200 - k) / 200 <= 0.01
    assert flag_rate(scores, th.value) == pytest.approx(1 / 199)


def test_threshold_needs_enough_benign_scores() -> None:
    assert min_benign(0.01) == 99
    assert threshold_at_fpr(np.arange(99.0), 0.01).value == 98.0  # nothing above it
    with pytest.raises(ValueError, match="at least 99 are needed"):
        threshold_at_fpr(np.arange(98.0), 0.01)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        threshold_at_fpr(np.arange(500.0), 0.0)


def test_exchangeable_false_positive_rate_is_at_most_the_target() -> None:
    rng = np.random.default_rng(5)
    rates = []
    for _ in range(400):
        cal = rng.normal(size=299)
        th = threshold_at_fpr(cal, 0.01).value
        rates.append(np.mean(rng.normal(size=2000) > th))
    assert np.mean(rates) <= 0.0105  # the guarantee is 0.01 in expectation; 3 SE of slack


def test_weighted_metrics_equal_metrics_of_the_resampled_data() -> None:
    s, y = _fixed(n=120, seed=3, ties=True)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(s), size=len(s))
    w = np.bincount(picks, minlength=len(s)).astype(float)[None]
    got = _metrics(s, y, w, 0.05, threshold=0.3)
    rs, ry = s[picks], y[picks]
    assert got["auroc"][0] == pytest.approx(roc_auc_score(ry, rs))
    assert got["recall_at_fpr"][0] == pytest.approx(_reference_recall(rs, ry, 0.05))
    assert got["recall_at_threshold"][0] == pytest.approx(np.mean(rs[ry] > 0.3))
    assert got["fpr_at_threshold"][0] == pytest.approx(np.mean(rs[~ry] > 0.3))


def test_evaluate_point_estimates_and_seeded_intervals() -> None:
    s, y = _fixed(seed=4)
    ev = evaluate(s, y, threshold=0.5, n_resamples=300, seed=1)
    assert ev.auroc.value == pytest.approx(roc_auc_score(y, s))
    assert ev.recall_at_fpr.value == pytest.approx(_reference_recall(s, y, 0.01))
    assert ev.recall_at_threshold is not None
    assert ev.fpr_at_threshold is not None
    assert ev.recall_at_threshold.value == pytest.approx(np.mean(s[y] > 0.5))
    assert ev.fpr_at_threshold.value == pytest.approx(np.mean(s[~y] > 0.5))
    for e in (ev.auroc, ev.recall_at_threshold, ev.fpr_at_threshold):
        assert e.interval is not None
        assert e.interval.low <= e.value <= e.interval.high
    again = evaluate(s, y, threshold=0.5, n_resamples=300, seed=1)
    assert again == ev
    other = evaluate(s, y, threshold=0.5, n_resamples=300, seed=2)
    assert other.auroc.interval != ev.auroc.interval
    assert ev.usable_resamples == 300
    assert ev.n == len(s)
    assert ev.n_positive == int(y.sum())
    # the normal-approximation SE of an AUROC (Hanley–McNeil) agrees with the bootstrap width
    a, n1, n0 = ev.auroc.value, y.sum(), (~y).sum()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert ev.auroc.interval is not None
    width = ev.auroc.interval.high - ev.auroc.interval.low
    assert 0.75 * 3.92 * se < width < 1.25 * 3.92 * se


def test_cluster_bootstrap_is_not_fooled_by_copies() -> None:
    s, y = _fixed(n=150, seed=6)
    base = evaluate(s, y, n_resamples=400, seed=0)
    copies = 8  # every trial repeated: no new information
    s8, y8 = np.repeat(s, copies), np.repeat(y, copies)
    groups = np.repeat(np.arange(len(s)), copies)
    naive = evaluate(s8, y8, n_resamples=400, seed=0)
    clustered = evaluate(s8, y8, groups=groups, n_resamples=400, seed=0)
    assert clustered.clusters == len(s)
    assert clustered.auroc.value == pytest.approx(base.auroc.value)

    def width(e: object) -> float:
        iv = e.auroc.interval  # type: ignore[attr-defined]
        return float(iv.high - iv.low)

    assert width(naive) < 0.5 * width(base)  # copies counted as evidence
    assert width(clustered) == pytest.approx(width(base), rel=0.2)


def test_resamples_without_both_classes_are_dropped() -> None:
    s = np.array([0.1, 0.9, 0.2, 0.8])
    y = np.array([0, 1, 0, 1])
    ev = evaluate(s, y, groups=[0, 1, 0, 1], n_resamples=200, seed=0)
    # with two groups (all negatives / all positives), half the resamples lack a class
    assert 0 < ev.usable_resamples < 200
    assert ev.auroc.interval is not None
    assert ev.auroc.interval.low == 1.0


def test_evaluate_input_errors() -> None:
    with pytest.raises(ValueError, match="one label per score"):
        evaluate([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="one group per score"):
        evaluate([0.1, 0.2], [0, 1], groups=[1])
