"""The store: ordered, recorded migrations; idempotent writes; errors replaced on retry.

Every test that takes `store_url` runs on SQLite and on a real PostgreSQL server (a private
cluster started for the session; see `postgres_cluster` in tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import inspect

from deceptwatch._errors import InputError
from deceptwatch.store import MIGRATIONS, SCHEMA_VERSION, Store, TrialRow, resolve_db_url
from deceptwatch.store._schema import metadata


def _row(i: int, outcome: str = "aligned", error: str | None = None) -> TrialRow:
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
        prompt_hash="p" * 64,
        messages_json='[{"content":"hi","role":"user"}]',
        seed=0,
        text=None if error else "(A)",
        raw=None if error else '{"choices": []}',
        choice_probs_json=None,
        model_reported=None,
        usage_json=None,
        error_kind="http_500" if error else None,
        error=error,
        attempts=1,
        latency_ms=1.0,
        outcome=outcome,
        choice=None if error else "a",
        label=None if error else "A",
        method="backend_error" if error else "exact",
    )


def _begin(store: Store, run_id: str = "r1") -> None:
    store.begin_run(
        run_id, config={"x": 1}, models=[("mock:", {"spec": "mock:"}, {})], scenarios=[], n_trials=4
    )


def test_migrations_are_recorded_and_idempotent(store_url: str) -> None:
    with Store.open(store_url) as store:
        assert store.schema_versions() == [m.version for m in MIGRATIONS]
    with Store.open(store_url) as store:
        assert store.migrate() == []
        assert store.schema_versions()[-1] == SCHEMA_VERSION


def test_migrated_schema_equals_current_tables(store_url: str) -> None:
    with Store.open(store_url) as store:
        insp = inspect(store.engine)
        for name, table in metadata.tables.items():
            assert {c["name"] for c in insp.get_columns(name)} == {c.name for c in table.columns}
            assert {i["name"] for i in insp.get_indexes(name)} == {i.name for i in table.indexes}


def test_migration_3_reindexes_trials_of_an_older_store(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made by migrations 1 and 2 keeps its trials, and loses the (model, block)
    index for one on the model alone, which the model's queries then use."""
    from deceptwatch.store import _schema

    with monkeypatch.context() as m:
        m.setattr(_schema, "MIGRATIONS", MIGRATIONS[:2])
        m.setattr(_schema, "SCHEMA_VERSION", 2)
        with Store.open(store_url) as store:
            assert store.schema_versions() == [1, 2]
            _begin(store)
            store.write_trials("r1", [_row(i) for i in range(4)])
            names = {i["name"] for i in inspect(store.engine).get_indexes("trials")}
            assert names == {"ix_trials_block"}
    with Store.open(store_url) as store:
        assert store.schema_versions() == [1, 2, 3]
        names = {i["name"] for i in inspect(store.engine).get_indexes("trials")}
        assert names == {"ix_trials_model"}
        assert store.has_trials("m" * 64)
        assert not store.has_trials("x" * 64)
        assert len(list(store.iter_outcomes("r1", "m" * 64))) == 4
        if store.dialect == "sqlite":
            with store.engine.connect() as conn:
                plan = conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT id FROM trials WHERE model_id = ?", ("m" * 64,)
                ).all()
            assert "ix_trials_model" in " ".join(str(row[-1]) for row in plan)


