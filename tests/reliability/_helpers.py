"""Helpers for the reliability suite: the CLI as a real process, store inspection, figures."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

CLI = [sys.executable, "-m", "deceptwatch"]
FIGURES = pytest.StashKey[dict[str, Any]]()
STORE_TABLES = ("trials", "outcomes", "responses", "run_trials", "runs", "prompts")


def add_figure(figures: dict[str, Any], key: str, value: Any) -> None:
    """Add `value` to `figures[key]`: numbers are summed, mappings summed per key."""
    if isinstance(value, Mapping):
        into = figures.setdefault(key, {})
        for k, v in value.items():
            into[k] = into.get(k, 0) + v
    elif isinstance(value, int | float):
        figures[key] = figures.get(key, 0) + value
    else:
        figures[key] = value


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`python -m deceptwatch ARGS` as a real process."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else cli_env(),
        timeout=timeout,
        check=False,
    )


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON document on stdout (failing with stderr shown if there is none)."""
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON report (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return report


def comparable(report: Mapping[str, Any]) -> dict[str, Any]:
    """A report without what legitimately differs between two runs of one command: the
    store it was written to."""
    return {k: v for k, v in report.items() if k != "db"}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of `sql` on a store (SQLite path URL or PostgreSQL URL), opened read-only for
    SQLite, so that inspecting a store never creates or changes it."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not Path(path).exists():
            return []
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return [tuple(r) for r in con.execute(sql, params)]
        finally:
            con.close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def table_counts(url: str) -> dict[str, int]:
    """Rows per table, and for the tables keyed by trial, duplicated and distinct trial ids."""
    counts: dict[str, int] = {}
    for table in STORE_TABLES:
        counts[table] = query(url, f"SELECT count(*) FROM {table}")[0][0]
    counts["distinct_trials"] = query(url, "SELECT count(DISTINCT id) FROM trials")[0][0]
    counts["duplicated_run_trials"] = query(
        url,
        "SELECT count(*) FROM (SELECT run_id, trial_id FROM run_trials "
        "GROUP BY run_id, trial_id HAVING count(*) > 1) d",
    )[0][0]
    counts["duplicated_outcomes"] = query(
        url,
        "SELECT count(*) FROM (SELECT trial_id FROM outcomes GROUP BY trial_id "
        "HAVING count(*) > 1) d",
    )[0][0]
    return counts


def stored_done(url: str) -> int:
    """Trials stored with an outcome other than `error` (what a resume skips)."""
    rows = query(url, "SELECT count(*) FROM outcomes WHERE outcome <> 'error'")
    return int(rows[0][0]) if rows else 0
