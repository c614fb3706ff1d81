"""Store tables and the ordered migrations that create them.

Each migration is a frozen function of a connection; `MIGRATIONS` is applied in order and
each applied version is recorded in ``schema_migrations``. The current tables (used by the
queries) are those that the migrations produce; a test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    inspect,
    text,
)

from deceptwatch._errors import InputError


def _v1(metadata: MetaData) -> None:
    Table(
        "models",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("spec", Text, nullable=False),
        Column("cache_key_json", Text, nullable=False),
        Column("description_json", Text, nullable=False),
        Column("created_at", String(32), nullable=False),
    )
    Table(
        "scenarios",
        metadata,
        Column("content_hash", String(64), primary_key=True),
        Column("id", Text, nullable=False),
        Column("version", Integer, nullable=False),
        Column("family", String(64), nullable=False),
        Column("suite", Text, nullable=False),
        Column("body_json", Text, nullable=False),
        Column("created_at", String(32), nullable=False),
        Index("ix_scenarios_id", "id"),
    )
    Table(
        "prompts",
        metadata,
        Column("hash", String(64), primary_key=True),
        Column("messages_json", Text, nullable=False),
    )
    Table(
        "trials",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("model_id", String(64), nullable=False),
        Column("block_id", String(64), nullable=False),
        Column("scenario_hash", String(64), nullable=False),
        Column("scenario_id", Text, nullable=False),
        Column("family", String(64), nullable=False),
        Column("condition", String(64), nullable=False),
        Column("audit_probability", Float, nullable=True),
        Column("cue_index", Integer, nullable=False),
        Column("epoch", Integer, nullable=False),
        Column("factors_json", Text, nullable=False),
        Column("choice_order_json", Text, nullable=False),
        Column("aligned", Text, nullable=False),
        Column("defect", Text, nullable=False),
        Column("prompt_hash", String(64), nullable=False),
        Column("seed", Integer, nullable=False),
        Column("created_at", String(32), nullable=False),
        Index("ix_trials_block", "model_id", "block_id"),
    )
    Table(
        "responses",
        metadata,
        Column("trial_id", String(64), primary_key=True),
        Column("text", Text, nullable=True),
        Column("raw", Text, nullable=True),
        Column("choice_probs_json", Text, nullable=True),
        Column("model_reported", Text, nullable=True),
        Column("usage_json", Text, nullable=True),
        Column("error_kind", String(64), nullable=True),
        Column("error", Text, nullable=True),
        Column("attempts", Integer, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Column("created_at", String(32), nullable=False),
    )
    Table(
        "outcomes",
        metadata,
        Column("trial_id", String(64), primary_key=True),
        Column("outcome", String(16), nullable=False),
        Column("choice", Text, nullable=True),
        Column("label", String(4), nullable=True),
        Column("method", String(32), nullable=False),
        Column("scored_at", String(32), nullable=False),
    )
    Table(
        "runs",
        metadata,
        Column("id", String(64), primary_key=True),
        Column("created_at", String(32), nullable=False),
        Column("updated_at", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("config_json", Text, nullable=False),
        Column("n_trials", Integer, nullable=False),
        Column("n_done", Integer, nullable=False),
        Column("n_error", Integer, nullable=False),
        Column("message", Text, nullable=True),
        Column("findings_json", Text, nullable=True),
    )
    Table(
        "run_models",
        metadata,
        Column("run_id", String(64), nullable=False),
        Column("model_id", String(64), nullable=False),
        Column("position", Integer, nullable=False),
        PrimaryKeyConstraint("run_id", "model_id"),
    )
    Table(
        "run_trials",
        metadata,
        Column("run_id", String(64), nullable=False),
        Column("trial_id", String(64), nullable=False),
        PrimaryKeyConstraint("run_id", "trial_id"),
    )


def _migration_v1(conn: Connection) -> None:
    md = MetaData()
    _v1(md)
    md.create_all(conn, checkfirst=True)


def _v2(metadata: MetaData) -> None:
    """Probe scores (``monitor --probes``): a probe's score of each trial's prompt, and per
    run and model the threshold it was flagged at and the probe's findings."""
    Table(
        "probes",
        metadata,
        Column("id", String(64), primary_key=True),  # content hash of the probe's record
        Column("record_json", Text, nullable=False),
        Column("created_at", String(32), nullable=False),
    )
    Table(
        "probe_scores",
        metadata,
        Column("probe_id", String(64), nullable=False),
        Column("trial_id", String(64), nullable=False),
        Column("score", Float, nullable=True),  # NULL: the prompt could not be read
        Column("created_at", String(32), nullable=False),
        PrimaryKeyConstraint("probe_id", "trial_id"),
    )
    Table(
        "run_probes",
        metadata,
        Column("run_id", String(64), nullable=False),
        Column("model_id", String(64), nullable=False),
        Column("probe_id", String(64), nullable=False),
        Column("threshold", Float, nullable=False),
        Column("calibration", Text, nullable=False),
        Column("result_json", Text, nullable=False),
        Column("created_at", String(32), nullable=False),
        PrimaryKeyConstraint("run_id", "model_id", "probe_id"),
    )


