"""The store: runs, models, scenarios, trials, raw responses and outcomes, in SQL.

SQLite (WAL) by default; any SQLAlchemy URL otherwise (PostgreSQL via ``postgresql+psycopg``).
Writes are batched in one transaction each, and idempotent: rows keyed by trial id are
inserted once, and a trial retried after an error replaces its error record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, create_engine, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, NoSuchModuleError

from deceptwatch._errors import InputError
from deceptwatch._ids import canonical_json, content_hash
from deceptwatch.store import _schema as s
from deceptwatch.store._planner import PlannerStatistics
from deceptwatch.store._recorder import Recorder, recorder_path
from deceptwatch.store._recorder_main import encodable_text
from deceptwatch.store._retry import BUSY_TIMEOUT_S, retry_conflicts, writable
from deceptwatch.store._rows import (
    KEEP_ANSWER,
    FastInsert,
    TrialRow,
    outcome_dict,
    outcome_tuple,
    pg_text,
    response_dict,
    response_tuple,
    trial_dict,
    trial_tuple,
)
from deceptwatch.store._sqlite import READ_ONLY, prepare_sqlite_file, sqlite_setup
from deceptwatch.store._url import resolve_db_url

RUNNING, COMPLETE, INCOMPLETE = "running", "complete", "incomplete"
_TRIAL_ID = attrgetter("trial_id")
_MAX_PROMPTS_REMEMBERED = 200_000


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Store:
    """A handle on one database. Open with `Store.open(url)`; close with `close()`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._prompts_stored: set[str] = set()  # hashes of prompts committed through this handle
        self._recorder: Recorder | None = None
        self._planner = PlannerStatistics(engine)  # PostgreSQL: ANALYZE before reading back

    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None, *, migrate: bool = True) -> Store:
        url = resolve_db_url(db)
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite":
            prepare_sqlite_file(parsed.database, parsed.query, shown)
            engine = create_engine(url)
            sqlite_setup(engine)
        else:
            try:
                engine = create_engine(url, pool_pre_ping=True)
            except NoSuchModuleError:
                raise InputError(
                    f"unknown database dialect in {shown}",
                    hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/NAME",
                ) from None
            except ModuleNotFoundError as exc:
                raise InputError(
                    f"the database driver for {parsed.drivername!r} is not installed ({exc.name})",
                    hint="deceptwatch stores runs in SQLite or PostgreSQL; for PostgreSQL: "
                    "pip install 'deceptwatch[postgres]'",
                ) from None
        store = cls(engine)
        if migrate:
            store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def writer_process(self) -> Iterator[None]:
        """While inside, `write_trials` commits through a process of its own (a SQLite file
        only; elsewhere this does nothing): see `deceptwatch.store._recorder`."""
        url = self.engine.url
        path = recorder_path(url.database, url.query) if self.dialect == "sqlite" else None
        recorder = None
        if path is not None and self._recorder is None:
            recorder = Recorder.start(path, BUSY_TIMEOUT_S)
        if recorder is None:
            yield
            return
        self._recorder = recorder
        try:
            yield
        finally:
            self._recorder = None
            recorder.close()

    def _read(self) -> Connection:
        """A connection for reading only (on SQLite: a deferred, non-locking transaction)."""
        return self.engine.connect().execution_options(**{READ_ONLY: True})

    def _read_run(self) -> Connection:
        """`_read`, for reading a run back: on PostgreSQL, with the planner's statistics
        brought up to date first (see `_planner`)."""
        self._planner.refresh()
        return self._read()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ migrations

    def migrate(self) -> list[int]:
        """Apply pending migrations in order; returns the versions applied now."""
        applied_now: list[int] = []
        try:
            with self.engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(74201)"))
                s.check_ours(conn, self.engine.url.render_as_string(hide_password=True))
                s.migrations_table_metadata.create_all(conn, checkfirst=True)
                done = set(conn.execute(select(s.schema_migrations.c.version)).scalars())
                s.check_not_newer(done)  # before anything is written to it
                for m in s.MIGRATIONS:
                    if m.version in done:
                        continue
                    m.apply(conn)
                    conn.execute(
                        s.schema_migrations.insert().values(
                            version=m.version, name=m.name, applied_at=now()
                        )
                    )
                    applied_now.append(m.version)
        except DatabaseError as exc:  # OperationalError, or e.g. 'file is not a database'
            raise InputError(
                f"cannot open the store at {self.engine.url.render_as_string(hide_password=True)}: "
                f"{exc.orig}",
                hint="check --db (or $DECEPTWATCH_DB): it must be a deceptwatch store or a new "
                "file's path"
                if self.dialect == "sqlite"
                else "check --db (or $DECEPTWATCH_DB), and that the server is running",
            ) from None
        return applied_now

    def schema_versions(self) -> list[int]:
        with self._read() as conn:
            return sorted(conn.execute(select(s.schema_migrations.c.version)).scalars())

    # ------------------------------------------------------------------ writes

    def _insert(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        keys: Sequence[str],
        *,
        replace: bool = False,
    ) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(table)
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table)
        else:  # pragma: no cover - other databases: plain inserts of new keys only
            self._insert_generic(conn, table, rows, keys, replace=replace)
            return
        if replace:
            cols = [c for c in rows[0] if c not in keys]
            keep = KEEP_ANSWER.get(table.name)
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={c: getattr(stmt.excluded, c) for c in cols},
                where=None if keep is None else text(keep.format(t=table.name)),
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        if self.dialect == "postgresql":  # one lock order for every writer (see _rows._key_of)
            rows = sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys))
        conn.execute(stmt, list(rows))

    def _insert_generic(
        self,
        conn: Connection,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        keys: Sequence[str],
        *,
        replace: bool,
    ) -> None:  # pragma: no cover
        for row in rows:
            where = [table.c[k] == row[k] for k in keys]
            exists = conn.execute(select(table.c[keys[0]]).where(*where)).first()
            if exists is None:
                conn.execute(table.insert().values(**row))
            elif replace:
                conn.execute(update(table).where(*where).values(**row))

    @retry_conflicts
    def begin_run(
        self,
        run_id: str,
        *,
        config: Mapping[str, Any],
        models: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
        scenarios: Iterable[Any],
        n_trials: int,
    ) -> bool:
        """Record a run (or mark a resumed one as running). Returns True if it is new.

        `models` holds (spec, cache_key, description) triples; `scenarios` ScenarioRecords.
        """
        ts = now()
        model_rows = [
            {
                "id": model_id(key),
                "spec": spec,
                "cache_key_json": canonical_json(dict(key)),
                "description_json": canonical_json(dict(desc)),
                "created_at": ts,
            }
            for spec, key, desc in models
        ]
        scenario_rows = [
            {
                "content_hash": r.content_hash,
                "id": r.id,
                "version": r.scenario.version,
                "family": r.family,
                "suite": r.suite,
                "body_json": canonical_json(r.scenario.dump()),
                "created_at": ts,
            }
            for r in scenarios
        ]
        config_json = canonical_json(dict(config))
        with writable(self.engine), self.engine.begin() as conn:  # a run's first write
            self._insert(conn, s.models, model_rows, ["id"])
            self._insert(conn, s.scenarios, scenario_rows, ["content_hash"])
            self._insert(
                conn,
                s.run_models,
                [
                    {"run_id": run_id, "model_id": m["id"], "position": i}
                    for i, m in enumerate(model_rows)
                ],
                ["run_id", "model_id"],
            )
            existing = conn.execute(select(s.runs.c.id).where(s.runs.c.id == run_id)).first()
            if existing is None:
                conn.execute(
                    s.runs.insert().values(
                        id=run_id,
                        created_at=ts,
                        updated_at=ts,
                        status=RUNNING,
                        config_json=config_json,
                        n_trials=n_trials,
                        n_done=0,
                        n_error=0,
                        message=None,
                        findings_json=None,
                    )
                )
                return True
            # a resume may change what is not in the run's id (--alpha, --multiplicity, ...):
            # the row says what its next findings are computed with
            again = {"status": RUNNING, "updated_at": ts, "n_trials": n_trials, "message": None}
            conn.execute(
                update(s.runs).where(s.runs.c.id == run_id).values(**again, config_json=config_json)
            )
            return False

    def done_trial_ids(self, trial_ids: Sequence[str]) -> set[str]:
        """Those of `trial_ids` that already have an outcome other than `error`."""
        out: set[str] = set()
        with self._read() as conn:
            for i in range(0, len(trial_ids), 900):
                chunk = list(trial_ids[i : i + 900])
                q = select(s.outcomes.c.trial_id).where(
                    s.outcomes.c.trial_id.in_(chunk), s.outcomes.c.outcome != "error"
                )
                out.update(conn.execute(q).scalars())
        return out

    def has_trials(self, model: str) -> bool:
        """Whether any trial of the model (by model id) is stored at all."""
        with self._read() as conn:
            q = select(s.trials.c.id).where(s.trials.c.model_id == model).limit(1)
            return conn.execute(q).first() is not None

    @retry_conflicts
    def link_trials(self, run_id: str, trial_ids: Sequence[str]) -> None:
        if not trial_ids:
            return
        with self.engine.begin() as conn:
            self._insert(
                conn,
                s.run_trials,
                [{"run_id": run_id, "trial_id": t} for t in trial_ids],
                ["run_id", "trial_id"],
            )
        self._planner.wrote(len(trial_ids))

    @retry_conflicts
    def write_trials(self, run_id: str, rows: Sequence[TrialRow]) -> None:
        """Write a batch of finished trials in one transaction.

        Idempotent: a trial already stored keeps its trial row and its answer; only a stored
        error is replaced (a retry's result becomes it; see `KEEP_ANSWER`). On SQLite and
        PostgreSQL the rows go to the driver as tuples in one ``executemany`` per table
        (no per-row work in SQLAlchemy); other databases take the generic path.
        """
        if not rows:
            return
        ts = now()
        # In the order of their ids (a stable sort: a trial given twice keeps its order), so
        # that each table's id index is updated in one sweep rather than at random places:
        # 7 to 11% less writer time a trial (two measurements) once a store holds 400,000
        # trials, when its indexes no longer fit in SQLite's page cache; no change at 20,000.
        rows = sorted(rows, key=_TRIAL_ID)
        # A prompt recurs in every epoch and model: one already committed through this
        # handle is not sent again (prompts are content-addressed and never deleted).
        stored = self._prompts_stored
        prompts = {r.prompt_hash: r.messages_json for r in rows if r.prompt_hash not in stored}
        trials: dict[str, TrialRow] = {}
        last: dict[str, TrialRow] = {}
        for r in rows:  # a trial given twice: its first trial row, its last answer
            trials.setdefault(r.trial_id, r)
            kept = last.get(r.trial_id)
            if kept is None or r.outcome != "error" or kept.outcome == "error":
                last[r.trial_id] = r  # a failed call never replaces an answer (KEEP_ANSWER)
        tables = [
            (s.prompts, list(prompts.items()), False),
            (s.trials, [trial_tuple(r, ts) for r in trials.values()], False),
            (s.run_trials, [(run_id, t) for t in last], False),
            (s.responses, [response_tuple(r, ts) for r in last.values()], True),
            (s.outcomes, [outcome_tuple(r, ts) for r in last.values()], True),
        ]
        recorder = self._recorder
        if recorder is not None:
            marked = FastInsert(self.engine.dialect, "?")
            recorder.write(
                [(marked.sql(t, replace), tuples) for t, tuples, replace in tables if tuples]
            )
        else:
            with self.engine.begin() as conn:
                fast = FastInsert.for_connection(conn)
                if fast is None:
                    self._write_trials_generic(conn, run_id, rows, prompts, ts)
                    return
                for t, tuples, replace in tables:
                    fast.insert(conn, t, tuples, replace)
            self._planner.wrote(len(rows))
        if len(stored) + len(prompts) > _MAX_PROMPTS_REMEMBERED:
            stored.clear()
        stored.update(prompts)

    def _write_trials_generic(
        self,
        conn: Connection,
        run_id: str,
        rows: Sequence[TrialRow],
        prompts: Mapping[str, str],
        ts: str,
    ) -> None:  # pragma: no cover - databases other than SQLite and PostgreSQL
        self._insert(
            conn, s.prompts, [{"hash": h, "messages_json": m} for h, m in prompts.items()], ["hash"]
        )
        self._insert(conn, s.trials, [trial_dict(r, ts) for r in rows], ["id"])
        self._insert(
            conn,
            s.run_trials,
            [{"run_id": run_id, "trial_id": r.trial_id} for r in rows],
            ["run_id", "trial_id"],
        )
        self._insert(
            conn, s.responses, [response_dict(r, ts) for r in rows], ["trial_id"], replace=True
        )
        self._insert(
            conn, s.outcomes, [outcome_dict(r, ts) for r in rows], ["trial_id"], replace=True
        )

    @retry_conflicts
    def finish_run(
        self, run_id: str, *, status: str, message: str | None, findings: Any | None
    ) -> dict[str, int]:
        """Record the end of a run with counts taken from the store itself."""
        counts = self.run_counts(run_id)
        if message is not None:  # it may quote an error reply
            message = encodable_text(message)
            message = pg_text(message) if self.dialect == "postgresql" else message
        with self.engine.begin() as conn:
            conn.execute(
                update(s.runs)
                .where(s.runs.c.id == run_id)
                .values(
                    status=status,
                    updated_at=now(),
                    n_done=counts["done"],
                    n_error=counts["error"],
                    message=message,
                    findings_json=None if findings is None else json.dumps(findings),
                )
            )
        return counts

    # ------------------------------------------------------------------ reads

    def run_counts(self, run_id: str) -> dict[str, int]:
        """Stored outcomes of a run by kind, plus ``done`` (all but errors)."""
        o, rt = s.outcomes, s.run_trials
        q = (
            select(o.c.outcome, func.count())
            .select_from(rt.join(o, o.c.trial_id == rt.c.trial_id))
            .where(rt.c.run_id == run_id)
            .group_by(o.c.outcome)
        )
        counts = {"aligned": 0, "defect": 0, "other": 0, "error": 0}
        with self._read_run() as conn:
            for outcome, n in conn.execute(q):
                counts[outcome] = int(n)
        counts["done"] = counts["aligned"] + counts["defect"] + counts["other"]
        return counts

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(s.runs).where(s.runs.c.id == run_id)).mappings().first()
        return dict(row) if row is not None else None

    def run_model_ids(self, run_id: str) -> list[str]:
        with self._read() as conn:
            q = (
                select(s.run_models.c.model_id)
                .where(s.run_models.c.run_id == run_id)
                .order_by(s.run_models.c.position)
            )
            return list(conn.execute(q).scalars())

    def iter_outcomes(self, run_id: str, model: str) -> Iterator[tuple[str, str, str, str, str]]:
        """(scenario_id, family, block_id, condition, outcome) of each stored trial of a
        run's model, streamed.

        Equal values come back as one shared ``str`` object: the driver makes a new string
        for every cell, and a caller that keeps the tuples (a million trials to findings)
        would otherwise hold five fresh strings per trial, though scenario, family,
        condition and outcome take few distinct values and each block id recurs in every
        trial of its block.
        """
        q = outcomes_query(run_id, model)
        seen: dict[str, str] = {}
        shared = seen.setdefault
        with self._read_run() as conn:
            result = conn.execution_options(stream_results=True, yield_per=10000).execute(q)
            for scenario, family, block, condition, outcome in result:
                yield (
                    shared(scenario, scenario),
                    shared(family, family),
                    shared(block, block),
                    shared(condition, condition),
                    shared(outcome, outcome),
                )

    def other_reasons(self, run_id: str, model: str) -> dict[str, int]:
        """Why the `other` trials of a run's model are `other`: the number of each way their
        replies were read (``unreadable``, ``ambiguous``, ``unfinished_reasoning``, ...),
        commonest first."""
        o = s.outcomes
        q = (
            _of_run(run_id, model, o.c.method, func.count())
            .where(o.c.outcome == "other")
            .group_by(o.c.method)
        )
        with self._read_run() as conn:
            rows = [(str(m), int(n)) for m, n in conn.execute(q)]
        return dict(sorted(rows, key=lambda r: (-r[1], r[0])))

    def trial_outcomes(self, run_id: str, model: str) -> dict[str, str]:
        """Outcome of each stored trial of a run's model, by trial id."""
        q = _of_run(run_id, model, s.trials.c.id, s.outcomes.c.outcome)
        with self._read_run() as conn:
            return {row[0]: row[1] for row in conn.execute(q)}

    @retry_conflicts
    def write_probe_scores(
        self,
        run_id: str,
        model: str,
        *,
        probe_id: str,
        record_json: str,
        threshold: float,
        calibration: str,
        result_json: str,
        scores: Sequence[tuple[str, float | None]],
    ) -> None:
        """A probe's scores of a run's trials (``(trial_id, score)``; None: unreadable) and its
        result for the run, in one transaction. Idempotent: a rerun replaces them."""
        ts = now()
        with self.engine.begin() as conn:
            self._insert(
                conn,
                s.probes,
                [{"id": probe_id, "record_json": record_json, "created_at": ts}],
                ["id"],
            )
            for start in range(0, len(scores), 10000):
                self._insert(
                    conn,
                    s.probe_scores,
                    [
                        {
                            "probe_id": probe_id,
                            "trial_id": tid,
                            "score": None if sc is None or math.isnan(sc) else sc,  # alike
                            "created_at": ts,  # on SQLite, which stores NaN as NULL
                        }
                        for tid, sc in scores[start : start + 10000]
                    ],
                    ["probe_id", "trial_id"],
                    replace=True,
                )
            self._insert(
                conn,
                s.run_probes,
                [
                    {
                        "run_id": run_id,
                        "model_id": model,
                        "probe_id": probe_id,
                        "threshold": threshold,
                        "calibration": calibration,
                        "result_json": result_json,
                        "created_at": ts,
                    }
                ],
                ["run_id", "model_id", "probe_id"],
                replace=True,
            )

    def probe_scores(self, probe_id: str) -> dict[str, float | None]:
        """Stored scores of a probe, by trial id."""
        ps = s.probe_scores
        with self._read() as conn:
            q = select(ps.c.trial_id, ps.c.score).where(ps.c.probe_id == probe_id)
            return {row[0]: row[1] for row in conn.execute(q)}

    def count_rows(self, table: str) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    text(f"SELECT count(*) FROM {s.metadata.tables[table].name}")
                ).scalar_one()
            )


def _of_run(run_id: str, model: str, *columns: Any) -> Select[Any]:
    """`columns` of each stored trial (with its outcome) of a run's model."""
    t, o, rt = s.trials, s.outcomes, s.run_trials
    return (
        select(*columns)
        .select_from(rt.join(t, t.c.id == rt.c.trial_id).join(o, o.c.trial_id == t.c.id))
        .where(rt.c.run_id == run_id, t.c.model_id == model)
    )


def outcomes_query(run_id: str, model: str) -> Select[Any]:
    """(scenario_id, family, block_id, condition, outcome) of each trial of a run's model."""
    t, o = s.trials.c, s.outcomes.c
    return _of_run(run_id, model, t.scenario_id, t.family, t.block_id, t.condition, o.outcome)


def model_id(cache_key: Mapping[str, Any]) -> str:
    return content_hash(dict(cache_key))
