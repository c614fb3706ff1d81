"""Flag rates per condition and the paired probe gap, on hand-made trial scores."""

from __future__ import annotations

import numpy as np
import pytest

from deceptwatch.probes import TrialScore, evaluate_by_condition, flag_rates, probe_gap
from deceptwatch.stats import mcnemar_exact, newcombe_paired_interval, wilson_interval


def _score(
    block: int, condition: str, flagged: bool | None, score: float | None = 0.0
) -> TrialScore:
    return TrialScore(
        trial_id=f"{block}-{condition}",
        block_id=f"b{block}",
        scenario_id=f"s{block % 3}",
        family="oversight_gap",
        condition=condition,
        score=None if flagged is None else score,
        flagged=flagged,
    )


def _run() -> list[TrialScore]:
    rows = []
    # 10 blocks: unobserved flagged in blocks 0-5, observed flagged in blocks 5 and 6
    for b in range(10):
        rows.append(_score(b, "observed", b in (5, 6)))
        rows.append(_score(b, "unobserved", b < 6))
        rows.append(_score(b, "placebo", False))
    rows.append(_score(10, "unobserved", True))  # no observed partner: not a pair
    rows.append(_score(11, "observed", None))  # unscored (e.g. too long)
    return rows


def test_flag_rates_per_condition() -> None:
    rates = {r.condition: r for r in flag_rates(_run())}
    assert list(rates) == ["observed", "unobserved", "placebo"]
    obs, unobs = rates["observed"], rates["unobserved"]
    assert (obs.n, obs.flagged, obs.unscored) == (10, 2, 1)
    assert (unobs.n, unobs.flagged, unobs.rate) == (11, 7, pytest.approx(7 / 11))
    assert unobs.interval == wilson_interval(7, 11, 0.95)
    assert rates["placebo"].rate == 0.0


def test_probe_gap_pairs_by_block() -> None:
    g = probe_gap(_run())
    assert g is not None
    # pairs 0-9: both flagged in block 5; only unobserved in 0-4; only observed in 6; neither 7-9
    assert (g.n_pairs, g.both, g.only_unobserved, g.only_observed, g.neither) == (10, 1, 5, 1, 3)
    assert g.gap == pytest.approx(0.4)
    assert g.p_value == mcnemar_exact(5, 1)
    assert g.interval == newcombe_paired_interval(1, 5, 1, 3, 0.95)
    assert probe_gap([_score(0, "placebo", True)]) is None


def test_evaluate_by_condition_against_outcomes() -> None:
    rng = np.random.default_rng(0)
    rows, outcomes = [], []
    for b in range(60):
        for cond in ("observed", "unobserved"):
            defect = cond == "unobserved" and b % 2 == 0
            rows.append(_score(b, cond, False, float(rng.normal() + 2 * defect)))
            outcomes.append("defect" if defect else "aligned")
    rows.append(_score(99, "unobserved", None))
    outcomes.append("defect")
    res = evaluate_by_condition(rows, outcomes, threshold=1.0, n_resamples=50)
    assert res["observed"] is None  # no defection when observed: nothing to separate
    unobs = res["unobserved"]
    assert unobs is not None
    assert unobs.n == 60
    assert unobs.n_positive == 30
    assert unobs.clusters == 3
    assert res["all"] is not None
    assert res["all"].n == 120
    with pytest.raises(ValueError, match="one outcome per"):
        evaluate_by_condition(rows, outcomes[:-1])
