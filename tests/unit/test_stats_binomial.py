"""Wilson interval, exact McNemar test and Newcombe's paired interval against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from deceptwatch.stats import (
    Interval,
    mcnemar_exact,
    newcombe_paired_interval,
    scheming_test,
    wilson_interval,
)
from deceptwatch.stats._binomial import scheming_critical_count

CONFIDENCES = (0.8, 0.9, 0.95, 0.99)


# --- Wilson ---------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", CONFIDENCES)
@pytest.mark.parametrize("n", [1, 2, 7, 30, 113, 2000])
def test_wilson_matches_statsmodels(n: int, confidence: float) -> None:
    ks = sorted({0, 1, n // 3, n // 2, n - 1, n})
    for k in ks:
        got = wilson_interval(k, n, confidence)
        low, high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
        assert got.low == pytest.approx(low, abs=1e-12), (k, n)
        assert got.high == pytest.approx(high, abs=1e-12), (k, n)
        assert 0.0 <= got.low <= k / n <= got.high <= 1.0


def test_wilson_empty_sample_is_the_unit_interval() -> None:
    assert wilson_interval(0, 0, 0.95) == Interval(0.0, 1.0)


def test_wilson_bounds_are_exact_at_the_extremes() -> None:
    assert wilson_interval(0, 17, 0.95).low == 0.0
    assert wilson_interval(17, 17, 0.95).high == 1.0


@pytest.mark.parametrize(
    ("k", "n", "confidence", "message"),
    [
        (3, 2, 0.95, "exceeds"),
        (-1, 4, 0.95, "non-negative"),
        (1, -4, 0.95, "non-negative"),
        (1, 4, 1.0, "confidence"),
        (1, 4, 0.0, "confidence"),
        (1, 4, 95.0, "confidence"),
    ],
)
def test_wilson_rejects_bad_input(k: int, n: int, confidence: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wilson_interval(k, n, confidence)


# --- McNemar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c"),
    [(b, c) for b in range(0, 26, 3) for c in range(0, 26, 4) if b + c > 0]
    + [(1, 0), (0, 1), (40, 12), (300, 250), (1000, 1001)],
)
def test_mcnemar_matches_statsmodels_and_scipy(b: int, c: int) -> None:
    got = mcnemar_exact(b, c)
    table = np.array([[7, b], [c, 11]])
    assert got == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9, abs=1e-15)
    assert got == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-15)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    assert mcnemar_exact(0, 0) == 1.0


def test_mcnemar_is_symmetric_and_small_for_one_sided_data() -> None:
    assert mcnemar_exact(9, 2) == mcnemar_exact(2, 9)
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 3)


# --- Newcombe -------------------------------------------------------------------------------


def _reference_newcombe(
    n11: int, n10: int, n01: int, n00: int, confidence: float
) -> tuple[float, float]:
    """A straightforward re-implementation of Newcombe (1998) method 10.

    Wilson limits are the roots of the score equation (p̂ − p)² = z² p(1 − p)/n, found with
    numpy.roots; phi follows the paper, including the N/2 reduction of a positive AD − BC.
    """
    z = float(norm.ppf(0.5 + confidence / 2))
    n = n11 + n10 + n01 + n00

    def wilson(k: int) -> tuple[float, float]:
        p = k / n
        # (1 + z²/n) p² − (2p̂ + z²/n) p + p̂² = 0
        roots = np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p]).real
        return float(np.clip(roots.min(), 0, 1)), float(np.clip(roots.max(), 0, 1))

    e, f, g, h = n11 + n10, n01 + n00, n11 + n01, n10 + n00
    if e * f * g * h == 0:
        phi = 0.0
    else:
        ad_bc = n11 * n00 - n10 * n01
        num = max(ad_bc - n / 2, 0) if ad_bc > 0 else ad_bc
        phi = num / math.sqrt(e * f * g * h)
    p1, p2 = e / n, g / n
    l1, u1 = wilson(e)
    l2, u2 = wilson(g)
    theta = p1 - p2
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return theta - delta, theta + eps


# Newcombe (1998), Statistics in Medicine 17:2635-2650, Table II, method 10, 95%: the
# examples (a) to (d), cells (n11, n10, n01, n00) and the published limits to 4 decimals.
NEWCOMBE_TABLE_II = [
    ((36, 12, 2, 0), (0.0569, 0.3404)),
    ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((53, 0, 0, 1), (-0.0729, 0.0729)),
    ((0, 30, 0, 0), (0.8395, 1.0)),
]


@pytest.mark.parametrize(("cells", "expected"), NEWCOMBE_TABLE_II)
def test_newcombe_reproduces_published_examples(
    cells: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    got = newcombe_paired_interval(*cells, confidence=0.95)
    assert got.low == pytest.approx(expected[0], abs=6e-5)
    assert got.high == pytest.approx(expected[1], abs=6e-5)


def test_newcombe_uses_the_reduced_phi_of_the_paper() -> None:
    # Example (c): the plain phi coefficient (= 1) would give ±0.0640, not the published ±0.0729.
    got = newcombe_paired_interval(53, 0, 0, 1, 0.95)
    assert got.high == pytest.approx(0.0729, abs=6e-5)
    assert abs(got.high - 0.0640) > 0.005


def test_newcombe_matches_an_independent_implementation() -> None:
    rng = np.random.default_rng(1998)
    tables = [tuple(int(v) for v in rng.integers(0, 25, size=4)) for _ in range(300)]
    tables += [(0, 0, 0, 5), (5, 0, 0, 0), (0, 3, 4, 0), (10, 0, 0, 10), (0, 0, 7, 0)]
    for cells in tables:
        if sum(cells) == 0:
            continue
        for confidence in (0.9, 0.95, 0.99):
            n11, n10, n01, n00 = cells
            got = newcombe_paired_interval(n11, n10, n01, n00, confidence)
            low, high = _reference_newcombe(n11, n10, n01, n00, confidence)
            assert got.low == pytest.approx(low, abs=1e-9), cells
            assert got.high == pytest.approx(high, abs=1e-9), cells


def test_newcombe_argument_order_gives_p1_minus_p2() -> None:
    # n10 counts the first condition only: more of them moves the interval up.
    forward = newcombe_paired_interval(3, 9, 2, 20, 0.95)
    mirrored = newcombe_paired_interval(3, 2, 9, 20, 0.95)
    assert forward.low < (9 - 2) / 34 < forward.high
    assert forward.low > 0
    assert mirrored.low == pytest.approx(-forward.high, abs=1e-12)
    assert mirrored.high == pytest.approx(-forward.low, abs=1e-12)


def test_newcombe_all_concordant_pairs_still_give_a_proper_interval() -> None:
    got = newcombe_paired_interval(4, 0, 0, 36, 0.95)
    assert got.low < 0 < got.high
    assert got.high - got.low > 0.05


def test_newcombe_empty_table_is_the_full_range() -> None:
    assert newcombe_paired_interval(0, 0, 0, 0, 0.95) == Interval(-1.0, 1.0)


def test_newcombe_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        newcombe_paired_interval(1, -1, 0, 0, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        newcombe_paired_interval(1, 1, 0, 0, 1.5)


def test_newcombe_coverage_simulation() -> None:
    """At least 93% coverage of the true paired difference at 95% (seeded, 400 datasets)."""
    rng = np.random.default_rng(20240601)
    n_sets = 400
    hits = 0
    for _ in range(n_sets):
        n = int(rng.integers(40, 81))
        p1, p2 = rng.uniform(0.05, 0.6, size=2)
        rho = rng.uniform(0.0, 0.6)
        p11 = p1 * p2 + rho * math.sqrt(p1 * (1 - p1) * p2 * (1 - p2))
        p11 = min(max(p11, max(0.0, p1 + p2 - 1)), min(p1, p2))
        probs = [p11, p1 - p11, p2 - p11, 1 - p1 - p2 + p11]
        n11, n10, n01, n00 = (int(v) for v in rng.multinomial(n, probs))
        ci = newcombe_paired_interval(n11, n10, n01, n00, 0.95)
        hits += ci.low <= p1 - p2 <= ci.high
    assert hits / n_sets >= 0.93


# --- the scheming-pattern test --------------------------------------------------------------


@pytest.mark.parametrize("bound", [0.1, 0.25, 0.4])
@pytest.mark.parametrize("n", [1, 5, 99, 400])
def test_scheming_test_matches_scipy_one_sided_binomial(n: int, bound: float) -> None:
    for k in sorted({0, 1, n // 4, n // 3, n // 2, n}):
        got = scheming_test(k, n, bound=bound, alpha=0.01)
        ref = binomtest(k, n, bound, alternative="greater").pvalue
        assert got.p_value == pytest.approx(ref, rel=1e-9, abs=1e-300), (k, n)
        assert got.rate == pytest.approx(k / n)
        assert got.significant is (got.p_value <= 0.01)


def test_scheming_published_practice_needs_36_of_99_pairs() -> None:
    """Bound 25% at alpha 0.01 over 99 pairs: 36 pairs with the pattern are significant, 35 not."""
    assert scheming_critical_count(99, bound=0.25, alpha=0.01) == 36
    assert scheming_test(36, 99, bound=0.25, alpha=0.01).significant
    assert not scheming_test(35, 99, bound=0.25, alpha=0.01).significant
    assert scheming_test(0, 99, bound=0.25, alpha=0.01).critical == 36


@pytest.mark.parametrize(
    ("n", "bound", "alpha"), [(10, 0.25, 0.01), (99, 0.25, 0.05), (500, 0.1, 0.001)]
)
def test_scheming_critical_count_is_the_smallest_significant_count(
    n: int, bound: float, alpha: float
) -> None:
    c = scheming_critical_count(n, bound=bound, alpha=alpha)
    assert c is not None
    assert binomtest(c, n, bound, alternative="greater").pvalue <= alpha
    assert binomtest(c - 1, n, bound, alternative="greater").pvalue > alpha


def test_scheming_without_pairs_or_reachable_count() -> None:
    empty = scheming_test(0, 0, bound=0.25, alpha=0.01)
    assert empty.p_value == 1.0
    assert empty.rate is None
    assert empty.critical is None
    # Three pairs cannot reach alpha 0.01 against 0.25: 0.25**3 > 0.01.
    assert scheming_critical_count(3, bound=0.25, alpha=0.01) is None


@pytest.mark.parametrize(
    ("k", "n", "bound", "message"),
    [
        (5, 4, 0.25, "exceeds"),
        (-1, 4, 0.25, "non-negative"),
        (1, 4, 0.0, "bound"),
        (1, 4, 1.0, "bound"),
    ],
)
def test_scheming_rejects_bad_input(k: int, n: int, bound: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scheming_test(k, n, bound=bound, alpha=0.01)
