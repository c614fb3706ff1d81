"""Cluster bootstrap and sign-flip permutation test."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest
from scipy.stats import permutation_test

from deceptwatch.stats import (
    Interval,
    cluster_bootstrap_interval,
    newcombe_paired_interval,
    sign_flip_test,
)

# --- cluster bootstrap ----------------------------------------------------------------------


def _boot(sums: Sequence[float], counts: Sequence[float], seed: int, n: int = 2000) -> Interval:
    return cluster_bootstrap_interval(
        np.array(sums),
        np.array(counts),
        n_resamples=n,
        confidence=0.95,
        rng=np.random.default_rng(seed),
    )


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    sums, counts = [3, -1, 5, 0, 2, 7], [10, 12, 9, 8, 15, 11]
    assert _boot(sums, counts, 5) == _boot(sums, counts, 5)
    assert _boot(sums, counts, 5) != _boot(sums, counts, 6)


def test_bootstrap_of_two_clusters_spans_their_ratios() -> None:
    # Resamples are {A, A}, {A, B}, {B, B} with probabilities 1/4, 1/2, 1/4.
    got = _boot([2, -3], [4, 9], seed=1)
    assert got.low == pytest.approx(-1 / 3)
    assert got.high == pytest.approx(0.5)


def test_bootstrap_of_one_cluster_collapses_to_its_ratio() -> None:
    got = _boot([3], [12], seed=2)
    assert got == Interval(0.25, 0.25)


def test_bootstrap_drops_resamples_without_count() -> None:
    # Resamples made of the empty cluster alone are dropped, all others have ratio 2/3.
    got = _boot([0, 2], [0, 3], seed=3)
    assert got.low == pytest.approx(2 / 3)
    assert got.high == pytest.approx(2 / 3)


def test_bootstrap_resamples_the_pooled_ratio_not_the_mean_of_ratios() -> None:
    rng = np.random.default_rng(11)
    sums = rng.integers(-3, 9, size=12).astype(float)
    counts = rng.integers(5, 60, size=12).astype(float)
    got = cluster_bootstrap_interval(
        sums, counts, n_resamples=40000, confidence=0.9, rng=np.random.default_rng(12)
    )
    # A plain loop over resamples, with its own generator.
    loop_rng = np.random.default_rng(13)
    ratios = []
    for _ in range(40000):
        idx = loop_rng.integers(0, 12, size=12)
        ratios.append(sums[idx].sum() / counts[idx].sum())
    low, high = np.quantile(ratios, [0.05, 0.95])
    assert got.low == pytest.approx(low, abs=0.01)
    assert got.high == pytest.approx(high, abs=0.01)
    assert got.low < sums.sum() / counts.sum() < got.high


def test_bootstrap_chunks_give_the_same_kind_of_answer() -> None:
    # More clusters than one chunk row can hold forces several chunks.
    rng = np.random.default_rng(4)
    k = 50_000
    sums = rng.integers(-1, 3, size=k).astype(float)
    counts = np.full(k, 2.0)
    got = cluster_bootstrap_interval(
        sums, counts, n_resamples=200, confidence=0.95, rng=np.random.default_rng(5)
    )
    centre = sums.sum() / counts.sum()
    assert got.low < centre < got.high
    assert got.high - got.low < 0.05


@pytest.mark.parametrize(
    ("sums", "counts", "message"),
    [
        ([], [], "positive count"),
        ([1.0, 2.0], [3.0], "differ in length"),
        ([1.0], [-2.0], "non-negative"),
        ([0.0, 0.0], [0.0, 0.0], "positive count"),
    ],
)
def test_bootstrap_rejects_bad_input(sums: list[float], counts: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cluster_bootstrap_interval(
            np.array(sums),
            np.array(counts),
            n_resamples=10,
            confidence=0.95,
            rng=np.random.default_rng(0),
        )


def _clustered_dataset(rng: np.random.Generator, mu: float) -> np.ndarray:
    """Paired cells (n11, n10, n01, n00) per scenario: scenario gaps vary around mu."""
    k = int(rng.integers(15, 31))
    base = rng.uniform(0.05, 0.3, size=k)  # observed defect rate
    gaps = mu + rng.uniform(-0.05, 0.05, size=k)  # between-scenario variation
    sizes = rng.integers(20, 41, size=k)
    observed, unobserved = base, base + gaps
    both = observed * unobserved
    probs = np.stack([both, unobserved - both, observed - both, 1 - observed - unobserved + both])
    return np.array([rng.multinomial(m, probs[:, i]) for i, m in enumerate(sizes)])


def test_bootstrap_union_coverage_simulation() -> None:
    """The family interval (cluster bootstrap ∪ pooled Newcombe) covers the mean gap."""
    rng = np.random.default_rng(2024)
    mu = 0.1
    n_sets = 300
    hits = 0
    for _ in range(n_sets):
        cells = _clustered_dataset(rng, mu)
        n11, n10, n01, n00 = (int(v) for v in cells.sum(axis=0))
        score = newcombe_paired_interval(n11, n10, n01, n00, 0.95)
        boot = cluster_bootstrap_interval(
            cells[:, 1] - cells[:, 2],
            cells.sum(axis=1),
            n_resamples=1000,
            confidence=0.95,
            rng=rng,
        )
        hits += min(score.low, boot.low) <= mu <= max(score.high, boot.high)
    assert hits / n_sets >= 0.93


# --- sign-flip test -------------------------------------------------------------------------


def _brute_force(x: np.ndarray) -> float:
    observed = abs(x.sum())
    hits = 0
    total = 0
    for signs in itertools.product((-1.0, 1.0), repeat=x.size):
        total += 1
        hits += abs(np.dot(signs, x)) >= observed - 1e-12
    return hits / total


@pytest.mark.parametrize("seed", range(6))
def test_sign_flip_exact_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 11))
    x = np.round(rng.normal(0.1, 0.3, size=k), 3)
    assert sign_flip_test(x, rng=np.random.default_rng(0)) == pytest.approx(_brute_force(x))


@pytest.mark.parametrize("seed", range(4))
def test_sign_flip_exact_matches_scipy_paired_permutation(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    k = 12
    unobserved = rng.uniform(0, 0.6, size=k) + 0.08 * seed
    observed = rng.uniform(0, 0.6, size=k)

    def mean_diff(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return np.asarray(np.mean(a - b, axis=axis))

    ref = permutation_test(
        (unobserved, observed),
        mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf,
        alternative="two-sided",
    )
    got = sign_flip_test(unobserved - observed, rng=np.random.default_rng(0))
    assert got == pytest.approx(ref.pvalue, rel=1e-9)


def test_sign_flip_exact_does_not_touch_the_generator() -> None:
    rng = np.random.default_rng(9)
    before = rng.bit_generator.state
    sign_flip_test(np.array([0.2, -0.1, 0.4]), rng=rng)
    assert rng.bit_generator.state == before


def test_sign_flip_ties_and_empty_input() -> None:
    assert sign_flip_test(np.array([]), rng=np.random.default_rng(0)) == 1.0
    assert sign_flip_test(np.zeros(5), rng=np.random.default_rng(0)) == 1.0
    # One cluster: both sign patterns are as extreme as the data.
    assert sign_flip_test(np.array([0.7]), rng=np.random.default_rng(0)) == 1.0
    # Five equal positive clusters: only the two all-equal patterns are as extreme.
    assert sign_flip_test(np.full(5, 0.3), rng=np.random.default_rng(0)) == 2 / 32


def test_sign_flip_monte_carlo_agrees_with_exact() -> None:
    rng = np.random.default_rng(77)
    x = rng.normal(0.05, 0.3, size=18)
    exact = sign_flip_test(x, rng=np.random.default_rng(0), max_exact=18)
    assert exact == pytest.approx(_sign_flip_by_enumeration(x))
    m = 20000
    mc = sign_flip_test(x, rng=np.random.default_rng(1), max_exact=10, n_resamples=m)
    assert mc == pytest.approx(exact, abs=0.015)
    # The (b + 1)/(m + 1) form.
    b = mc * (m + 1) - 1
    assert b == pytest.approx(round(b), abs=1e-6)


def _sign_flip_by_enumeration(x: np.ndarray) -> float:
    k = x.size
    codes = np.arange(2**k)[:, None]
    signs = 1 - 2 * ((codes >> np.arange(k)) & 1)
    stats = np.abs(signs @ x)
    return float(np.mean(stats >= abs(x.sum()) - 1e-12))


def test_sign_flip_monte_carlo_is_never_zero_and_is_seeded() -> None:
    x = np.full(40, 0.5)
    a = sign_flip_test(x, rng=np.random.default_rng(3), n_resamples=999)
    b = sign_flip_test(x, rng=np.random.default_rng(3), n_resamples=999)
    # No draw is as extreme: below the Monte Carlo floor 1/1000 the p-value is Hoeffding's
    # bound 2·exp(−t²/(2 Σ x²)) with t = 20 and Σ x² = 10, i.e. 2·e^−20.
    assert a == b == pytest.approx(2 * math.exp(-20))
    assert 0 < a < 1 / 1000
    huge = sign_flip_test(np.full(5000, 1.0), rng=np.random.default_rng(3), n_resamples=99)
    assert huge > 0


def test_sign_flip_hoeffding_bound_is_never_below_the_exact_p_value() -> None:
    """The bound that replaces the Monte Carlo floor is conservative against the exact test."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        k = int(rng.integers(2, 13))
        x = rng.normal(rng.uniform(-1, 1), 1.0, size=k)
        t = abs(x.sum())
        bound = 2 * math.exp(-(t**2) / (2 * float(np.sum(x * x))))
        assert bound >= _brute_force(x) - 1e-12


def test_sign_flip_uses_the_bound_only_when_no_draw_is_as_extreme() -> None:
    x = np.random.default_rng(4).normal(0.3, 1.0, size=30)
    p = sign_flip_test(x, rng=np.random.default_rng(0), n_resamples=2000)
    # Some draws are as extreme here, so the p-value is the ordinary (b + 1)/(m + 1).
    assert p * 2001 == pytest.approx(round(p * 2001))
    assert p > 1 / 2001


def test_sign_flip_rejects_non_finite_values() -> None:
    with pytest.raises(ValueError, match="finite"):
        sign_flip_test(np.array([0.1, np.nan]), rng=np.random.default_rng(0))
