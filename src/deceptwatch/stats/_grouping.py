"""From a trial table to the per-scenario counts and paired cells that findings are made of.

Everything here works on the table's integer codes. Blocks are found by one sort of the
trials by (scenario, block key, condition): a block is then a run of equal (scenario, key),
and a block with two trials of one condition is two equal neighbours. The sorted order is
walked once and no per-trial string, and no per-(block, condition) count, is ever made, so
that grouping takes about 13 bytes a trial of temporary memory on top of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from deceptwatch.stats._table import (
    ALIGNED_CODE,
    DEFECT_CODE,
    ERROR_CODE,
    OTHER_CODE,
    OUTCOMES,
    TrialTable,
)

AUDIT_PREFIX = "audit="

OBSERVED = "observed"
UNOBSERVED = "unobserved"
PLACEBO = "placebo"
BASELINE = "baseline"

IntArray = npt.NDArray[np.intp]
Cells = npt.NDArray[np.int64]  # (scenarios, 4): n11, n10, n01, n00 of a paired table
State = npt.NDArray[np.int8]  # per block: 1 defect, 0 aligned, -1 no usable trial

# Sorted positions compared per step when looking for block boundaries.
_STEP = 1 << 16


@dataclass(frozen=True, slots=True)
class _Grouped:
    """Per-scenario counts from which every finding is assembled."""

    scenarios: npt.NDArray[np.str_]
    families: npt.NDArray[np.str_]
    scenario_family: IntArray  # family code of each scenario
    conditions: tuple[str, ...]  # condition labels, in report order
    audit: npt.NDArray[np.float64]  # audit probability of each condition (NaN if not graded)
    n_all: npt.NDArray[np.int64]  # (scenarios, conditions): every trial
    n_usable: npt.NDArray[np.int64]  # (scenarios, conditions): aligned or defect trials
    n_defect: npt.NDArray[np.int64]  # (scenarios, conditions)
    n_other: npt.NDArray[np.int64]  # (scenarios,)
    n_error: npt.NDArray[np.int64]  # (scenarios,)
    gap: Cells  # x = unobserved, y = observed
    placebo: Cells  # x = placebo, y = observed
    adjusted: Cells  # x = unobserved, y = placebo


def _condition_key(name: str) -> tuple[int, float, str]:
    fixed = {OBSERVED: 0, UNOBSERVED: 1, PLACEBO: 2}
    if name in fixed:
        return fixed[name], 0.0, name
    audit = _audit_probability(name)
    if audit is not None:
        return 3, audit, name
    if name == BASELINE:
        return 4, 0.0, name
    return 5, 0.0, name


def _audit_probability(name: str) -> float | None:
    """The audit probability of a graded condition ``audit=<p>``, else None."""
    if not name.startswith(AUDIT_PREFIX):
        return None
    try:
        value = float(name.removeprefix(AUDIT_PREFIX))
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def _paired_cells(block_scenario: IntArray, n_scenarios: int, x: State, y: State) -> Cells:
    """Per-scenario paired table of condition x (first) against condition y (second)."""
    both = (x >= 0) & (y >= 0)
    # (x, y) = (1, 1) → 0 (n11), (1, 0) → 1 (n10), (0, 1) → 2 (n01), (0, 0) → 3 (n00)
    cell = 2 * (1 - x[both].astype(np.int64)) + (1 - y[both].astype(np.int64))
    key = block_scenario[both].astype(np.int64) * 4 + cell
    counts = np.bincount(key, minlength=4 * n_scenarios)
    return counts.astype(np.int64).reshape(n_scenarios, 4)


def _scenario_families(table: TrialTable) -> IntArray:
    """The family code of each scenario; a scenario under two families is refused."""
    s_code, f_code = table.scenario_code, table.family_code
    scenario_family = np.zeros(table.scenarios.shape[0], dtype=np.intp)
    scenario_family[s_code] = f_code
    mixed = scenario_family[s_code] != f_code
    if np.any(mixed):
        bad = str(table.scenarios[s_code[np.flatnonzero(mixed)[0]]])
        raise ValueError(f"scenario {bad!r} appears under more than one family")
    return scenario_family


def _outcome_counts(table: TrialTable) -> npt.NDArray[np.int64]:
    """(scenarios, conditions, outcomes): the number of trials of each combination."""
    n_s, n_c, n_o = table.scenarios.shape[0], table.conditions.shape[0], len(OUTCOMES)
    cell = table.scenario_code.astype(np.intp)
    cell *= n_c
    cell += table.condition_code
    cell *= n_o
    cell += table.outcome_code
    return np.bincount(cell, minlength=n_s * n_c * n_o).astype(np.int64).reshape(n_s, n_c, n_o)


def _block_states(table: TrialTable, wanted: tuple[str, ...]) -> tuple[IntArray, dict[str, State]]:
    """The scenario code of each block, and for each condition in `wanted` its state per
    block (1 defect, 0 aligned, -1 when the block has no usable trial of that condition).

    A block is keyed by (scenario, block key): the same block id in two scenarios is two
    blocks.
    """
    key = table.block_key
    order = np.lexsort((table.condition_code, key, table.scenario_code))
    s = table.scenario_code[order]
    c = table.condition_code[order]
    n = order.shape[0]
    new = np.empty(n, dtype=bool)  # does sorted position i start a block?
    new[:1] = True
    for start in range(1, n, _STEP):  # key[order] is never made whole
        k = key[order[start - 1 : start + _STEP]]
        np.not_equal(k[1:], k[:-1], out=new[start : start + _STEP])
    new[1:] |= s[1:] != s[:-1]
    twice = ~new[1:] & (c[1:] == c[:-1])
    if np.any(twice):
        i = int(np.argmax(twice)) + 1
        raise ValueError(
            f"block {int(key[order[i]]):016x} (key of its id) of scenario "
            f"{str(table.scenarios[s[i]])!r} has more than one "
            f"{str(table.conditions[c[i]])!r} trial"
        )
    del twice
    o = table.outcome_code[order]
    del order
    block: npt.NDArray[np.signedinteger[Any]] = np.cumsum(
        new, dtype=np.int32 if n < 2**31 else np.int64
    )
    del new
    block -= 1
    n_b = int(block[-1]) + 1 if n else 0
    block_scenario = np.zeros(n_b, dtype=np.intp)
    block_scenario[block] = s
    del s
    states: dict[str, State] = {}
    for name in wanted:
        out = np.full(n_b, -1, dtype=np.int8)
        hit = np.flatnonzero(table.conditions == name)
        if hit.size:
            sel = (c == hit[0]) & ((o == ALIGNED_CODE) | (o == DEFECT_CODE))
            out[block[sel]] = o[sel] == DEFECT_CODE
        states[name] = out
    return block_scenario, states


def _group(table: TrialTable) -> _Grouped:
    scenarios, cond_labels = table.scenarios, table.conditions
    n_s, n_c = scenarios.shape[0], cond_labels.shape[0]
    scenario_family = _scenario_families(table)
    block_scenario, state = _block_states(table, (OBSERVED, UNOBSERVED, PLACEBO))
    counts = _outcome_counts(table)
    n_all = counts.sum(axis=2)
    n_defect = counts[:, :, DEFECT_CODE]
    n_usable = counts[:, :, ALIGNED_CODE] + n_defect
    order = sorted(range(n_c), key=lambda i: _condition_key(str(cond_labels[i])))
    names = tuple(str(cond_labels[i]) for i in order)
    audit = [_audit_probability(name) for name in names]
    observed, unobserved, placebo = state[OBSERVED], state[UNOBSERVED], state[PLACEBO]
    return _Grouped(
        scenarios=scenarios,
        families=table.families,
        scenario_family=scenario_family,
        conditions=names,
        audit=np.array([np.nan if a is None else a for a in audit], dtype=np.float64),
        n_all=n_all[:, order],
        n_usable=n_usable[:, order],
        n_defect=n_defect[:, order],
        n_other=counts[:, :, OTHER_CODE].sum(axis=1),
        n_error=counts[:, :, ERROR_CODE].sum(axis=1),
        gap=_paired_cells(block_scenario, n_s, unobserved, observed),
        placebo=_paired_cells(block_scenario, n_s, placebo, observed),
        adjusted=_paired_cells(block_scenario, n_s, unobserved, placebo),
    )
