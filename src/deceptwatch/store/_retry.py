"""Write transactions that PostgreSQL aborted for a conflict with another writer, run again."""

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
