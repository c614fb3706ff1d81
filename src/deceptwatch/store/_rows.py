"""What the store writes for one finished trial, and the fast path that writes it.

`TrialRow` is the record; the ``*_dict`` and ``*_tuple`` functions give its part for each
table (the tuples in the table's column order, for the driver). `FastInsert` writes tuples
with the driver's own ``executemany`` and ``INSERT ... ON CONFLICT``, which SQLite (3.24+)
and PostgreSQL share, so that no per-row work happens in SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Connection, Table

from deceptwatch.store._recorder_main import encodable_text


@dataclass(slots=True)
class TrialRow:
    """Everything written for one finished trial. Not changed once made (it is not frozen
    only because a frozen dataclass sets each of its 30 fields through
    ``object.__setattr__``: 4 to 5 µs a trial, on the event loop)."""

    trial_id: str
    model_id: str
    block_id: str
    scenario_hash: str
    scenario_id: str
    family: str
    condition: str
    audit_probability: float | None
    cue_index: int
    epoch: int
    factors_json: str
    choice_order_json: str
    aligned: str
    defect: str
    prompt_hash: str
    messages_json: str
    seed: int
    text: str | None
    raw: str | None
    choice_probs_json: str | None
    model_reported: str | None
    usage_json: str | None
    error_kind: str | None
    error: str | None
    attempts: int
    latency_ms: float
    outcome: str
    choice: str | None
    label: str | None
    method: str


def trial_dict(r: TrialRow, ts: str) -> dict[str, Any]:
    return {
        "id": r.trial_id,
        "model_id": r.model_id,
        "block_id": r.block_id,
        "scenario_hash": r.scenario_hash,
        "scenario_id": r.scenario_id,
        "family": r.family,
        "condition": r.condition,
        "audit_probability": r.audit_probability,
        "cue_index": r.cue_index,
        "epoch": r.epoch,
        "factors_json": r.factors_json,
        "choice_order_json": r.choice_order_json,
        "aligned": r.aligned,
        "defect": r.defect,
        "prompt_hash": r.prompt_hash,
        "seed": r.seed,
        "created_at": ts,
    }


def response_dict(r: TrialRow, ts: str) -> dict[str, Any]:
    return {
        "trial_id": r.trial_id,
        "text": r.text,
        "raw": r.raw,
        "choice_probs_json": r.choice_probs_json,
        "model_reported": r.model_reported,
        "usage_json": r.usage_json,
        "error_kind": r.error_kind,
        "error": r.error,
        "attempts": r.attempts,
        "latency_ms": r.latency_ms,
        "created_at": ts,
    }


def outcome_dict(r: TrialRow, ts: str) -> dict[str, Any]:
    return {
        "trial_id": r.trial_id,
        "outcome": r.outcome,
        "choice": r.choice,
        "label": r.label,
        "method": r.method,
        "scored_at": ts,
    }


# The columns of ``trials``, ``responses`` and ``outcomes`` but the last (the time of writing),
# read off a TrialRow in table order in one C call each.
_TRIAL_FIELDS = attrgetter(
    "trial_id",
    "model_id",
    "block_id",
    "scenario_hash",
    "scenario_id",
    "family",
    "condition",
    "audit_probability",
    "cue_index",
    "epoch",
    "factors_json",
    "choice_order_json",
    "aligned",
    "defect",
    "prompt_hash",
    "seed",
)
_RESPONSE_FIELDS = attrgetter(
    "trial_id",
    "text",
    "raw",
    "choice_probs_json",
    "model_reported",
    "usage_json",
    "error_kind",
    "error",
    "attempts",
    "latency_ms",
)
_OUTCOME_FIELDS = attrgetter("trial_id", "outcome", "choice", "label", "method")


def trial_tuple(r: TrialRow, ts: str) -> tuple[Any, ...]:
    """`trial_dict` as a tuple, in the column order of ``trials``."""
    return (*_TRIAL_FIELDS(r), ts)


def response_tuple(r: TrialRow, ts: str) -> tuple[Any, ...]:
    return (*_RESPONSE_FIELDS(r), ts)


def outcome_tuple(r: TrialRow, ts: str) -> tuple[Any, ...]:
    return (*_OUTCOME_FIELDS(r), ts)


_STATEMENTS: dict[tuple[str, str, bool], str] = {}  # (dialect, table, replace) -> SQL

# A trial's stored answer is never replaced: only a stored error is (by anything, so that a
# resume's retry becomes the result). Two monitors that share a run (they differ only in
# retries, say) write the same trials: the one whose call failed must not undo the other's
# answer, and a second answer (a sampled reply differs from call to call) must not change
# an outcome that findings were already computed from; the first one committed stays. The
# two tables agree: an outcome is `error` exactly when its response has an `error_kind`.
KEEP_ANSWER = {
    "responses": "{t}.error_kind IS NOT NULL",
    "outcomes": "{t}.outcome = 'error'",
}


class FastInsert:
    """``INSERT ... ON CONFLICT`` statements in the driver's own parameter style, run with
    the driver's ``executemany`` on tuples. SQLite (3.24+) and PostgreSQL share the syntax.
    Rows must not repeat a key within one call (PostgreSQL refuses to update a row twice in
    one statement); `write_trials` removes repeats first."""

    def __init__(self, dialect: Any, marker: str) -> None:
        self.dialect = dialect
        self.marker = marker

    @classmethod
    def for_connection(cls, conn: Connection) -> FastInsert | None:
        dialect = conn.dialect
        if dialect.name not in ("sqlite", "postgresql"):
            return None  # pragma: no cover
        style = dialect.paramstyle
        if style == "qmark":
            return cls(dialect, "?")
        if style in ("format", "pyformat"):
            return cls(dialect, "%s")
        return None  # pragma: no cover - a driver with another style: the generic path

    def sql(self, table: Table, replace: bool) -> str:
        key = (self.dialect.name, table.name, replace)
        statement = _STATEMENTS.get(key)
        if statement is None:
            q = self.dialect.identifier_preparer.quote
            cols = [c.name for c in table.columns]
            keys = [c.name for c in table.primary_key.columns]
            if replace:
                sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in cols if c not in keys)
                action = f"DO UPDATE SET {sets}"
                if table.name in KEEP_ANSWER:
                    action += " WHERE " + KEEP_ANSWER[table.name].format(t=q(table.name))
            else:
                action = "DO NOTHING"
            statement = (
                f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in cols)}) "
                f"VALUES ({', '.join([self.marker] * len(cols))}) "
                f"ON CONFLICT ({', '.join(q(k) for k in keys)}) {action}"
            )
            _STATEMENTS[key] = statement
        return statement

    def insert(
        self, conn: Connection, table: Table, rows: list[tuple[Any, ...]], replace: bool = False
    ) -> None:
        if rows:
            if self.dialect.name == "postgresql":
                rows = sorted(_without_nul(rows), key=_key_of(table))
            try:
                conn.exec_driver_sql(self.sql(table, replace), rows)
            except UnicodeEncodeError:  # before the row went to the database: run them again
                conn.exec_driver_sql(self.sql(table, replace), encodable(rows))


def encodable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`rows` with every lone surrogate (U+D800 to U+DFFF alone: a reply's JSON may hold
    ``"\\ud83d"``, half an emoji) as U+FFFD, the replacement character. UTF-8 cannot encode
    one, and the driver refused the whole batch, again on every resume of the same reply.
    Rows whose statement already ran are run again: every statement here is idempotent.
    (`_recorder_main` does the same in the writer process.)"""
    return [tuple(encodable_text(v) if type(v) is str else v for v in row) for row in rows]


def _key_of(table: Table) -> Any:
    """A sort key giving a row's primary key. PostgreSQL locks each key as a row goes in:
    writers that insert the same keys (prompts are shared by every run) must take them in
    one order, or two of them can each wait for the other (a deadlock)."""
    cols = [c.name for c in table.columns]
    return itemgetter(*(cols.index(c.name) for c in table.primary_key.columns))


def pg_text(text: str) -> str:
    """`text` with NUL (U+0000) as U+FFFD, the replacement character: PostgreSQL text cannot
    hold a NUL, and a reply with one would otherwise fail every write of its batch, on every
    resume. (A NUL sent as JSON's escape, ``\\u0000``, stays that escape in the raw reply:
    only decoded text has the NUL itself.)"""
    return text.replace("\x00", "\ufffd")


def _without_nul(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`rows` with `pg_text` applied to the text of every row that has a NUL."""
    out = rows
    for i, row in enumerate(rows):
        if any(type(v) is str and "\x00" in v for v in row):
            if out is rows:
                out = list(rows)
            out[i] = tuple(pg_text(v) if type(v) is str else v for v in row)
    return out
