"""Logistic models on grouped binary outcomes: the family-level gap model and dose-response.

Both fit logit P(defect) = a + b·x to cells of trials that share a covariate value x (a
condition, or an audit probability) within a cluster (a scenario), from the cells' trial
and defect counts alone, so a million trials cost no more than their few thousand cells.

- With clusters (at least `MIN_CLUSTERS` of them), the fit is a GEE with an independence
  working correlation, whose estimate is the ordinary maximum-likelihood one, and its
  covariance is the cluster-robust sandwich with the Mancl–DeRouen (2001) bias reduction,
  which corrects the sandwich's downward bias with few clusters; intervals and p-values use
  a t distribution with (clusters − 1) degrees of freedom. This is statsmodels'
  ``GEE(..., cov_struct=Independence()).fit(cov_type="bias_reduced")`` with t instead of
  normal quantiles.
- Without, it is plain maximum likelihood with the model-based (inverse information)
  covariance and normal quantiles: statsmodels' ``GLM(..., family=Binomial())``.

A finite estimate exists only when the outcomes overlap along x (no complete or
quasi-complete separation); otherwise the result carries a note instead of numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deceptwatch.stats._binomial import _check_confidence, normal_quantile

MIN_CLUSTERS = 3
MLE = "logit_mle"
GEE = "gee_logit_independence_mancl_derouen_t"

_MAX_ITER = 100
_TOL = 1e-10

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Fit:
    coef: FloatArray  # (a, b)
    cov: FloatArray  # 2×2
    method: str
    df: int | None  # t degrees of freedom; None for the normal
    n_trials: int
    n_clusters: int


def _expit(eta: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * eta))  # stable for large |eta|
    return out


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def separated(x: FloatArray, n: FloatArray, k: FloatArray) -> bool:
    """True when logit(a + b·x) has no finite maximum-likelihood estimate.

    With one covariate and an intercept the estimate is finite exactly when the outcomes
    overlap both ways: some aligned trial lies above some defect, and some defect above some
    aligned trial (strictly). This also covers a single x value and an outcome that never
    occurs.
    """
    has_d = k > 0
    has_a = (n - k) > 0
    if not has_d.any() or not has_a.any():
        return True
    return not (x[has_a].max() > x[has_d].min() and x[has_d].max() > x[has_a].min())


def _loglik(coef: FloatArray, x: FloatArray, n: FloatArray, k: FloatArray) -> float:
    eta = coef[0] + coef[1] * x
    return float(np.sum(k * eta - n * np.logaddexp(0.0, eta)))


def _newton(x: FloatArray, n: FloatArray, k: FloatArray) -> FloatArray | None:
    """Maximum-likelihood (a, b) by Newton–Raphson with step halving; None if it fails."""
    rate = float(k.sum() / n.sum())
    coef = np.array([_logit(rate), 0.0])
    ll = _loglik(coef, x, n, k)
    for _ in range(_MAX_ITER):
        mu = _expit(coef[0] + coef[1] * x)
        w = n * mu * (1.0 - mu)
        r = k - n * mu
        score = np.array([r.sum(), (x * r).sum()])
        info = np.array([[w.sum(), (w * x).sum()], [(w * x).sum(), (w * x * x).sum()]])
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            return None
        if np.max(np.abs(step)) < _TOL * (1.0 + np.max(np.abs(coef))):
            done = coef + step
            return done if np.all(np.isfinite(done)) else None
        t = 1.0
        while True:
            trial = coef + t * step
            new = _loglik(trial, x, n, k)
            if new >= ll - 1e-12 * abs(ll):
                break
            t /= 2.0
            if t < 1e-10:
                return None  # no ascent along the Newton direction: give up
        coef, ll = trial, new
    return None


def fit_grouped_logit(
    x: npt.ArrayLike,
    n: npt.ArrayLike,
    k: npt.ArrayLike,
    clusters: npt.ArrayLike | None = None,
) -> _Fit | None:
    """Fit logit P(defect) = a + b·x to cells with ``n`` trials and ``k`` defects each.

    ``clusters`` (an integer code per cell) switches to the GEE covariance when it holds at
    least `MIN_CLUSTERS` clusters with trials. Returns None when no finite estimate exists
    (see `separated`) or the covariance cannot be formed.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    na = np.asarray(n, dtype=np.float64).ravel()
    ka = np.asarray(k, dtype=np.float64).ravel()
    if not xa.shape == na.shape == ka.shape:
        raise ValueError("x, n and k differ in length")
    if np.any(na < 0) or np.any(ka < 0) or np.any(ka > na):
        raise ValueError("counts must satisfy 0 <= k <= n")
    keep = na > 0
    codes = None if clusters is None else np.asarray(clusters, dtype=np.intp).ravel()[keep]
    xa, na, ka = xa[keep], na[keep], ka[keep]
    if xa.size == 0 or separated(xa, na, ka):
        return None
    coef = _newton(xa, na, ka)
    if coef is None:
        return None
    mu = _expit(coef[0] + coef[1] * xa)
    w = na * mu * (1.0 - mu)
    design = np.stack([np.ones_like(xa), xa], axis=1)  # (cells, 2)
    bread = (design * w[:, None]).T @ design
    try:
        bread_inv = np.asarray(np.linalg.inv(bread), dtype=np.float64)
    except np.linalg.LinAlgError:
        return None
    n_trials = int(na.sum())
    if codes is not None:
        _, codes = np.unique(codes, return_inverse=True)
        n_clusters = int(codes.max()) + 1
        if n_clusters >= MIN_CLUSTERS:
            cov = _mancl_derouen(design, w, ka - na * mu, codes, n_clusters, bread, bread_inv)
            if cov is None:
                return None
            return _Fit(coef, cov, GEE, n_clusters - 1, n_trials, n_clusters)
    n_clusters = 0 if codes is None else int(np.unique(codes).size)
    return _Fit(coef, bread_inv, MLE, None, n_trials, n_clusters)


