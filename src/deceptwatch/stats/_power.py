"""Power planning: how many pairs a suite needs to detect a given oversight gap.

The paired test of a scenario is McNemar's, so the plan uses Connor's (1987) sample size for
it: with δ the gap and ψ the probability that a pair is discordant,

    n = ⌈(z_{1−α/2} √ψ + z_{power} √(ψ − δ²))² / δ²⌉.

ψ comes from the observed defect rate p (``baseline``) with the two trials of a pair
independent: ψ = p(1 − p − δ) + (p + δ)(1 − p). Positive correlation within pairs, the
usual case, lowers ψ and the pairs needed, so this errs on the safe side; a ψ measured in a
pilot run can be given instead.

The findings use the *exact* McNemar test, which is conservative, so the normal
approximation's n usually falls a little short of the power asked for. The plan therefore
brackets from it (doubling the step) and bisects for the first n at which the exact power of
the exact two-sided test reaches the target. (Exact power saw-tooths in n, so an isolated
smaller n can occasionally reach it too; the bisection does not hunt for those.) It also reports the fewest
scenarios with which the pooled (scenario sign-flip) test can reach α at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

PLAN_METHOD = "exact_mcnemar_power"


@dataclass(frozen=True, slots=True)
class PowerPlan:
    """Pairs needed to detect ``gap`` with probability ``power`` at two-sided ``alpha``."""

    gap: float
    power: float
    alpha: float
    baseline: float
    discordant: float
    pairs: int
    normal_pairs: int
    exact_power: float
    min_scenarios: int
    method: str


def _check_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def min_scenarios(alpha: float) -> int:
    """Fewest clusters with which the exact sign-flip test can reach `alpha`.

    Its smallest p-value with k clusters is 2/2^k (all signs as observed, or all flipped).
    """
    _check_unit("alpha", alpha)
    return max(1, math.ceil(math.log2(2.0 / alpha) - 1e-12))


def mcnemar_exact_power(n: int, p10: float, p01: float, alpha: float) -> float:
    """Exact power of the two-sided exact McNemar test at level `alpha` over `n` pairs.

    A pair is discordant one way with probability p10 and the other way with p01. Given m
    discordant pairs the test rejects when the smaller count is at most c(m), the largest c
    with 2·P(Bin(m, 1/2) <= c) <= alpha; the power sums that over m ~ Bin(n, p10 + p01).
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    _check_unit("alpha", alpha)
    psi = p10 + p01
    if not (p10 >= 0.0 and p01 >= 0.0 and psi <= 1.0):
        raise ValueError("p10 and p01 must be non-negative and sum to at most 1")
    if n == 0 or psi == 0.0:
        return 0.0
    from scipy.stats import binom

    # Only discordant counts within 12 standard deviations of n·ψ carry any probability
    # that matters (the rest sum to far below 1e-20).
    sd = math.sqrt(n * psi * (1.0 - psi))
    m = np.arange(
        max(0, math.floor(n * psi - 12 * sd - 1)), min(n, math.ceil(n * psi + 12 * sd + 1)) + 1
    )
    c = binom.ppf(alpha / 2.0, m, 0.5).astype(np.int64)
    c = np.where(2.0 * binom.cdf(c, m, 0.5) <= alpha, c, c - 1)
    share = p10 / psi
    low = np.where(c >= 0, binom.cdf(c, m, share), 0.0)  # b <= c
    high = np.where(c >= 0, binom.sf(m - c - 1, m, share), 0.0)  # b >= m − c
    reject = np.where(m > 0, low + high, 0.0)
    return float(np.sum(binom.pmf(m, n, psi) * reject))


def plan_pairs(
    gap: float,
    *,
    power: float,
    alpha: float,
    baseline: float,
    discordant: float | None = None,
) -> PowerPlan:
    """Pairs needed to detect an oversight gap `gap` (a difference of defect rates).

    `baseline` is the defect rate expected when observed; `discordant`, if given, replaces
    the discordant-pair probability derived from it. See the module docstring.
    """
    _check_unit("gap", gap)
    _check_unit("power", power)
    _check_unit("alpha", alpha)
    if not 0.0 <= baseline <= 1.0 - gap:
        raise ValueError(
            f"baseline must lie in [0, 1 − gap] = [0, {1.0 - gap:g}], got {baseline!r}"
        )
    p_o, p_u = baseline, baseline + gap
    # p_u(1 − p_o) + p_o(1 − p_u), written as gap plus a non-negative term: in floating
    # point the sum then cannot fall below gap (at baseline = 1 − gap it did, by 2e-17).
    psi = gap + 2.0 * p_o * max(0.0, 1.0 - p_u) if discordant is None else discordant
    if not gap <= psi <= 1.0:
        raise ValueError(
            f"the discordant-pair probability must lie in [gap, 1] = [{gap:g}, 1], got {psi!r}"
        )
    z_a = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    z_b = NormalDist().inv_cdf(power)
    root = z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - gap * gap, 0.0))
    normal_pairs = max(1, math.ceil(root * root / (gap * gap) - 1e-9))
    p10 = (psi + gap) / 2.0
    p01 = (psi - gap) / 2.0

    def enough(n: int) -> bool:
        return mcnemar_exact_power(n, p10, p01, alpha) >= power

    # Bracket the first n with enough power (low without, high with), then bisect.
    if enough(normal_pairs):
        low, high = 0, normal_pairs
    else:
        low, high = normal_pairs, normal_pairs + max(1, normal_pairs // 50)
        while not enough(high):
            low, high = high, high + 2 * (high - low)
    while high - low > 1:
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return PowerPlan(
        gap=gap,
        power=power,
        alpha=alpha,
        baseline=baseline,
        discordant=psi,
        pairs=high,
        normal_pairs=normal_pairs,
        exact_power=mcnemar_exact_power(high, p10, p01, alpha),
        min_scenarios=min_scenarios(alpha),
        method=PLAN_METHOD,
    )
