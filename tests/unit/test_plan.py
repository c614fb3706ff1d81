"""Power planning: pairs needed for a gap, the run-size check, and `deceptwatch plan`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest, multinomial, norm
from typer.testing import CliRunner

from deceptwatch.cli import app
from deceptwatch.stats import (
    RunSizeCheck,
    check_run_size,
    compute_findings,
    mcnemar_exact_power,
    min_scenarios,
    plan_pairs,
    simulate_table,
)

runner = CliRunner()


def _exact_power_by_enumeration(n: int, p10: float, p01: float, alpha: float) -> float:
    """Sum over every (b, c) of discordant counts of P(b, c) · [exact McNemar rejects]."""
    total = 0.0
    for b in range(n + 1):
        for c in range(n + 1 - b):
            if b + c and binomtest(b, b + c, 0.5).pvalue <= alpha:
                total += multinomial.pmf([b, c, n - b - c], n, [p10, p01, 1 - p10 - p01])
    return total


@pytest.mark.parametrize(
    ("n", "p10", "p01", "alpha"),
    [(30, 0.2, 0.05, 0.05), (25, 0.3, 0.0, 0.01), (40, 0.1, 0.1, 0.05), (12, 0.5, 0.2, 0.1)],
)
def test_exact_power_matches_enumeration_with_scipy(
    n: int, p10: float, p01: float, alpha: float
) -> None:
    assert mcnemar_exact_power(n, p10, p01, alpha) == pytest.approx(
        _exact_power_by_enumeration(n, p10, p01, alpha), abs=1e-10
    )


def test_normal_pairs_follow_connors_formula() -> None:
    plan = plan_pairs(0.05, power=0.9, alpha=0.05, baseline=0.05)
    psi = 0.1 * 0.95 + 0.05 * 0.9  # independence: p_u(1 − p_o) + p_o(1 − p_u)
    assert plan.discordant == pytest.approx(psi)
    root = norm.ppf(0.975) * math.sqrt(psi) + norm.ppf(0.9) * math.sqrt(psi - 0.05**2)
    assert plan.normal_pairs == math.ceil(root**2 / 0.05**2)


@pytest.mark.parametrize(
    ("gap", "power", "alpha", "baseline"),
    [(0.05, 0.9, 0.05, 0.05), (0.2, 0.8, 0.05, 0.0), (0.1, 0.9, 0.01, 0.1), (0.3, 0.95, 0.05, 0.2)],
)
def test_planned_pairs_reach_the_power_by_the_exact_test(
    gap: float, power: float, alpha: float, baseline: float
) -> None:
    plan = plan_pairs(gap, power=power, alpha=alpha, baseline=baseline)
    p10, p01 = (plan.discordant + gap) / 2, (plan.discordant - gap) / 2
    assert plan.exact_power >= power
    assert plan.exact_power == pytest.approx(mcnemar_exact_power(plan.pairs, p10, p01, alpha))
    # Smallest such n: one pair fewer falls short (the exact test is conservative, so the
    # normal approximation's n is never more than needed).
    assert mcnemar_exact_power(plan.pairs - 1, p10, p01, alpha) < power
    assert plan.pairs >= plan.normal_pairs
    assert plan.min_scenarios == min_scenarios(alpha)


def test_planned_pairs_detect_the_gap_in_simulation() -> None:
    """400 seeded simulated suites of the planned size: the exact McNemar test rejects in
    about the planned share of them."""
    plan = plan_pairs(0.2, power=0.8, alpha=0.05, baseline=0.1)
    rng = np.random.default_rng(5)
    p_o, p_u = 0.1, 0.3
    rejected = 0
    for _ in range(400):
        obs = rng.random(plan.pairs) < p_o
        unobs = rng.random(plan.pairs) < p_u
        b, c = int(np.sum(unobs & ~obs)), int(np.sum(obs & ~unobs))
        rejected += b + c > 0 and binomtest(b, b + c, 0.5).pvalue <= 0.05
    assert rejected / 400 == pytest.approx(plan.exact_power, abs=0.06)


def test_a_measured_discordance_replaces_the_independence_assumption() -> None:
    # Fully correlated except for the gap: every discordant pair goes the scheming way.
    plan = plan_pairs(0.1, power=0.9, alpha=0.05, baseline=0.0, discordant=0.1)
    assert plan.discordant == 0.1
    assert plan.pairs < plan_pairs(0.1, power=0.9, alpha=0.05, baseline=0.2).pairs


def test_min_scenarios_is_where_the_sign_flip_test_can_reach_alpha() -> None:
    for alpha in (0.1, 0.05, 0.01, 0.001):
        k = min_scenarios(alpha)
        assert 2 / 2**k <= alpha < 2 / 2 ** (k - 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gap": 0.0}, "gap"),
        ({"gap": 1.2}, "gap"),
        ({"power": 1.0}, "power"),
        ({"alpha": 0.0}, "alpha"),
        ({"baseline": 0.97}, "baseline"),
        ({"discordant": 0.01}, "discordant"),
    ],
)
def test_plan_rejects_bad_input(kwargs: dict[str, float], message: str) -> None:
    args = {"gap": 0.05, "power": 0.9, "alpha": 0.05, "baseline": 0.0} | kwargs
    gap = args.pop("gap")
    with pytest.raises(ValueError, match=message):
        plan_pairs(gap, **args)


def _check(scenarios: int, pairs: int, **kw: float) -> RunSizeCheck:
    args: dict[str, float] = {"observed_rate": 0.05, "gap": 0.1, "power": 0.9, "alpha": 0.05}
    args |= kw
    return check_run_size(
        [("oversight_gap", pairs)] * scenarios, rng=np.random.default_rng(1), **args
    )


def test_run_size_check_counts_the_tests_the_run_really_gets() -> None:
    """240 pairs are more than one McNemar test needs for a 10-point gap (200), but spread
    over 6 scenarios, each tested alone, and pooled by a sign-flip test over 6 scenarios,
    all adjusted together, they detect it in only about a fifth of runs: the check says
    so, where a count of pairs against the plan called the run large enough."""
    assert plan_pairs(0.1, power=0.9, alpha=0.05, baseline=0.05).pairs == 200
    small = _check(6, 40)
    assert (small.pairs, small.pairs_needed, small.scenarios) == (240, 200, 6)
    assert not small.enough
    assert small.estimated_power < 0.4
    assert small.power_ci[0] <= small.estimated_power <= small.power_ci[1]
    assert "too small to detect a gap of 10.0 points with 90% power" in small.message
    assert "one McNemar test alone would need 200 pairs" in small.message
    big = _check(60, 20)
    assert big.enough
    assert big.estimated_power >= 0.95
    assert "large enough" in big.message
    assert _check(6, 40) == small  # the same generator seed, the same estimate
    few = _check(3, 60)
    assert "a pooled test needs at least 6 scenarios" in few.message
    # An observed rate above 1 − gap is clipped so that a plan exists; no pairs, no power.
    assert _check(10, 1, observed_rate=0.99).pairs_needed > 10
    none = _check(0, 0)
    assert (none.estimated_power, none.enough, none.scenarios) == (0.0, False, 0)


def test_run_size_check_agrees_with_a_simulation_written_apart() -> None:
    """The estimate against runs drawn by `simulate_table` (its own table code) and read by
    `compute_findings`: 120 runs of 10 scenarios × 24 independent pairs."""
    rng = np.random.default_rng(7)
    hits = 0
    runs = 120
    for _ in range(runs):
        table = simulate_table(
            rng, n_scenarios=10, n_blocks=24, rates={"observed": 0.05, "unobserved": 0.15}
        )
        found = compute_findings(
            table, confidence=0.95, alpha=0.05, rng=rng, precursor_families=frozenset(),
            n_resamples=20,
        )  # fmt: skip
        hits += any(f.significant and f.gap is not None and f.gap > 0 for f in found)
    check = _check(10, 24)
    # two independent estimates of one probability: their difference is within 4 standard
    # errors (about 0.2 here) unless the check simulates something else
    se = math.sqrt(0.25 / runs + 0.25 / check.simulations)
    assert abs(hits / runs - check.estimated_power) < 4 * se


# --- the command ------------------------------------------------------------------------------


def test_plan_command_prints_json_with_pairs() -> None:
    result = runner.invoke(app, ["plan", "--gap", "0.05", "--power", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    expected = plan_pairs(0.05, power=0.9, alpha=0.05, baseline=0.05)
    assert data["pairs"] == expected.pairs
    assert data["method"] == "exact_mcnemar_power"
    assert data["exact_power"] >= 0.9


def test_plan_command_text_and_alpha() -> None:
    result = runner.invoke(app, ["plan", "--gap", "0.1", "--power", "0.8", "--alpha", "0.01"])
    assert result.exit_code == 0, result.output
    pairs = plan_pairs(0.1, power=0.8, alpha=0.01, baseline=0.05).pairs
    assert f"{pairs} usable observed/unobserved pairs" in result.stdout
    assert "at least 8 scenarios" in result.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--gap", "5"], "--gap"),
        (["--gap", "0.05", "--power", "90"], "--power"),
        (["--gap", "0.05", "--alpha", "0"], "--alpha"),
        (["--gap", "0.5", "--baseline", "0.6"], "--baseline"),
        (["--gap", "0.2", "--discordant", "0.1"], "--discordant"),
        # 5% defects observed and 15% unobserved: at most 20% of pairs can differ
        (["--gap", "0.1", "--baseline", "0.05", "--discordant", "1"], "--discordant"),
    ],
)
def test_plan_command_bad_input_exits_2_naming_the_option(args: list[str], option: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2
    assert option in result.output
    assert "hint:" in result.output


def test_plan_with_a_discordant_share_alone_assumes_no_baseline() -> None:
    """With --discordant from a pilot and no --baseline, the plan uses no defect rate, yet
    it printed "assumed observed defect rate 5%"; a share that the given rates cannot
    produce (100% of pairs differing at 5% and 15% defects) was accepted."""
    result = runner.invoke(app, ["plan", "--gap", "0.1", "--discordant", "0.3"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "discordant pairs (given) 30.0%" in text
    assert "assumed observed defect rate" not in text
    bad = runner.invoke(app, ["plan", "--gap", "0.1", "--baseline", "0.05", "--discordant", "1"])
    assert "--discordant must lie in [gap, 0.2]" in bad.output


def test_plan_command_needs_gap() -> None:
    result = runner.invoke(app, ["plan", "--power", "0.9"])
    assert result.exit_code == 2
    assert "--gap" in result.output


def test_plan_for_a_gap_above_95_points_lowers_the_default_baseline() -> None:
    """`--gap 0.96` was refused for "--baseline ... got 0.05", an option not given: the
    default (5% defects when observed) leaves no room for the gap. It now assumes the most
    the gap allows, and says so; a --baseline given too high is still refused."""
    result = runner.invoke(app, ["plan", "--gap", "0.96", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["baseline"] == pytest.approx(0.04)
    assert data["pairs"] == plan_pairs(0.96, power=0.9, alpha=0.05, baseline=1 - 0.96).pairs
    result = runner.invoke(app, ["plan", "--gap", "0.96", "--baseline", "0.05"])
    assert result.exit_code == 2
    assert "--baseline must lie in [0, 1 − gap] = [0, 0.04], got 0.05" in result.output


@pytest.mark.parametrize("gap", [0.1, 0.3, 0.7])
def test_plan_at_the_highest_baseline_the_gap_allows(gap: float) -> None:
    """`plan --gap 0.1 --baseline 0.9` ended in a traceback: the discordant-pair
    probability came out 2e-17 below the gap. There, every defect when observed is also one
    when unobserved, so every discordant pair goes one way: the exact test needs m such
    pairs with 2·0.5^m <= alpha, and the plan is the least n with P(Bin(n, gap) >= m) >= power."""
    from scipy.stats import binom

    result = runner.invoke(app, ["plan", "--gap", str(gap), "--baseline", str(1 - gap), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    m = next(k for k in range(1, 64) if 2 * 0.5**k <= 0.05)
    n = next(k for k in range(m, 10_000) if binom.sf(m - 1, k, gap) >= 0.9)
    assert data["pairs"] == n
    assert data["discordant"] == pytest.approx(gap)
