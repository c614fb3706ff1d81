"""SQLite connections of a store: their pragmas, and how their transactions begin."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event

from deceptwatch._errors import InputError, mkdir_failure
from deceptwatch.store._retry import BUSY_TIMEOUT_S, sqlite_wal

READ_ONLY = "deceptwatch_read_only"  # execution option of connections that only read


def sqlite_setup(engine: Engine) -> None:
    """The pragmas of every SQLite connection of a store (the writer process,
    `_recorder_main.py`, sets the same on its own), and how its transactions begin."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" hook issue BEGIN
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        sqlite_wal(dbapi_conn)
        cur.execute("PRAGMA synchronous=NORMAL")
        # A WAL checkpoint every 10,000 pages (~40 MB; default 1,000) copies a page rewritten
        # by several batches to the database once instead of once per batch; it does not
        # change what a commit guarantees. (A larger page cache would also cut the writer's
        # work, hash-keyed indexes being dirtied all over, but it costs its size in every
        # connection at a million trials: the page cache stays at SQLite's default.)
        cur.execute("PRAGMA wal_autocheckpoint=10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front (no deadlock upgrading a read lock). Reads
        # begin deferred: in WAL mode they read a snapshot and never wait for a writer, so
        # checking which trials are done does not queue behind a batch being committed.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def foreign_tables(path: str) -> list[str]:
    """The tables of the SQLite database at `path` if it is another program's (it has tables
    and no deceptwatch schema), read without writing to it: a store must not add its tables
    to such a file, nor turn it to WAL mode. Empty for a new or empty file, a deceptwatch
    store, and a file SQLite cannot read (opening the store reports that)."""
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        return []
    try:
        conn = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        try:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%'"
                )
            ]
            # Rails, golang-migrate and others name their table schema_migrations too
            ours = {row[1] for row in conn.execute("PRAGMA table_info(schema_migrations)")}
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [] if ours == {"version", "name", "applied_at"} else sorted(names)


def prepare_sqlite_file(database: str | None, query: Mapping[str, Any], shown: str) -> None:
    """Check the file of a SQLite store's URL (`shown`, for messages) before it is opened,
    and make its directory: a directory is no store, and another program's database is not
    written into. An SQLite URI (``file:...?mode=ro&uri=true``) names a file that SQLite
    itself opens, or fails to open, as its options say: it is left to SQLite."""
    if not database or database == ":memory:" or "uri" in query:
        return
    if Path(database).is_dir():  # SQLite says "unable to open database file"
        raise InputError(
            f"the store {shown} is a directory",
            hint=f"give --db a file's path, e.g. {Path(database) / 'deceptwatch.db'}",
        )
    parent = Path(database).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the directory of the store {shown}: {mkdir_failure(parent, exc)}",
            hint="give --db a path in a writable directory",
        ) from None
    foreign = foreign_tables(database)
    if foreign:
        raise InputError(
            f"{database} is another program's SQLite database, not a deceptwatch store: it "
            f"holds {', '.join(foreign[:5])}"
            + (f" and {len(foreign) - 5} more tables" if len(foreign) > 5 else ""),
            hint="give --db a deceptwatch store or a new file's path",
        )
