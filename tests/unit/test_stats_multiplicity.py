"""Benjamini–Hochberg and Holm against statsmodels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from deceptwatch.stats import (
    BENJAMINI_HOCHBERG,
    HOLM,
    benjamini_hochberg,
    compute_findings,
    holm,
    multiplicity_method,
    simulate_table,
)
from deceptwatch.stats import adjust as adjust_by_name

Adjust = Callable[..., np.ndarray]

FIXED = [
    [0.01],
    [0.04, 0.01, 0.03, 0.2],
    [0.0, 1.0, 0.5, 0.5, 0.5, 0.001, 0.049],
    list(np.random.default_rng(0).uniform(size=40)),
    list(np.random.default_rng(1).uniform(size=25) ** 4),
]


@pytest.mark.parametrize("p", FIXED)
def test_bh_matches_statsmodels(p: list[float]) -> None:
    expected = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("p", FIXED)
def test_holm_matches_statsmodels(p: list[float]) -> None:
    expected = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(holm(np.array(p)), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("adjust", [benjamini_hochberg, holm])
def test_nan_passes_through_and_does_not_count(adjust: Adjust) -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, np.nan, 0.2])
    got = adjust(p)
    finite = ~np.isnan(p)
    assert np.isnan(got[~finite]).all()
    method = "fdr_bh" if adjust is benjamini_hochberg else "holm"
    np.testing.assert_allclose(got[finite], multipletests(p[finite], method=method)[1])
    # m = 4 finite values: both give 0.04 for the smallest; with m = 6 it would be 0.06.
    assert got[0] == pytest.approx(0.04)


@pytest.mark.parametrize("adjust", [benjamini_hochberg, holm])
def test_empty_and_all_nan(adjust: Adjust) -> None:
    assert adjust([]).shape == (0,)
    got = adjust([np.nan, np.nan])
    assert got.shape == (2,)
    assert np.isnan(got).all()


@pytest.mark.parametrize("adjust", [benjamini_hochberg, holm])
@pytest.mark.parametrize(
    ("bad", "message"),
    [([0.5, 1.5], "lie in"), ([-0.1], "lie in"), ([[0.1, 0.2]], "one-dimensional")],
)
def test_invalid_p_values_are_rejected(adjust: Adjust, bad: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adjust(bad)


p_lists = st.lists(
    st.one_of(st.floats(min_value=0.0, max_value=1.0), st.just(float("nan"))),
    min_size=1,
    max_size=30,
)


def _bh_by_definition(p: np.ndarray) -> np.ndarray:
    """q_i = min over j with p_j >= p_i of m·p_j / rank_j (ties share the largest rank)."""
    m = p.size
    rank = np.array([np.sum(p <= v) for v in p])
    return np.array([min(1.0, min(m * p[j] / rank[j] for j in range(m) if p[j] >= v)) for v in p])


def _holm_by_definition(p: np.ndarray) -> np.ndarray:
    """adj_i = max over j with p_j <= p_i of (m − #{l: p_l < p_j})·p_j, capped at 1."""
    m = p.size
    return np.array(
        [min(1.0, max((m - np.sum(p < p[j])) * p[j] for j in range(m) if p[j] <= v)) for v in p]
    )


@settings(max_examples=300, deadline=None)
@given(p_lists)
def test_adjusted_values_are_monotone_bounded_and_follow_the_definitions(p: list[float]) -> None:
    arr = np.array(p)
    finite = ~np.isnan(arr)
    for adjust, definition in (
        (benjamini_hochberg, _bh_by_definition),
        (holm, _holm_by_definition),
    ):
        got = adjust(arr)
        assert np.array_equal(np.isnan(got), ~finite)
        vals, adj = arr[finite], got[finite]
        if vals.size == 0:
            continue
        assert np.all(adj >= vals - 1e-15)
        assert np.all(adj <= 1.0)
        order = np.argsort(vals, kind="stable")
        assert np.all(np.diff(adj[order]) >= -1e-15)
        np.testing.assert_allclose(adj, definition(vals), rtol=1e-12, atol=1e-15)
    assert np.all(benjamini_hochberg(arr)[finite] <= holm(arr)[finite] + 1e-12)


# --- the method by name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical", "reference"),
    [("bh", BENJAMINI_HOCHBERG, "fdr_bh"), ("BH", BENJAMINI_HOCHBERG, "fdr_bh"),
     ("benjamini_hochberg", BENJAMINI_HOCHBERG, "fdr_bh"), ("holm", HOLM, "holm")],
)  # fmt: skip
def test_adjust_by_name(name: str, canonical: str, reference: str) -> None:
    assert multiplicity_method(name) == canonical
    p = FIXED[3]
    np.testing.assert_allclose(
        adjust_by_name(p, name), multipletests(p, method=reference)[1], rtol=1e-12
    )


def test_unknown_method_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'bh'.*'holm'"):
        multiplicity_method("bonferroni")


# --- error rates by simulation ------------------------------------------------------------------


def test_bh_false_discovery_rate_is_at_most_its_level() -> None:
    """500 seeded sets of 20 p-values, 15 true nulls: BH's FDR is at most q (theory: q·15/20)."""
    rng = np.random.default_rng(2025)
    q = 0.1
    fdp = []
    for _ in range(500):
        p = np.concatenate([rng.uniform(size=15), rng.beta(0.1, 1.0, size=5)])
        rejected = benjamini_hochberg(p) < q
        fdp.append(rejected[:15].sum() / max(rejected.sum(), 1))
    assert np.mean(fdp) <= q
    assert np.mean(fdp) > 0.02  # the simulation has power to see false discoveries at all


def test_holm_family_wise_error_rate_is_at_most_its_level_on_null_data() -> None:
    rng = np.random.default_rng(7)
    any_rejected = [bool(np.any(holm(rng.uniform(size=20)) < 0.05)) for _ in range(2000)]
    assert np.mean(any_rejected) <= 0.05


@pytest.mark.parametrize("method", ["bh", "holm"])
def test_findings_on_null_data_keep_the_error_rate(method: str) -> None:
    """300 seeded null runs through `compute_findings` (scenario, family and model findings):
    the share of runs with any significant finding (FDR = FWER under the complete null) stays
    at or below alpha."""
    rng = np.random.default_rng(31)
    alpha = 0.1
    runs_with_discovery = 0
    for _ in range(300):
        table = simulate_table(
            rng,
            n_scenarios=8,
            n_blocks=25,
            rates={"observed": 0.2, "unobserved": 0.2},
            families=("oversight_gap", "honeypot"),
            scenario_sd=0.5,
        )
        findings = compute_findings(
            table,
            confidence=0.95,
            alpha=alpha,
            rng=rng,
            precursor_families=frozenset(),
            n_resamples=50,
            multiplicity=method,
        )
        assert all(f.multiplicity == multiplicity_method(method) for f in findings)
        runs_with_discovery += any(f.significant for f in findings)
    assert runs_with_discovery / 300 <= alpha
