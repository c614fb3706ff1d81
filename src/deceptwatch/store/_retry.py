"""Waits and retries for contention between writers: PostgreSQL transactions aborted for a
conflict, run again; a new SQLite store turned to WAL mode while another process holds it.
And the one refusal that is not contention but the user's to fix: a store that may not be
written."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from deceptwatch._errors import InputError, first_line

# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# and may simply be run again (every write here is idempotent).
_CONFLICT_STATES = frozenset({"40P01", "40001"})
_CONFLICT_ATTEMPTS = 5
# PostgreSQL's insufficient_privilege (a role without INSERT or UPDATE on the tables) and
# read_only_sql_transaction (a standby server, or default_transaction_read_only).
_REFUSED_STATES = frozenset({"42501", "25006"})
_SQLITE_READONLY = 8  # SQLITE_READONLY, whose extended codes keep it in their low byte
W = TypeVar("W", bound=Callable[..., Any])


def retry_conflicts(fn: W) -> W:
    """Run a write transaction again, after a short random wait, when PostgreSQL aborted it
    for a deadlock or a serialization conflict with another writer."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as exc:
                state = getattr(exc.orig, "sqlstate", None)
                if state not in _CONFLICT_STATES or attempt == _CONFLICT_ATTEMPTS - 1:
                    raise
            time.sleep(random.uniform(0.0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper  # type: ignore[return-value]


# SQLite's busy handler does not cover the exclusive lock that turning a new database into
# WAL mode takes: when several processes open one fresh store at once, all but one of their
# `PRAGMA journal_mode=WAL` fail at once with "database is locked" (about 3 in 100 runs of
# four processes here). Retried here, within the same patience as the busy timeout.
BUSY_TIMEOUT_S = 60.0


def sqlite_wal(dbapi_conn: Any) -> None:
    """Put a SQLite connection's database in WAL mode, waiting while another holds it."""
    import sqlite3

    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL").close()
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 0.1)


@contextmanager
def writable(engine: Engine) -> Iterator[None]:
    """Turn a store's refusal to be written into an input error naming the store: a SQLite
    file this user may only read, or a PostgreSQL role or server that may only read. (Opening
    such a store succeeds when it needs no migration: the first write is a run's.)"""
    try:
        yield
    except DBAPIError as exc:
        orig = exc.orig
        code = getattr(orig, "sqlite_errorcode", None)
        refused = getattr(orig, "sqlstate", None) in _REFUSED_STATES or (
            isinstance(code, int) and code & 0xFF == _SQLITE_READONLY
        )
        if not refused:
            raise
        raise InputError(
            f"cannot write to the store {engine.url.render_as_string(hide_password=True)}: "
            f"{first_line(orig) if orig is not None else exc}",
            hint="give --db a store this user may write (for PostgreSQL, a role with INSERT "
            "and UPDATE on its tables, on a server that is not read-only)",
        ) from None
