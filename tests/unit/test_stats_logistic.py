"""Logistic models (family gap model, dose-response) against statsmodels on fixed data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import norm
from scipy.stats import t as student_t

from deceptwatch.stats import cluster_logit_gap, dose_response, fieller_interval
from deceptwatch.stats._logistic import GEE, MLE, fit_grouped_logit, separated

LEVELS = np.array([0.0, 0.01, 0.1, 0.5, 1.0])


def _clustered_cells(seed: int, k: int = 8) -> tuple[np.ndarray, ...]:
    """Cells (x, n, k, cluster) of a dose-response with a random intercept per cluster."""
    rng = np.random.default_rng(seed)
    x = np.tile(LEVELS, k)
    cl = np.repeat(np.arange(k), LEVELS.size)
    n = rng.integers(5, 30, size=x.size).astype(float)
    eff = rng.normal(0, 0.5, k)[cl]
    p = 1 / (1 + np.exp(-(0.5 - 2.5 * x + eff)))
    d = rng.binomial(n.astype(int), p).astype(float)
    return x, n, d, cl


def _expand(x: np.ndarray, n: np.ndarray, d: np.ndarray, cl: np.ndarray) -> tuple[np.ndarray, ...]:
    """One row per trial: the form statsmodels fits."""
    rows = [(xi, 1.0 if j < di else 0.0, ci) for xi, ni, di, ci in zip(x, n, d, cl, strict=True) for j in range(int(ni))]  # fmt: skip
    arr = np.array(rows)
    return sm.add_constant(arr[:, 0]), arr[:, 1], arr[:, 2]


def _gee(x: np.ndarray, n: np.ndarray, d: np.ndarray, cl: np.ndarray) -> Any:
    exog, endog, groups = _expand(x, n, d, cl)
    model = sm.GEE(
        endog,
        exog,
        groups=groups,
        family=sm.families.Binomial(),
        cov_struct=sm.cov_struct.Independence(),
    )
    return model.fit(cov_type="bias_reduced")


# --- the fit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clustered_fit_matches_statsmodels_gee_bias_reduced(seed: int) -> None:
    x, n, d, cl = _clustered_cells(seed)
    fit = fit_grouped_logit(x, n, d, cl)
    assert fit is not None
    ref = _gee(x, n, d, cl)
    assert fit.method == GEE
    assert fit.df == 7
    np.testing.assert_allclose(fit.coef, ref.params, rtol=1e-7)
    np.testing.assert_allclose(fit.cov, ref.cov_params(), rtol=1e-6)


@pytest.mark.parametrize("seed", [4, 5])
def test_plain_fit_matches_statsmodels_glm(seed: int) -> None:
    x, n, d, cl = _clustered_cells(seed)
    fit = fit_grouped_logit(x, n, d)
    assert fit is not None
    exog, endog, _ = _expand(x, n, d, cl)
    ref = sm.GLM(endog, exog, family=sm.families.Binomial()).fit(tol=1e-12)
    assert fit.method == MLE
    assert fit.df is None
    np.testing.assert_allclose(fit.coef, ref.params, rtol=1e-7)
    np.testing.assert_allclose(fit.cov, ref.cov_params(), rtol=1e-5)


def test_two_clusters_fall_back_to_the_plain_fit() -> None:
    x, n, d, cl = _clustered_cells(6, k=2)
    fit = fit_grouped_logit(x, n, d, cl)
    assert fit is not None
    assert fit.method == MLE


@pytest.mark.parametrize(
    ("x", "n", "d", "expected"),
    [
        ([0, 1], [10, 10], [0, 5], True),  # no defect at x = 0: slope → +∞
        ([0, 1], [10, 10], [3, 10], True),  # only defects at x = 1
        ([0, 1], [10, 10], [0, 0], True),  # no defect at all
        ([0.5, 0.5], [10, 10], [3, 4], True),  # a single x value
        ([0, 0.5, 1], [10, 10, 10], [0, 4, 10], True),  # quasi-complete separation
        ([0, 0.5, 1], [10, 10, 10], [1, 4, 10], False),
        ([0, 1], [10, 10], [3, 5], False),
    ],
)
def test_separation_is_detected(x: list[float], n: list[int], d: list[int], expected: bool) -> None:
    arrays = (np.array(x, dtype=float), np.array(n, dtype=float), np.array(d, dtype=float))
    assert separated(*arrays) is expected
    assert (fit_grouped_logit(*arrays) is None) is expected


def test_fit_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="0 <= k <= n"):
        fit_grouped_logit([0, 1], [3, 3], [4, 1])
    with pytest.raises(ValueError, match="differ in length"):
        fit_grouped_logit([0, 1], [3], [1, 1])


# --- the family-level gap model ----------------------------------------------------------------


def _gap_counts(seed: int, k: int = 12) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n0 = rng.integers(10, 40, size=k)
    n1 = rng.integers(10, 40, size=k)
    base = rng.uniform(0.05, 0.3, size=k)
    return n0, rng.binomial(n0, base), n1, rng.binomial(n1, np.minimum(base + 0.15, 1.0))


@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_cluster_logit_gap_matches_statsmodels(confidence: float) -> None:
    n0, k0, n1, k1 = _gap_counts(7)
    got = cluster_logit_gap(n0, k0, n1, k1, confidence=confidence)
    assert got is not None
    k = n0.size
    ids = np.arange(k)
    ref = _gee(
        np.concatenate([np.zeros(k), np.ones(k)]),
        np.concatenate([n0, n1]).astype(float),
        np.concatenate([k0, k1]).astype(float),
        np.concatenate([ids, ids]),
    )
    b, se = ref.params[1], ref.bse[1]
    q = student_t.ppf(0.5 + confidence / 2, df=k - 1)
    assert got.method == GEE
    assert (got.n_clusters, got.n_trials) == (k, int(n0.sum() + n1.sum()))
    assert got.log_odds_ratio == pytest.approx(b, rel=1e-7)
    assert got.log_odds_ratio_ci == pytest.approx((b - q * se, b + q * se), rel=1e-6)
    assert got.p_value == pytest.approx(2 * student_t.sf(abs(b / se), df=k - 1), rel=1e-5)
    # The model's gap is the pooled rate difference, with a delta-method interval.
    assert got.gap == pytest.approx(k1.sum() / n1.sum() - k0.sum() / n0.sum(), rel=1e-9)
    a = ref.params[0]
    p0, p1 = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-(a + b)))
    grad = np.array([p1 * (1 - p1) - p0 * (1 - p0), p1 * (1 - p1)])
    se_gap = math.sqrt(grad @ ref.cov_params() @ grad)
    assert got.gap_ci == pytest.approx((got.gap - q * se_gap, got.gap + q * se_gap), rel=1e-5)
    assert got.note is None


def test_cluster_logit_gap_needs_three_clusters_and_says_when_not_estimable() -> None:
    assert cluster_logit_gap([10, 10], [1, 2], [10, 10], [5, 6], confidence=0.95) is None
    # No defect when observed: the log odds ratio is infinite.
    got = cluster_logit_gap([10] * 4, [0] * 4, [10] * 4, [5, 6, 7, 5], confidence=0.95)
    assert got is not None
    assert got.log_odds_ratio is None
    assert got.gap is None
    assert got.note == "not estimable: no defects when observed"


def test_cluster_logit_gap_covers_the_true_gap() -> None:
    """Seeded simulation: the delta-method interval of the gap covers the truth >= 93%."""
    rng = np.random.default_rng(99)
    p0, p1 = 0.15, 0.3
    hits = 0
    n_sets = 300
    for _ in range(n_sets):
        k = 20
        n0 = rng.integers(20, 60, size=k)
        n1 = rng.integers(20, 60, size=k)
        got = cluster_logit_gap(n0, rng.binomial(n0, p0), n1, rng.binomial(n1, p1), confidence=0.95)
        assert got is not None
        assert got.gap_ci is not None
        hits += got.gap_ci[0] <= p1 - p0 <= got.gap_ci[1]
    assert hits / n_sets >= 0.93


# --- dose-response -----------------------------------------------------------------------------


def test_dose_response_matches_statsmodels_glm_and_crossing() -> None:
    x, n, d, cl = _clustered_cells(8)
    got = dose_response(x, n, d, confidence=0.95, crossing_rate=0.3)
    assert got is not None
    exog, endog, _ = _expand(x, n, d, cl)
    ref = sm.GLM(endog, exog, family=sm.families.Binomial()).fit(tol=1e-12)
    a, b = ref.params
    lo, hi = ref.conf_int(alpha=0.05)[1]
    assert got.method == MLE
    assert got.levels == tuple(LEVELS)
    assert got.slope == pytest.approx(b, rel=1e-7)
    assert got.slope_ci == pytest.approx((lo, hi), rel=1e-5)
    assert got.slope_p_value == pytest.approx(ref.pvalues[1], rel=1e-4)
    crossing = (math.log(0.3 / 0.7) - a) / b
    assert got.crossing == pytest.approx(crossing, rel=1e-6)
    # At the crossing the fitted defect rate is the level asked for.
    assert 1 / (1 + math.exp(-(a + b * got.crossing))) == pytest.approx(0.3)
    assert got.crossing_extrapolated is False
    # Fieller: the audit probabilities whose predicted log odds are not rejected as 0.3's.
    cov = ref.cov_params()
    grid = np.linspace(-0.5, 1.5, 400001)
    num = math.log(0.3 / 0.7) - a - b * grid
    var = cov[0, 0] + 2 * grid * cov[0, 1] + grid**2 * cov[1, 1]
    inside = grid[num**2 <= norm.ppf(0.975) ** 2 * var]
    assert got.crossing_ci is not None
    assert got.crossing_ci[0] == pytest.approx(inside.min(), abs=1e-5)
    assert got.crossing_ci[1] == pytest.approx(inside.max(), abs=1e-5)


def test_pooled_dose_response_uses_the_cluster_model() -> None:
    x, n, d, cl = _clustered_cells(9)
    got = dose_response(x, n, d, confidence=0.9, crossing_rate=0.2, clusters=cl)
    assert got is not None
    ref = _gee(x, n, d, cl)
    q = student_t.ppf(0.95, df=7)
    b, se = ref.params[1], ref.bse[1]
    assert got.method == GEE
    assert got.n_clusters == 8
    assert got.slope_ci == pytest.approx((b - q * se, b + q * se), rel=1e-6)


def test_fieller_is_unbounded_when_the_slope_is_not_significant() -> None:
    assert fieller_interval(1.0, 0.5, 0.1, 0.0, 0.2, 1.96) is None
    low_high = fieller_interval(1.0, 2.0, 0.01, 0.0, 0.01, 1.96)
    assert low_high is not None
    assert low_high[0] < 0.5 < low_high[1]


def test_dose_response_needs_two_levels_and_reports_separation() -> None:
    assert dose_response([0.1, 0.1], [10, 5], [3, 1], confidence=0.95, crossing_rate=0.1) is None
    got = dose_response(LEVELS, [10] * 5, [0] * 5, confidence=0.95, crossing_rate=0.1)
    assert got is not None
    assert got.slope is None
    assert got.note is not None
    assert "separation" in got.note
    with pytest.raises(ValueError, match="crossing_rate"):
        dose_response(LEVELS, [10] * 5, [1] * 5, confidence=0.95, crossing_rate=1.0)


def test_dose_response_slope_interval_covers_the_truth() -> None:
    """Seeded simulation over 300 datasets: the 95% slope interval covers the true slope."""
    rng = np.random.default_rng(17)
    a, b = -0.2, -2.0
    n = np.full(LEVELS.size, 60)
    hits = 0
    n_sets = 300
    for _ in range(n_sets):
        d = rng.binomial(n, 1 / (1 + np.exp(-(a + b * LEVELS))))
        got = dose_response(LEVELS, n, d, confidence=0.95, crossing_rate=0.2)
        assert got is not None
        assert got.slope_ci is not None
        hits += got.slope_ci[0] <= b <= got.slope_ci[1]
    assert hits / n_sets >= 0.93
