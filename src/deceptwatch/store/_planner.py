"""Keeping PostgreSQL's query planner informed after bulk writes.

PostgreSQL plans a join from the statistics of its tables, which only ``ANALYZE`` gathers
(autovacuum runs it a minute or more after a table changed, and only once a tenth of it
changed). A run writes thousands of trials and reads them back at once for its findings:
with no statistics, the planner takes the new run's rows for a handful and joins them in a
nested loop that compares every row with every other. Measured here, reading the outcomes
of 10,080 trials that way took 2.8 s, against 0.04 s once analyzed, and the cost grows with
the square of the run.

So, on PostgreSQL, a store handle makes sure the trial tables' statistics are current before
it reads a run back (`PlannerStatistics.refresh`): it analyzes them when it wrote at least
`ANALYZE_AFTER` rows itself since it last did, or when the server counts as many changed
rows not yet analyzed, and at least a tenth of a table (another process wrote the run, and
autovacuum has not come round yet). Statistics are shared by every session, so readers in
other processes (a report, a dashboard) benefit too.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

# The tables `write_trials` and `link_trials` fill.
TRIAL_TABLES = ("prompts", "trials", "run_trials", "responses", "outcomes")
# Below this, a join without statistics costs milliseconds at worst: not worth an ANALYZE.
ANALYZE_AFTER = 1000


class PlannerStatistics:
    """Rows written through one store handle since its last ``ANALYZE`` (PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._enabled = engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._unanalyzed = 0

    def wrote(self, rows: int) -> None:
        """`rows` rows were committed (called by the writes, from any thread)."""
        if self._enabled:
            with self._lock:
                self._unanalyzed += rows

    def refresh(self) -> None:
        """Analyze the trial tables if their statistics miss many rows (see the module)."""
        if not self._enabled:
            return
        with self._lock:
            mine = self._unanalyzed
        try:
            with self._engine.connect() as conn:
                if mine < ANALYZE_AFTER and not _stale(conn):
                    return
                conn.exec_driver_sql(f"ANALYZE {', '.join(TRIAL_TABLES)}")
                conn.commit()
            with self._lock:  # rows written meanwhile wait for the next time
                self._unanalyzed -= mine
        except DBAPIError as exc:  # e.g. a lock not granted within lock_timeout
            # Only the speed of the reads that follow depends on it, not their result. (For
            # a role that does not own the tables, the server skips them with a notice.)
            log.warning("could not analyze the store's tables: %s", exc.orig)


def _stale(conn: Connection) -> bool:
    """Whether the server counts, for some trial table, at least `ANALYZE_AFTER` rows
    changed since its statistics were gathered, and at least a tenth of the table."""
    query = (
        "SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = current_schema() "
        "AND relname = ANY(%(tables)s) AND n_mod_since_analyze >= %(least)s "
        "AND n_mod_since_analyze * 10 >= n_live_tup"
    )
    rows = conn.exec_driver_sql(query, {"tables": list(TRIAL_TABLES), "least": ANALYZE_AFTER})
    return bool(rows.scalar())