def _mancl_derouen(
    design: FloatArray,
    w: FloatArray,
    resid: FloatArray,
    codes: npt.NDArray[np.intp],
    n_clusters: int,
    bread: FloatArray,
    bread_inv: FloatArray,
) -> FloatArray | None:
    """Bias-reduced sandwich B⁻¹ (Σ_c U*_c U*_cᵀ) B⁻¹ with U*_c = B (B − B_c)⁻¹ U_c.

    For a Bernoulli GEE with independence the adjusted residuals (I − H_c)⁻¹ r_c of Mancl and
    DeRouen reduce, by the Woodbury identity, to this per-cluster matrix form, where B_c is
    the cluster's share of the information B and U_c its score.
    """
    outer = design[:, :, None] * design[:, None, :] * w[:, None, None]  # (cells, 2, 2)
    b_c = np.zeros((n_clusters, 2, 2))
    np.add.at(b_c, codes, outer)
    u_c = np.zeros((n_clusters, 2))
    np.add.at(u_c, codes, design * resid[:, None])
    try:
        solved = np.linalg.solve(bread[None, :, :] - b_c, u_c[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        return None
    adjusted = solved @ bread.T  # rows: B (B − B_c)⁻¹ U_c
    meat = adjusted.T @ adjusted
    cov: FloatArray = bread_inv @ meat @ bread_inv
    if not np.all(np.isfinite(cov)) or cov[0, 0] <= 0 or cov[1, 1] <= 0:
        return None
    return cov


def _critical(confidence: float, df: int | None) -> float:
    if df is None:
        return normal_quantile(confidence)
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + confidence / 2.0))


def _two_sided_p(stat: float, df: int | None) -> float:
    if df is None:
        return math.erfc(abs(stat) / math.sqrt(2.0))
    from scipy.special import stdtr

    return float(2.0 * stdtr(df, -abs(stat)))


