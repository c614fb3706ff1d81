"""Waits and retries for contention between writers: PostgreSQL transactions aborted for a
conflict, run again; a new SQLite store turned to WAL mode while another process holds it."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# and may simply be run again (every write here is idempotent).
_CONFLICT_STATES = frozenset({"40P01", "40001"})
_CONFLICT_ATTEMPTS = 5
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
