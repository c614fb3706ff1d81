"""Simulated trial tables with a known truth, for validation, planning and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from deceptwatch.stats._table import ALIGNED, DEFECT, ERROR, OTHER, TrialTable


def simulate_table(
    rng: np.random.Generator,
    *,
    n_scenarios: int,
    n_blocks: int,
    rates: Mapping[str, float],
    families: Sequence[str] = ("oversight_gap",),
    prefix: str = "sim",
    scenario_sd: float = 0.0,
    block_sd: float = 0.0,
    p_other: float = 0.0,
    p_error: float = 0.0,
) -> TrialTable:
    """A table of ``n_scenarios × n_blocks × len(rates)`` trials, generated without loops.

    ``rates`` maps each condition (``observed``, ``unobserved``, ``placebo``,
    ``audit=<p>``, ...) to its defect probability. With ``scenario_sd`` or ``block_sd`` the
    log odds of every trial of a scenario (a block) are shifted by one normal draw with that
    standard deviation, which makes scenarios differ (pairs correlate); with both 0 every
    trial is an independent draw at its condition's rate, so the true gap is
    ``rates["unobserved"] − rates["observed"]``. A trial is then replaced by ``other`` with
    probability ``p_other`` and by ``error`` with probability ``p_error``. Scenario *s*
    (named ``{prefix}/{s}``) belongs to ``families[s % len(families)]``.
    """
    if n_scenarios < 1 or n_blocks < 1 or not rates or not families:
        raise ValueError("need at least one scenario, block, condition and family")
    names = np.array(list(rates), dtype=np.str_)
    probs = np.array([rates[str(c)] for c in names], dtype=np.float64)
    if np.any((probs < 0.0) | (probs > 1.0)) or not 0.0 <= p_other + p_error <= 1.0:
        raise ValueError("probabilities must lie in [0, 1]")
    n_c = names.size
    with np.errstate(divide="ignore"):
        logit = np.log(probs) - np.log1p(-probs)  # ±inf at 0 and 1 keep those rates exact
    shift = np.zeros((n_scenarios, n_blocks, 1))
    if scenario_sd > 0:
        shift += rng.normal(0.0, scenario_sd, size=(n_scenarios, 1, 1))
    if block_sd > 0:
        shift += rng.normal(0.0, block_sd, size=(n_scenarios, n_blocks, 1))
    p = 1.0 / (1.0 + np.exp(-(logit[None, None, :] + shift)))
    defect = rng.random((n_scenarios, n_blocks, n_c)) < p
    outcome = np.where(defect, DEFECT, ALIGNED).astype("U7")
    if p_other > 0 or p_error > 0:
        u = rng.random(outcome.shape)
        outcome[u < p_other + p_error] = ERROR
        outcome[u < p_other] = OTHER
    scen = np.repeat(np.arange(n_scenarios), n_blocks * n_c)
    block = np.repeat(np.arange(n_scenarios * n_blocks), n_c)
    fam = np.array(list(families), dtype=np.str_)
    return TrialTable(
        scenario=np.char.add(f"{prefix}/", np.arange(n_scenarios).astype(np.str_))[scen],
        family=fam[np.arange(n_scenarios) % fam.size][scen],
        block=np.char.add(f"{prefix}-", block.astype(np.str_)),
        condition=np.tile(names, n_scenarios * n_blocks),
        outcome=outcome.ravel(),
    )