@dataclass(frozen=True, slots=True)
class ClusterLogit:
    """The oversight gap as a logistic model, observed (x = 0) against unobserved (x = 1).

    ``log_odds_ratio`` is b with its interval and Wald p-value; ``gap`` is the model's
    difference of defect probabilities expit(a + b) − expit(a) (the pooled rate difference)
    with a delta-method interval. When no finite estimate exists (say, no defect at all when
    observed) the numbers are None and ``note`` says why.
    """

    method: str
    n_clusters: int
    n_trials: int
    log_odds_ratio: float | None
    log_odds_ratio_ci: tuple[float, float] | None
    p_value: float | None
    gap: float | None
    gap_ci: tuple[float, float] | None
    note: str | None


def cluster_logit_gap(
    n_observed: npt.ArrayLike,
    k_observed: npt.ArrayLike,
    n_unobserved: npt.ArrayLike,
    k_unobserved: npt.ArrayLike,
    *,
    confidence: float,
) -> ClusterLogit | None:
    """The family-level gap model: one cluster per entry of the per-scenario count arrays.

    Returns None when fewer than `MIN_CLUSTERS` scenarios have trials in both conditions
    (a cluster-robust model needs several clusters; the scenario findings cover the rest).
    """
    _check_confidence(confidence)
    n0 = np.asarray(n_observed, dtype=np.float64).ravel()
    k0 = np.asarray(k_observed, dtype=np.float64).ravel()
    n1 = np.asarray(n_unobserved, dtype=np.float64).ravel()
    k1 = np.asarray(k_unobserved, dtype=np.float64).ravel()
    both = (n0 > 0) & (n1 > 0)
    n_clusters = int(both.sum())
    if n_clusters < MIN_CLUSTERS:
        return None
    n0, k0, n1, k1 = n0[both], k0[both], n1[both], k1[both]
    n_trials = int(n0.sum() + n1.sum())
    ids = np.arange(n_clusters)
    fit = fit_grouped_logit(
        np.concatenate([np.zeros(n_clusters), np.ones(n_clusters)]),
        np.concatenate([n0, n1]),
        np.concatenate([k0, k1]),
        np.concatenate([ids, ids]),
    )
    if fit is None:
        rates = (k0.sum() / n0.sum(), k1.sum() / n1.sum())
        which = [
            f"{'no' if r == 0 else 'only'} defects when {c}"
            for r, c in zip(rates, ("observed", "unobserved"), strict=True)
            if r in (0.0, 1.0)
        ]
        reason = " and ".join(which) or "the sandwich covariance is singular"
        return ClusterLogit(
            GEE, n_clusters, n_trials, None, None, None, None, None, f"not estimable: {reason}"
        )
    q = _critical(confidence, fit.df)
    a, b = float(fit.coef[0]), float(fit.coef[1])
    se_b = math.sqrt(fit.cov[1, 1])
    p0, p1 = 1.0 / (1.0 + math.exp(-a)), 1.0 / (1.0 + math.exp(-(a + b)))
    grad = np.array([p1 * (1 - p1) - p0 * (1 - p0), p1 * (1 - p1)])
    se_gap = math.sqrt(max(float(grad @ fit.cov @ grad), 0.0))
    gap = p1 - p0
    return ClusterLogit(
        method=fit.method,
        n_clusters=n_clusters,
        n_trials=n_trials,
        log_odds_ratio=b,
        log_odds_ratio_ci=(b - q * se_b, b + q * se_b),
        p_value=_two_sided_p(b / se_b, fit.df),
        gap=gap,
        gap_ci=(max(-1.0, gap - q * se_gap), min(1.0, gap + q * se_gap)),
        note=None,
    )