def test_sqlite_uses_wal(db_url: str) -> None:
    with Store.open(db_url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_rows_written_once_and_error_replaced_on_retry(store_url: str) -> None:
    with Store.open(store_url) as store:
        _begin(store)
        store.write_trials("r1", [_row(0), _row(1, "error", error="HTTP 500")])
        store.write_trials("r1", [_row(0)])  # a duplicate write changes nothing
        assert store.count_rows("trials") == 2
        assert store.count_rows("run_trials") == 2
        assert store.done_trial_ids([_row(0).trial_id, _row(1).trial_id]) == {_row(0).trial_id}
        counts = store.run_counts("r1")
        assert counts["error"] == 1
        assert counts["aligned"] == 1
        store.write_trials("r1", [_row(1, "defect")])  # the retry succeeds
        assert store.count_rows("outcomes") == 2
        counts = store.run_counts("r1")
        assert (counts["error"], counts["defect"], counts["done"]) == (0, 1, 2)


def test_run_is_resumed_not_duplicated(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.begin_run(
            "r1",
            config={"x": 1},
            models=[("mock:", {"spec": "mock:"}, {})],
            scenarios=[],
            n_trials=4,
        )
        again = store.begin_run(
            "r1",
            config={"x": 1},
            models=[("mock:", {"spec": "mock:"}, {})],
            scenarios=[],
            n_trials=4,
        )
        assert again is False
        assert store.count_rows("runs") == 1
        store.finish_run("r1", status="complete", message=None, findings={"a": 1})
        run = store.run("r1")
        assert run is not None
        assert run["status"] == "complete"
        assert json.loads(run["findings_json"]) == {"a": 1}


def test_bad_db_urls_are_input_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="not a valid database URL"):
        resolve_db_url("://nothing")
    with pytest.raises(InputError, match="unknown database dialect"):
        Store.open("nosuchdialect://host/db")
    assert resolve_db_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    for empty in ("", " "):  # `--db ''` used to fall back to the default store unsaid
        with pytest.raises(InputError, match="--db is empty"):
            resolve_db_url(empty)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot create the directory"):
        Store.open(str(blocker / "sub" / "x.db"))
    # a directory given for the file: SQLite's own word was "unable to open database file"
    with pytest.raises(InputError, match="is a directory") as caught:
        Store.open(str(tmp_path))
    assert caught.value.hint == f"give --db a file's path, e.g. {tmp_path / 'deceptwatch.db'}"


def test_row_tuples_follow_the_table_columns() -> None:
    """The fast write path sends tuples in column order: they must say what the dicts say."""
    from deceptwatch.store import _schema as s
    from deceptwatch.store._rows import (
        outcome_dict,
        outcome_tuple,
        response_dict,
        response_tuple,
        trial_dict,
        trial_tuple,
    )

    r = _row(3)
    for table, as_tuple, as_dict in (
        (s.trials, trial_tuple, trial_dict),
        (s.responses, response_tuple, response_dict),
        (s.outcomes, outcome_tuple, outcome_dict),
    ):
        columns = [c.name for c in table.columns]
        assert dict(zip(columns, as_tuple(r, "ts"), strict=True)) == as_dict(r, "ts")


def test_a_trial_given_twice_in_one_batch_keeps_its_last_result(store_url: str) -> None:
    with Store.open(store_url) as store:
        _begin(store)
        store.write_trials("r1", [_row(0, "error", error="HTTP 500"), _row(1), _row(0, "defect")])
        assert store.count_rows("trials") == store.count_rows("outcomes") == 2
        assert store.count_rows("run_trials") == 2
        counts = store.run_counts("r1")
        assert (counts["error"], counts["defect"], counts["aligned"]) == (0, 1, 1)


@pytest.mark.parametrize("writer", ["in process", "writer process"])
def test_a_failed_call_never_replaces_a_stored_answer(store_url: str, writer: str) -> None:
    """Two monitors that share a run (they differ only in retries, say) write the same
    trials: the one whose call failed used to overwrite the other's answer with `error`.
    (The writer process commits a SQLite store's batches in a monitor run; on PostgreSQL
    it is the same as in process.)"""
    from contextlib import ExitStack

    from sqlalchemy import select

    from deceptwatch.store import _schema as s

    failed = [_row(i, "error", error="HTTP 500") for i in range(3)]
    with Store.open(store_url) as store:
        _begin(store)
        with ExitStack() as stack:
            if writer == "writer process":
                stack.enter_context(store.writer_process())
                assert (store._recorder is not None) == (store.dialect == "sqlite")
            store.write_trials("r1", [_row(0), _row(1, "defect")])
            store.write_trials("r1", failed)
            counts = store.run_counts("r1")
            assert (counts["aligned"], counts["defect"], counts["error"]) == (1, 1, 1)
            with store.engine.connect() as conn:
                kept = conn.execute(
                    select(s.responses.c.trial_id, s.responses.c.text, s.responses.c.error_kind)
                ).all()
            assert sorted(kept) == [
                (_row(0).trial_id, "(A)", None),
                (_row(1).trial_id, "(A)", None),
                (_row(2).trial_id, None, "http_500"),
            ]
            # in one batch too; and an error is still replaced by an answer
            store.write_trials("r1", [_row(3), _row(3, "error", error="HTTP 500")])
            store.write_trials("r1", [_row(2, "defect"), failed[2]])
        counts = store.run_counts("r1")
        assert (counts["aligned"], counts["defect"], counts["error"]) == (2, 2, 0)


def test_has_trials_and_done_ids(store_url: str) -> None:
    with Store.open(store_url) as store:
        _begin(store)
        assert not store.has_trials("m" * 64)
        store.write_trials("r1", [_row(0), _row(1, "error", error="HTTP 500")])
        assert store.has_trials("m" * 64)
        assert not store.has_trials("n" * 64)
        assert store.done_trial_ids([f"{i:064x}" for i in range(3)]) == {f"{0:064x}"}


def test_sqlite_reads_do_not_wait_for_a_writer(db_url: str) -> None:
    """Checking which trials are done must not queue behind a batch being committed (a
    read that took the write lock would wait out the busy timeout, then fail)."""
    import sqlite3

    with Store.open(db_url) as store:
        _begin(store)
        store.write_trials("r1", [_row(0)])
        path = db_url.removeprefix("sqlite:///")
        writer = sqlite3.connect(path, isolation_level=None, timeout=60)
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as a long commit would
        try:
            assert store.done_trial_ids([f"{0:064x}"]) == {f"{0:064x}"}
            assert store.run_counts("r1")["done"] == 1
            assert store.has_trials("m" * 64)
        finally:
            writer.execute("ROLLBACK")
            writer.close()


def test_probe_scores_are_stored_once_and_replaced_on_rerun(store_url: str) -> None:
    with Store.open(store_url) as store:
        _begin(store)
        store.write_trials("r1", [_row(i, "defect" if i % 2 else "aligned") for i in range(4)])
        outcomes = store.trial_outcomes("r1", "m" * 64)
        assert outcomes == {_row(i).trial_id: ("defect" if i % 2 else "aligned") for i in range(4)}
        assert store.trial_outcomes("r1", "x" * 64) == {}
        scores = [(_row(i).trial_id, float(i)) for i in range(3)] + [(_row(3).trial_id, None)]
        args = {
            "probe_id": "p" * 64,
            "record_json": '{"method":"contrast"}',
            "threshold": 1.5,
            "calibration": "2 trials",
            "result_json": '{"rung":null}',
        }
        store.write_probe_scores("r1", "m" * 64, scores=scores, **args)
        assert store.probe_scores("p" * 64) == dict(scores)
        # a rerun (resume) replaces the scores and the run's result, and adds no row
        rescored = [(tid, (s or 0.0) + 10.0) for tid, s in scores]
        store.write_probe_scores("r1", "m" * 64, scores=rescored, **{**args, "threshold": 2.5})
        assert store.probe_scores("p" * 64) == dict(rescored)
        assert store.count_rows("probe_scores") == 4
        assert store.count_rows("probes") == 1
        assert store.count_rows("run_probes") == 1
        with store.engine.connect() as conn:
            from deceptwatch.store import _schema as s

            (threshold,) = conn.execute(s.run_probes.select()).one()[3:4]
        assert threshold == 2.5


def test_every_value_survives_the_write_exactly(store_url: str) -> None:
    """What a trial row holds comes back exactly: text with quotes, backslashes, control and
    astral characters, floats to the last bit, the largest seed, and NULLs; and a NUL in a
    reply, which PostgreSQL text cannot hold (it becomes U+FFFD there: failing the batch
    would fail it again on every resume)."""
    import random
    import struct

    from sqlalchemy import select

    from deceptwatch.store import _schema as s

    rng = random.Random(7)
    texts = ['"q" \\ /', "é\u2028\U0001f600\x7f\x01", "", "x" * 5000]
    rows = []
    for i in range(1029):
        r = _row(i, "defect" if i % 3 else "aligned")
        r.text = texts[i % len(texts)] if i % 5 else None
        r.raw = f"reply {i}: " + texts[(i + 1) % len(texts)]
        r.latency_ms = struct.unpack("d", struct.pack("Q", rng.getrandbits(62)))[0]
        r.audit_probability = rng.random() if i % 2 else None
        r.seed = (2**31 - 1) if i % 7 == 0 else i
        rows.append(r)
    nul = rows[515]
    nul.text = "a NUL \x00 in a reply"
    nul.raw = '{"content": "a NUL \\u0000 in a reply"}'
    with Store.open(store_url) as store:
        _begin(store)
        store.write_trials("r1", rows)
        store.finish_run("r1", status="complete", message="ended \x00 early", findings=None)
        run = store.run("r1")
        with store._read() as conn:
            got = {
                row.trial_id: row
                for row in conn.execute(
                    select(
                        s.trials.c.id.label("trial_id"),
                        s.trials.c.seed,
                        s.trials.c.audit_probability,
                        s.responses.c.text,
                        s.responses.c.raw,
                        s.responses.c.latency_ms,
                        s.outcomes.c.outcome,
                    )
                    .join(s.responses, s.responses.c.trial_id == s.trials.c.id)
                    .join(s.outcomes, s.outcomes.c.trial_id == s.trials.c.id)
                )
            }
    assert len(got) == len(rows)
    assert run is not None
    if store_url.startswith("postgresql"):  # text there cannot hold a NUL: U+FFFD instead
        assert got[nul.trial_id].text == "a NUL \ufffd in a reply"
        assert run["message"] == "ended \ufffd early"
        nul.text = got[nul.trial_id].text
    else:
        assert run["message"] == "ended \x00 early"
    for r in rows:
        g = got[r.trial_id]
        assert (g.seed, g.audit_probability, g.text, g.raw, g.latency_ms, g.outcome) == (
            r.seed,
            r.audit_probability,
            r.text,
            r.raw,
            r.latency_ms,
            r.outcome,
        ), r.trial_id


def test_writers_sharing_prompts_in_any_order_never_deadlock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads, each with its own connection, write batches that share their prompts and
    trials but list them in another order: PostgreSQL locks each key as it goes in, so without
    one lock order two writers wait for each other and one is aborted (a deadlock, seen in CI
    with four monitor processes). Every batch must commit at its first try (the retry of
    aborted transactions is off here: the lock order alone must prevent deadlocks), and every
    row be stored once."""
    import dataclasses
    import random
    import threading

    from deceptwatch.store import _retry

    monkeypatch.setattr(_retry, "_CONFLICT_ATTEMPTS", 1)

    writers, rounds, size = 4, 12, 200
    stores = [Store.open(pg_url) for _ in range(writers)]
    for i, st in enumerate(stores):
        _begin(st, f"run{i}")
    batches = [
        [
            dataclasses.replace(_row(n), prompt_hash=f"{n % 97:064x}")
            for n in range(r * 50, r * 50 + size)
        ]
        for r in range(rounds)
    ]
    failures: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(k: int) -> None:
        rng = random.Random(k)
        try:
            for batch in batches:
                rows = batch[:]
                rng.shuffle(rows)
                start.wait(timeout=60)
                stores[k].write_trials(f"run{k}", rows)
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    try:
        assert not failures, failures[0]
        expected = {r.trial_id for b in batches for r in b}
        assert stores[0].count_rows("trials") == len(expected)
        assert stores[0].count_rows("outcomes") == len(expected)
        assert stores[0].count_rows("prompts") == 97
        assert stores[0].count_rows("run_trials") == writers * len(expected)
    finally:
        for st in stores:
            st.close()


def test_conflicts_are_retried_and_other_errors_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from deceptwatch.store import _retry

    monkeypatch.setattr(_retry.time, "sleep", lambda _s: None)

    class Orig(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    calls: list[int] = []

    def failing(states: list[str]) -> object:
        @_retry.retry_conflicts
        def write() -> str:
            calls.append(1)
            if states:
                raise OperationalError("INSERT", {}, Orig(states.pop(0)))
            return "committed"

        return write

    assert failing(["40P01", "40001"])() == "committed"  # a deadlock, then a conflict
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(OperationalError):  # not a conflict: no second try
        failing(["23505"])()  # type: ignore[operator]
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(OperationalError):  # conflicts that do not end: five tries, then up
        failing(["40P01"] * 9)()  # type: ignore[operator]
    assert len(calls) == 5


def test_a_store_path_under_a_file_names_the_file(tmp_path: Path) -> None:
    """mkdir's own reason here is "File exists", which says nothing useful."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match=f"{blocker} is a file"):
        Store.open(str(blocker / "sub" / "runs.db"))
    assert blocker.read_text() == "x"
