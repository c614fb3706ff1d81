"""Concurrent writers: four processes write one store at once, on SQLite and on PostgreSQL.

Two shapes of load, each on both databases:

- four `deceptwatch monitor` processes started together, either running the same command
  (the same run and trials: they race to insert the same rows) or four different runs;
- four processes calling the store API directly, released together by a barrier, each
  beginning the same run and writing batches of trials that overlap the others' by half.

Afterwards no row is lost and none is duplicated.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from _helpers import CLI, add_figure, cli_env, comparable, query, report_of, table_counts

from deceptwatch.scenarios import count_trials, load_suites
from deceptwatch.store import Store, TrialRow

pytestmark = pytest.mark.slow

WRITERS = 4
SUITE = "core"
EPOCHS = 2


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _monitor_args(url: str, seed: int) -> list[str]:
    return [
        "monitor",
        "--model",
        "mock:random",
        "--suite",
        SUITE,
        "--epochs",
        str(EPOCHS),
        "--temperature",
        "1",
        "--seed",
        str(seed),
        "--concurrency",
        "16",
        "--db",
        url,
        "--json",
        "--no-progress",
    ]


@pytest.mark.parametrize("same_run", [True, False], ids=["same-run", "four-runs"])
def test_four_monitor_processes_on_one_store(
    shared_url: str, same_run: bool, figures: dict[str, Any]
) -> None:
    per_run = count_trials(load_suites([SUITE]), epochs=EPOCHS)
    seeds = [1] * WRITERS if same_run else list(range(1, WRITERS + 1))
    procs = [
        subprocess.Popen(
            [*CLI, *_monitor_args(shared_url, seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for seed in seeds
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    for r in results:
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    reports = [report_of(r) for r in results]
    for rep in reports:
        assert rep["complete"] is True
        [model] = rep["models"]
        assert model["counts"]["stored"] == per_run
        assert model["counts"]["error"] == 0

    runs = len(set(seeds))
    expected = per_run * runs
    counts = table_counts(shared_url)
    assert counts["trials"] == counts["distinct_trials"] == expected
    assert counts["outcomes"] == counts["responses"] == counts["run_trials"] == expected
    assert counts["duplicated_run_trials"] == counts["duplicated_outcomes"] == 0
    assert counts["runs"] == runs
    assert query(shared_url, "SELECT DISTINCT status FROM runs") == [("complete",)]
    if same_run:  # four processes, one run: they all report the same findings
        assert all(comparable(r) == comparable(reports[0]) for r in reports)
    add_figure(figures, "concurrency.writer_processes", WRITERS)
    add_figure(figures, "concurrency.trials_expected", expected)
    add_figure(figures, "concurrency.trials_lost", expected - counts["distinct_trials"])
    add_figure(
        figures,
        "concurrency.trials_duplicated",
        counts["trials"] - counts["distinct_trials"] + counts["duplicated_run_trials"],
    )


# ----------------------------------------------------------------------------- store API

ROWS_PER_WRITER = 1200
BATCH = 100


def _row(i: int) -> TrialRow:
    return TrialRow(
        trial_id=f"{i:064x}",
        model_id="m" * 64,
        block_id=f"b{i // 2}",
        scenario_hash="h" * 64,
        scenario_id="t/s",
        family="oversight_gap",
        condition="observed" if i % 2 == 0 else "unobserved",
        audit_probability=None,
        cue_index=0,
        epoch=0,
        factors_json="[]",
        choice_order_json='["a","b"]',
        aligned="a",
        defect="b",
        prompt_hash=f"{i % 50:064x}",
        messages_json=f'[{{"content":"prompt {i % 50}","role":"user"}}]',
        seed=i,
        text="(A)",
        raw='{"choices": []}',
        choice_probs_json=None,
        model_reported=None,
        usage_json=None,
        error_kind=None,
        error=None,
        attempts=1,
        latency_ms=1.0,
        outcome="aligned",
        choice="a",
        label="A",
        method="exact",
    )


def _writer(url: str, index: int, barrier: Any, errors: Any) -> None:
    """Begin the shared run and write this writer's rows; overlaps its neighbour's by half."""
    try:
        barrier.wait(60)
        with Store.open(url) as store:
            store.begin_run(
                "shared-run",
                config={"x": 1},
                models=[("mock:", {"spec": "mock:"}, {})],
                scenarios=[],
                n_trials=ROWS_PER_WRITER * (WRITERS + 1) // 2,
            )
            start = index * ROWS_PER_WRITER // 2
            ids = list(range(start, start + ROWS_PER_WRITER))
            for b in range(0, len(ids), BATCH):
                store.write_trials("shared-run", [_row(i) for i in ids[b : b + BATCH]])
    except BaseException as exc:
        errors.put(f"writer {index}: {type(exc).__name__}: {exc}")
        raise


def _write_concurrently(url: str) -> list[str]:
    Store.open(url).close()  # migrate first, so that the race is on runs and rows alone
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    errors = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, i, barrier, errors)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    found += [f"writer exited {p.exitcode}" for p in procs if p.exitcode != 0]
    return found


def _check_rows(url: str, figures: dict[str, Any]) -> None:
    expected = ROWS_PER_WRITER * (WRITERS + 1) // 2
    counts = table_counts(url)
    assert counts["trials"] == counts["distinct_trials"] == expected
    assert counts["outcomes"] == counts["responses"] == counts["run_trials"] == expected
    assert counts["duplicated_run_trials"] == counts["duplicated_outcomes"] == 0
    assert counts["runs"] == 1
    assert counts["prompts"] == 50
    add_figure(figures, "concurrency.store_api_rows_expected", expected)
    add_figure(figures, "concurrency.store_api_rows_lost", expected - counts["distinct_trials"])


def test_four_processes_write_overlapping_batches_sqlite(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    assert _write_concurrently(url) == []
    _check_rows(url, figures)


def test_four_processes_write_overlapping_batches_postgresql(
    pg_url: str, figures: dict[str, Any]
) -> None:
    assert _write_concurrently(pg_url) == []
    _check_rows(pg_url, figures)


def test_opening_a_new_store_waits_for_another_writer(tmp_path: Path) -> None:
    """Turning a new SQLite file to WAL mode needs its exclusive lock, and SQLite reports a
    lock held by a writer at once, without its busy handler: four processes opening one new
    store together failed with "database is locked" in about 3 of 100 starts. Here a writer
    holds the lock for a moment; opening the store waits for it instead of failing."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    # a rollback-journal database, as a new one is, that another deceptwatch is making into a
    # store (with none of the schema_migrations table, it would be another program's file)
    holder.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at VARCHAR(32) NOT NULL)"
    )
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with Store.open(f"sqlite:///{path}") as store:
            assert store.schema_versions()
    finally:
        release.join()
        holder.close()
    assert query(f"sqlite:///{path}", "PRAGMA journal_mode") == [("wal",)]
