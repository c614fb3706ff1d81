"""The oversight gap of one model against another's (or one checkpoint against another).

Both models are run on the same scenarios; only the scenarios in which both have usable
pairs enter. With gap_a and gap_b pooled over each model's pairs there,

- the difference is gap_a − gap_b;
- its interval is the union of a cluster bootstrap that resamples the shared scenarios
  jointly (what the two gaps share through their scenarios cancels) and the MOVER
  combination (Zou & Donner 2008) of the two Newcombe intervals, which treats the models
  as independent samples: as in a single model's pooled finding, the bootstrap carries the
  between-scenario variation and the score intervals keep the bound honest when the
  bootstrap collapses;
- its p-value is a sign-flip test on each scenario's share of that difference,
  sums_a/N_a − sums_b/N_b (sums of pair differences in the scenario, N the pairs of each
  model), which add up to the difference itself, so that the test and the estimate measure
  the same thing. Under the null that the models do not differ these shares are symmetric
  about 0 (whole scenarios swap model labels, so pairs within a scenario need not be
  independent; exactly so when each model has its pairs spread alike over the scenarios).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deceptwatch.stats._binomial import Interval, _check_confidence, newcombe_paired_interval
from deceptwatch.stats._bootstrap import cluster_bootstrap_difference_interval
from deceptwatch.stats._grouping import _group
from deceptwatch.stats._permutation import sign_flip_test
from deceptwatch.stats._table import TrialTable

COMPARE_CI_METHOD = "cluster_bootstrap+mover_newcombe_union"
COMPARE_TEST = "scenario_sign_flip"


@dataclass(frozen=True, slots=True)
class GapComparison:
    """gap_a − gap_b over the scenarios both models have pairs in.

    ``scope`` is ``"all"`` (every non-precursor family) or a family. The estimates are None
    when no scenario has usable pairs for both models.
    """

    scope: str
    n_scenarios: int
    n_pairs_a: int
    n_pairs_b: int
    gap_a: float | None
    gap_b: float | None
    difference: float | None
    ci: tuple[float, float] | None
    ci_method: str
    p_value: float | None
    test: str
    confidence: float


def mover_difference(
    est_a: float, ci_a: Interval, est_b: float, ci_b: Interval
) -> tuple[float, float]:
    """MOVER interval for est_a − est_b from two independent intervals (Zou & Donner 2008)."""
    d = est_a - est_b
    low = d - math.sqrt((est_a - ci_a.low) ** 2 + (ci_b.high - est_b) ** 2)
    high = d + math.sqrt((ci_a.high - est_a) ** 2 + (est_b - ci_b.low) ** 2)
    return low, high


def _pooled_newcombe(cells: npt.NDArray[np.int64], confidence: float) -> Interval:
    n11, n10, n01, n00 = (int(v) for v in cells.sum(axis=0))
    return newcombe_paired_interval(n11, n10, n01, n00, confidence)


def _scenario_cells(
    table: TrialTable, family: str | None, precursor_families: frozenset[str]
) -> dict[str, npt.NDArray[np.int64]]:
    """Paired cells (n11, n10, n01, n00) of each in-scope scenario with usable pairs."""
    if len(table) == 0:
        return {}
    g = _group(table)
    out: dict[str, npt.NDArray[np.int64]] = {}
    for code, name in enumerate(g.scenarios.tolist()):
        fam = str(g.families[g.scenario_family[code]])
        in_scope = fam == family if family is not None else fam not in precursor_families
        if in_scope and g.gap[code].sum() > 0:
            out[str(name)] = g.gap[code]
    return out


def compare_gaps(
    table_a: TrialTable,
    table_b: TrialTable,
    *,
    confidence: float,
    rng: np.random.Generator,
    precursor_families: frozenset[str],
    family: str | None = None,
    n_resamples: int = 2000,
) -> GapComparison:
    """Compare the oversight gap of model A (``table_a``) with model B's. See the module
    docstring for the methods; ``family`` restricts both to one family."""
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    cells_a = _scenario_cells(table_a, family, precursor_families)
    cells_b = _scenario_cells(table_b, family, precursor_families)
    shared = sorted(set(cells_a) & set(cells_b))
    scope = family if family is not None else "all"
    if not shared:
        return GapComparison(
            scope, 0, 0, 0, None, None, None, None, COMPARE_CI_METHOD, None, COMPARE_TEST,
            confidence,
        )  # fmt: skip
    a = np.array([cells_a[s] for s in shared])
    b = np.array([cells_b[s] for s in shared])
    sums_a, counts_a = a[:, 1] - a[:, 2], a.sum(axis=1)
    sums_b, counts_b = b[:, 1] - b[:, 2], b.sum(axis=1)
    gap_a = float(sums_a.sum() / counts_a.sum())
    gap_b = float(sums_b.sum() / counts_b.sum())
    score_a = _pooled_newcombe(a, confidence)
    score_b = _pooled_newcombe(b, confidence)
    mover = mover_difference(gap_a, score_a, gap_b, score_b)
    boot = cluster_bootstrap_difference_interval(
        sums_a, counts_a, sums_b, counts_b, n_resamples=n_resamples, confidence=confidence, rng=rng
    )
    low = max(-2.0, min(mover[0], boot.low))
    high = min(2.0, max(mover[1], boot.high))
    shares = sums_a / counts_a.sum() - sums_b / counts_b.sum()
    return GapComparison(
        scope=scope,
        n_scenarios=len(shared),
        n_pairs_a=int(counts_a.sum()),
        n_pairs_b=int(counts_b.sum()),
        gap_a=gap_a,
        gap_b=gap_b,
        difference=gap_a - gap_b,
        ci=(low, high),
        ci_method=COMPARE_CI_METHOD,
        p_value=sign_flip_test(shares, rng=rng),
        test=COMPARE_TEST,
        confidence=confidence,
    )