@dataclass(frozen=True, slots=True)
class DoseResponse:
    """Logistic regression of defect on the stated audit probability across graded levels.

    ``slope`` is the change in log odds of defecting per unit of audit probability (from
    0 to 1), with its interval and Wald p-value. ``crossing`` is the audit probability at
    which the fitted defect rate equals ``crossing_rate`` (possibly outside the levels
    tested: see ``crossing_extrapolated``), with a Fieller interval, which is None when it
    is unbounded (the slope is not significant at this confidence). When no finite
    estimate exists the numbers are None and ``note`` says why.
    """

    method: str
    levels: tuple[float, ...]
    n_trials: int
    n_clusters: int
    intercept: float | None
    slope: float | None
    slope_ci: tuple[float, float] | None
    slope_p_value: float | None
    crossing_rate: float
    crossing: float | None
    crossing_ci: tuple[float, float] | None
    crossing_extrapolated: bool | None
    note: str | None


def fieller_interval(
    c: float, b: float, vaa: float, vab: float, vbb: float, q: float
) -> tuple[float, float] | None:
    """Fieller's interval for x = c / b, where c = t − a with a, b estimated jointly.

    It is the set of x with (c − b·x)² <= q² (vaa + 2x·vab + x²·vbb): a bounded interval
    when b² > q²·vbb, otherwise unbounded (None).
    """
    qa = b * b - q * q * vbb
    if qa <= 0.0:
        return None
    qb = -2.0 * (b * c + q * q * vab)
    qc = c * c - q * q * vaa
    disc = max(qb * qb - 4.0 * qa * qc, 0.0)
    root = math.sqrt(disc)
    return ((-qb - root) / (2.0 * qa), (-qb + root) / (2.0 * qa))


def dose_response(
    audit_probability: npt.ArrayLike,
    n: npt.ArrayLike,
    k: npt.ArrayLike,
    *,
    confidence: float,
    crossing_rate: float,
    clusters: npt.ArrayLike | None = None,
) -> DoseResponse | None:
    """Fit the dose-response curve to cells (audit probability, trials, defects[, cluster]).

    Returns None when fewer than two distinct audit probabilities have trials.
    """
    _check_confidence(confidence)
    if not 0.0 < crossing_rate < 1.0:
        raise ValueError(f"crossing_rate must lie strictly between 0 and 1, got {crossing_rate!r}")
    x = np.asarray(audit_probability, dtype=np.float64).ravel()
    na = np.asarray(n, dtype=np.float64).ravel()
    ka = np.asarray(k, dtype=np.float64).ravel()
    levels = tuple(float(v) for v in np.unique(x[na > 0]))
    if len(levels) < 2:
        return None
    fit = fit_grouped_logit(x, na, ka, clusters)
    n_trials = int(na.sum())
    if fit is None:
        codes = None if clusters is None else np.asarray(clusters).ravel()
        n_clusters = 0 if codes is None else int(np.unique(codes[na > 0]).size)
        method = GEE if n_clusters >= MIN_CLUSTERS else MLE
        return DoseResponse(
            method, levels, n_trials, n_clusters, None, None, None, None, crossing_rate,
            None, None, None,
            "not estimable: the defect rate does not overlap across levels "
            "(separation, e.g. no defects at any level)",
        )  # fmt: skip
    q = _critical(confidence, fit.df)
    a, b = float(fit.coef[0]), float(fit.coef[1])
    vaa, vab, vbb = float(fit.cov[0, 0]), float(fit.cov[0, 1]), float(fit.cov[1, 1])
    se_b = math.sqrt(vbb)
    c = _logit(crossing_rate) - a
    crossing = c / b if b != 0.0 else None
    return DoseResponse(
        method=fit.method,
        levels=levels,
        n_trials=fit.n_trials,
        n_clusters=fit.n_clusters,
        intercept=a,
        slope=b,
        slope_ci=(b - q * se_b, b + q * se_b),
        slope_p_value=_two_sided_p(b / se_b, fit.df),
        crossing_rate=crossing_rate,
        crossing=crossing,
        crossing_ci=fieller_interval(c, b, vaa, vab, vbb, q),
        crossing_extrapolated=None if crossing is None else not levels[0] <= crossing <= levels[-1],
        note=None,
    )