def _migration_v2(conn: Connection) -> None:
    md = MetaData()
    _v2(md)
    md.create_all(conn, checkfirst=True)


def _v3(metadata: MetaData) -> None:
    """Trials indexed by model alone. Version 1 indexed them by (model, block), but no query
    reads a block, and block ids are hashes: each trial went into that index at a random
    place, rewriting a page of it, which made a quarter of the cost of recording a trial.
    An index on the model alone grows at its end, as trials of a model arrive, and serves
    every query that selects a model's trials."""
    trials = metadata.tables["trials"]
    old = next(i for i in trials.indexes if i.name == "ix_trials_block")
    trials.indexes.discard(old)
    Index("ix_trials_model", trials.c.model_id)


def _migration_v3(conn: Connection) -> None:
    md = MetaData()
    _v1(md)
    _v3(md)
    conn.execute(text("DROP INDEX IF EXISTS ix_trials_block"))
    next(iter(md.tables["trials"].indexes)).create(conn, checkfirst=True)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial tables", _migration_v1),
    Migration(2, "probe scores", _migration_v2),
    Migration(3, "trials indexed by model alone", _migration_v3),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def check_ours(conn: Connection, shown: str) -> None:
    """Refuse (an input error) a database with another program's ``schema_migrations``
    (other columns: Rails, golang-migrate, ... use that name too) or, without one, with
    tables named as the store's: creating the missing tables beside them, and recording the
    migrations as applied, would mix two programs' data, or break on their columns later.
    `shown` is the store's URL without its password."""
    names = set(inspect(conn).get_table_names())
    if schema_migrations.name in names:
        cols = {c["name"] for c in inspect(conn).get_columns(schema_migrations.name)}
        if cols == set(schema_migrations.c.keys()):
            return
        why = f"its schema_migrations has the columns {', '.join(sorted(cols))}"
    else:
        clash = sorted(names & set(metadata.tables))
        if not clash:
            return
        why = f"it holds tables named as the store's ({', '.join(clash[:5])})"
    raise InputError(
        f"{shown} is another program's database, not a deceptwatch store: {why}",
        hint="give --db a deceptwatch store, a new file's path or an empty database",
    )


def check_not_newer(versions: Iterable[int]) -> None:
    """Refuse a store that records a migration this deceptwatch does not know."""
    newer = [v for v in versions if v > SCHEMA_VERSION]
    if newer:
        raise InputError(
            f"the store has schema version {max(newer)}, newer than this deceptwatch "
            f"({SCHEMA_VERSION})",
            hint="upgrade deceptwatch",
        )


migrations_table_metadata = MetaData()
schema_migrations = Table(
    "schema_migrations",
    migrations_table_metadata,
    Column("version", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("applied_at", String(32), nullable=False),
)

# The current tables, for queries.
metadata = MetaData()
_v1(metadata)
_v2(metadata)
_v3(metadata)
models = metadata.tables["models"]
scenarios = metadata.tables["scenarios"]
prompts = metadata.tables["prompts"]
trials = metadata.tables["trials"]
responses = metadata.tables["responses"]
outcomes = metadata.tables["outcomes"]
runs = metadata.tables["runs"]
run_models = metadata.tables["run_models"]
run_trials = metadata.tables["run_trials"]
probes = metadata.tables["probes"]
probe_scores = metadata.tables["probe_scores"]
run_probes = metadata.tables["run_probes"]
