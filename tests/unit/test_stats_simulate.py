"""The simulated trial tables used by the validation tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from deceptwatch.stats import TrialTable, simulate_table


def test_simulated_table_has_the_asked_shape_rates_and_outcomes() -> None:
    rates = {"observed": 0.1, "unobserved": 0.4, "audit=0.5": 0.0, "placebo": 1.0}
    table = simulate_table(
        np.random.default_rng(0),
        n_scenarios=4,
        n_blocks=2000,
        rates=rates,
        families=("oversight_gap", "honeypot"),
        p_other=0.05,
        p_error=0.02,
    )
    assert len(table) == 4 * 2000 * 4
    assert sorted(set(table.scenario.tolist())) == ["sim/0", "sim/1", "sim/2", "sim/3"]
    fam = dict(zip(table.scenario.tolist(), table.family.tolist(), strict=True))
    assert fam == {"sim/0": "oversight_gap", "sim/1": "honeypot", "sim/2": "oversight_gap",
                   "sim/3": "honeypot"}  # fmt: skip
    assert len(set(table.block.tolist())) == 4 * 2000
    share = {o: float(np.mean(table.outcome == o)) for o in ("other", "error")}
    assert share["other"] == pytest.approx(0.05, abs=0.01)
    assert share["error"] == pytest.approx(0.02, abs=0.01)
    usable = np.isin(table.outcome, ["aligned", "defect"])
    for cond, p in rates.items():
        sel = usable & (table.condition == cond)
        assert float(np.mean(table.outcome[sel] == "defect")) == pytest.approx(p, abs=0.02)


def test_simulation_is_seeded_and_tables_concatenate() -> None:
    kw = {"n_scenarios": 3, "n_blocks": 5, "rates": {"observed": 0.3, "unobserved": 0.6}}
    a = simulate_table(np.random.default_rng(1), scenario_sd=1.0, block_sd=1.0, **kw)  # type: ignore[arg-type]
    b = simulate_table(np.random.default_rng(1), scenario_sd=1.0, block_sd=1.0, **kw)  # type: ignore[arg-type]
    assert np.array_equal(a.outcome, b.outcome)
    both = TrialTable.concat([a, simulate_table(np.random.default_rng(2), prefix="x", **kw)])  # type: ignore[arg-type]
    assert len(both) == 2 * len(a)
    assert len(TrialTable.concat([])) == 0
    with pytest.raises(ValueError, match="probabilities"):
        simulate_table(np.random.default_rng(0), n_scenarios=1, n_blocks=1, rates={"observed": 2.0})
