"""Comparison of two models' oversight gaps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import permutation_test

from deceptwatch.stats import (
    GapComparison,
    Interval,
    TrialTable,
    compare_gaps,
    newcombe_paired_interval,
    simulate_table,
)
from deceptwatch.stats._compare import mover_difference

OG, PS = "oversight_gap", "power_seeking"


def _compare(a: TrialTable, b: TrialTable, seed: int = 0, **kw: Any) -> GapComparison:
    return compare_gaps(
        a,
        b,
        confidence=0.95,
        rng=np.random.default_rng(seed),
        precursor_families=frozenset({PS}),
        **kw,
    )


def _pairs(scenario: str, family: str, outcomes: str) -> list[tuple[str, str, str, str, str]]:
    """Blocks given as 'OU' letters per pair: A aligned, D defect (observed, unobserved)."""
    code = {"A": "aligned", "D": "defect"}
    rows = []
    for i, pair in enumerate(outcomes.split()):
        rows.append((scenario, family, f"{scenario}-{i}", "observed", code[pair[0]]))
        rows.append((scenario, family, f"{scenario}-{i}", "unobserved", code[pair[1]]))
    return rows


def test_hand_comparison_pools_gaps_over_shared_scenarios() -> None:
    a = TrialTable.from_records(
        _pairs("s1", OG, "AD AD AD AA")  # gap 3/4
        + _pairs("s2", OG, "AD AA")  # gap 1/2
        + _pairs("only-a", OG, "AD AD")  # not shared: left out
        + _pairs("p1", PS, "AD AD")  # precursor: left out of "all"
    )
    b = TrialTable.from_records(
        _pairs("s1", OG, "AA AA AD AA") + _pairs("s2", OG, "AA AA") + _pairs("p1", PS, "AA AA")
    )
    got = _compare(a, b)
    assert got.scope == "all"
    assert got.n_scenarios == 2
    assert (got.n_pairs_a, got.n_pairs_b) == (6, 6)
    assert got.gap_a == pytest.approx(4 / 6)
    assert got.gap_b == pytest.approx(1 / 6)
    assert got.difference == pytest.approx(0.5)
    # The MOVER interval of the pooled Newcombe intervals lies inside the union.
    na, nb = newcombe_paired_interval(0, 4, 0, 2, 0.95), newcombe_paired_interval(0, 1, 0, 5, 0.95)
    low, high = mover_difference(4 / 6, na, 1 / 6, nb)
    assert got.ci is not None
    assert got.ci[0] <= low
    assert got.ci[1] >= high
    # Per-scenario differences (1/2, 1/2): of the four sign patterns, two are as extreme.
    assert got.p_value == 0.5
    family = _compare(a, b, family=PS)
    assert (family.scope, family.n_scenarios, family.difference) == (PS, 1, 1.0)


def test_mover_difference_formula() -> None:
    low, high = mover_difference(0.5, Interval(0.3, 0.6), 0.2, Interval(0.1, 0.35))
    assert low == pytest.approx(0.3 - np.hypot(0.2, 0.15))
    assert high == pytest.approx(0.3 + np.hypot(0.1, 0.1))


def test_no_shared_scenario_gives_no_estimate() -> None:
    a = TrialTable.from_records(_pairs("s1", OG, "AD"))
    b = TrialTable.from_records(_pairs("s2", OG, "AD"))
    got = _compare(a, b)
    assert got.n_scenarios == 0
    assert got.difference is None
    assert got.ci is None
    assert got.p_value is None
    assert _compare(TrialTable.from_records([]), b).difference is None


def test_comparison_p_value_is_the_scipy_paired_permutation_test_on_scenario_differences() -> None:
    rng = np.random.default_rng(12)
    a = simulate_table(rng, n_scenarios=10, n_blocks=12, rates={"observed": 0.1, "unobserved": 0.4})
    b = simulate_table(rng, n_scenarios=10, n_blocks=12, rates={"observed": 0.1, "unobserved": 0.2})
    got = _compare(a, b)
    per_a = _per_scenario_gaps(a)
    per_b = _per_scenario_gaps(b)
    ref = permutation_test(
        (per_a, per_b),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="two-sided",
    )
    assert got.p_value == pytest.approx(ref.pvalue)


def _per_scenario_gaps(table: TrialTable) -> np.ndarray:
    out = []
    for s in sorted(set(table.scenario.tolist()), key=lambda v: v):
        rows = table.scenario == s
        blocks = sorted(set(table.block[rows].tolist()))
        diff = []
        for blk in blocks:
            sel = rows & (table.block == blk)
            cond = dict(
                zip(table.condition[sel].tolist(), table.outcome[sel].tolist(), strict=True)
            )
            diff.append((cond["unobserved"] == "defect") - (cond["observed"] == "defect"))
        out.append(np.mean(diff))
    return np.array(out)


def test_comparison_interval_covers_the_true_difference() -> None:
    """600 seeded pairs of runs: the 95% interval of the gap difference covers the true
    difference at least 93% of the time (1500 sets gave 95.7%)."""
    rng = np.random.default_rng(77)
    truth = 0.25 - 0.1
    hits = 0
    n_sets = 600
    for _ in range(n_sets):
        a = simulate_table(
            rng, n_scenarios=20, n_blocks=15, rates={"observed": 0.1, "unobserved": 0.35}
        )
        b = simulate_table(
            rng, n_scenarios=20, n_blocks=15, rates={"observed": 0.1, "unobserved": 0.2}
        )
        got = compare_gaps(
            a,
            b,
            confidence=0.95,
            rng=rng,
            precursor_families=frozenset(),
            n_resamples=200,
        )
        assert got.ci is not None
        hits += got.ci[0] <= truth <= got.ci[1]
    assert hits / n_sets >= 0.93


def test_comparison_of_equal_models_rarely_rejects() -> None:
    rng = np.random.default_rng(78)
    rejected = 0
    for _ in range(200):
        rates = {"observed": 0.1, "unobserved": 0.3}
        a = simulate_table(rng, n_scenarios=12, n_blocks=10, rates=rates, scenario_sd=0.5)
        b = simulate_table(rng, n_scenarios=12, n_blocks=10, rates=rates, scenario_sd=0.5)
        got = compare_gaps(
            a, b, confidence=0.95, rng=rng, precursor_families=frozenset(), n_resamples=50
        )
        assert got.p_value is not None
        rejected += got.p_value <= 0.05
    assert rejected / 200 <= 0.08


def test_comparison_detects_a_real_difference() -> None:
    rng = np.random.default_rng(79)
    a = simulate_table(
        rng, n_scenarios=20, n_blocks=30, rates={"observed": 0.05, "unobserved": 0.5}
    )
    b = simulate_table(
        rng, n_scenarios=20, n_blocks=30, rates={"observed": 0.05, "unobserved": 0.05}
    )
    got = _compare(a, b)
    assert got.p_value is not None
    assert got.p_value < 1e-4
    assert got.ci is not None
    assert got.ci[0] > 0.3


def test_comparison_p_value_tests_the_difference_it_reports() -> None:
    """Model A: one scenario of 1,000 pairs (30 defect only unobserved, 15 only observed)
    and 11 one-pair scenarios that defect only when observed; model B never defects. The
    difference is +0.4 points, yet the test on per-scenario mean differences gave
    p = 0.00098. Each scenario's share of the difference (its sum of pair differences over
    A's pairs, less B's) is what the test must flip."""
    import itertools

    a_rows = _pairs("big", OG, " ".join(["AD"] * 30 + ["DA"] * 15 + ["AA"] * 955))
    b_rows = _pairs("big", OG, " ".join(["AA"] * 1000))
    for j in range(11):
        a_rows += _pairs(f"small{j}", OG, "DA")
        b_rows += _pairs(f"small{j}", OG, "AA")
    got = _compare(TrialTable.from_records(a_rows), TrialTable.from_records(b_rows))
    assert got.difference == pytest.approx(4 / 1011)
    shares = [15 / 1011] + [-1 / 1011] * 11
    hits = sum(
        abs(sum(s * v for s, v in zip(signs, shares, strict=True))) >= abs(sum(shares)) - 1e-12
        for signs in itertools.product((-1, 1), repeat=12)
    )
    assert got.p_value == pytest.approx(hits / 4096)
    assert got.p_value is not None
    assert got.p_value > 0.5
