"""PostgreSQL plans the reads of a run that was just written as a whole, not row by row.

Without statistics the planner takes a fresh run's rows for a handful, and joins the trials
to the run in a nested loop that compares every row with every other (2.8 s for 10,080
trials here, growing with the square of the run; see `deceptwatch.store._planner`).
Autovacuum is switched off on the trial tables in these tests, so that only the store can
have gathered statistics.
"""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import Engine, create_engine
from test_store import _begin, _row

from deceptwatch.store import Store
from deceptwatch.store._planner import ANALYZE_AFTER, TRIAL_TABLES
from deceptwatch.store._store import outcomes_query

MODEL = "m" * 64


def _without_autovacuum(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in TRIAL_TABLES:
            conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")


def _analyzed(engine: Engine) -> set[str]:
    """The trial tables that have planner statistics."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = current_schema()"
        )
        return {r[0] for r in rows} & set(TRIAL_TABLES)


def _write(store: Store, n: int, start: int = 0) -> None:
    store.write_trials("r1", [_row(i, "defect" if i % 3 else "aligned") for i in range(start, n)])


def test_a_handle_analyzes_what_it_wrote_before_reading_it_back(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        _without_autovacuum(store)
        _begin(store)
        _write(store, ANALYZE_AFTER - 1)
        assert store.run_counts("r1")["done"] == ANALYZE_AFTER - 1
        assert _analyzed(store.engine) == set()  # too few rows to be worth it
        _write(store, ANALYZE_AFTER + 500, ANALYZE_AFTER - 1)
        assert _analyzed(store.engine) == set()  # writing alone does not analyze
        outcomes = list(store.iter_outcomes("r1", MODEL))
        assert len(outcomes) == ANALYZE_AFTER + 500
        assert _analyzed(store.engine) == set(TRIAL_TABLES)
        # The statistics count every row written, the first, unanalyzed, batch included.
        with store.engine.connect() as conn:
            [(tuples,)] = conn.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE relname = 'outcomes'"
            )
        assert tuples == ANALYZE_AFTER + 500


def test_a_reader_analyzes_a_run_that_another_process_wrote(pg_url: str) -> None:
    with Store.open(pg_url) as writer:
        _without_autovacuum(writer)
        _begin(writer)
        _write(writer, 3000)
    _wait_for_counted_writes(pg_url, 3000)
    with Store.open(pg_url) as reader:
        assert "Join Filter" in _plan(reader)  # the hazard is real
        assert len(list(reader.iter_outcomes("r1", MODEL))) == 3000
        assert _analyzed(reader.engine) == set(TRIAL_TABLES)
        assert "Join Filter" not in _plan(reader)


def _plan(store: Store) -> str:
    """How the server plans the streamed read of run r1's outcomes."""
    query = outcomes_query("r1", MODEL)
    sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        lines = conn.exec_driver_sql(f"EXPLAIN DECLARE c NO SCROLL CURSOR FOR {sql}")
        return "\n".join(r[0] for r in lines)


def _wait_for_counted_writes(url: str, n: int) -> None:
    """Wait until the server's statistics count the `n` rows written to outcomes (a backend
    reports its counts shortly after its transactions end, not at once)."""
    engine = create_engine(url)
    deadline = time.monotonic() + 30
    try:
        while True:
            with engine.connect() as conn:
                mods = conn.exec_driver_sql(
                    "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'outcomes'"
                ).scalar()
            if mods >= n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the server counted {mods} of {n} rows written")
            time.sleep(0.1)
    finally:
        engine.dispose()


def test_a_store_that_cannot_be_analyzed_still_reads(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """E.g. another session holds a lock that ANALYZE needs, and the store's connections
    give up waiting for locks (lock_timeout): the read goes on with a warning, and the
    next read tries again."""
    with Store.open(f"{pg_url}?options=-c%20lock_timeout%3D200") as store:
        _without_autovacuum(store)
        _begin(store)
        _write(store, 1500)
        blocker = create_engine(pg_url)
        try:
            with blocker.connect() as conn:
                conn.exec_driver_sql("LOCK TABLE trials IN SHARE UPDATE EXCLUSIVE MODE")
                with caplog.at_level(logging.WARNING, logger="deceptwatch.store._planner"):
                    assert len(list(store.iter_outcomes("r1", MODEL))) == 1500
                assert "could not analyze the store's tables" in caplog.text
                assert "lock timeout" in caplog.text
                assert _analyzed(store.engine) == set()
        finally:
            blocker.dispose()
        assert store.run_counts("r1")["done"] == 1500
        assert _analyzed(store.engine) == set(TRIAL_TABLES)
