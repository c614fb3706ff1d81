"""A writer process for a SQLite store: a run's trials are committed beside it, not inside it.

Why a process: Python's ``sqlite3`` releases the GIL around each row it inserts and then takes
it back. On a thread beside a busy event loop, that is tens of thousands of hand-offs a run, and
the loop pays for each. Measured on a 2-core machine (20,160 trials of an HTTP run against a
loopback stub, in alternation with a raw aiohttp loop), committing in a process of its own
raised the run from 0.59 to 0.68 of the raw loop's rate (medians of 5). The run's side now
only turns each batch into tuples and encodes them with `marshal`, a chunk at a time.

What a commit means does not change: `Recorder.write` returns once the batch is committed and
raises `RecorderError` when nothing of it was. The process (`_recorder_main.py`, standard
library only, so that it starts in milliseconds) ignores Ctrl-C, SIGTERM and SIGHUP: the run
handles them by committing the replies it holds, through the process, before it ends. The
process stops when `close` tells it to, or when its stdin closes because this process died. A
batch it was given is then committed or not, never in part.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

_LENGTH = struct.Struct("<Q")
CHUNK_ROWS = 1000  # rows encoded and sent at a time
_SCRIPT = Path(__file__).with_name("_recorder_main.py")

Statements = list[tuple[str, list[tuple[Any, ...]]]]  # (SQL, the rows it is run for)


class RecorderError(RuntimeError):
    """A batch was not committed: SQLite refused it, or the writer process stopped."""


class Recorder:
    """A child process that commits batches of statements to one SQLite file."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._lock = threading.Lock()  # one batch at a time on the pipe
        self._closed = False

    @classmethod
    def start(cls, path: str, busy_timeout_s: float) -> Recorder | None:
        """Start a writer process for the database at `path`; None when no process can be
        started here (no Python executable known, as in some embedded interpreters)."""
        if not sys.executable:
            return None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(_SCRIPT), path, str(int(busy_timeout_s * 1000))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # out of reach of the terminal's Ctrl-C
            )
        except OSError:
            return None
        return cls(proc)

    def write(self, statements: Statements) -> None:
        """Run `statements` in one transaction in the writer process, and wait for its
        commit. Raises `RecorderError` (nothing of the batch stored) when it failed.

        The rows go in chunks of `CHUNK_ROWS`, each encoded as it is sent, so that no copy
        of the whole batch is held here, and the process inserts one chunk while the next
        is encoded."""
        with self._lock:
            if self._closed:
                raise RecorderError("the store's writer process was closed")
            stdin, stdout = self._pipes()
            unsendable: ValueError | None = None
            try:
                for sql, rows in statements:
                    for i in range(0, len(rows), CHUNK_ROWS):
                        try:
                            data = marshal.dumps((sql, rows[i : i + CHUNK_ROWS]))
                        except ValueError as exc:  # no plain type (a subclass of str, say)
                            unsendable = exc
                            break
                        stdin.write(b"S" + _LENGTH.pack(len(data)))
                        stdin.write(data)
                    if unsendable is not None:
                        break
                stdin.write(b"A" if unsendable is not None else b"C")
                stdin.flush()
                reply = stdout.read(1)
                if reply == b"E":
                    (n,) = _LENGTH.unpack(stdout.read(_LENGTH.size))
                    raise RecorderError(stdout.read(n).decode("utf-8", "replace"))
            except (OSError, struct.error):
                reply = b""
            if reply == b"A" and unsendable is not None:
                raise RecorderError(
                    f"a trial holds a value the store cannot hold ({unsendable}): pass plain "
                    "text and numbers"
                )
            if reply != b"K":
                raise RecorderError(self._stopped())

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None
        assert stdout is not None
        return stdin, stdout

    def _stopped(self) -> str:
        """Why the writer process stopped answering: its exit and the end of its stderr."""
        proc = self._proc
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"stopped with exit code {code}"
        said = b""
        if proc.stderr is not None:
            said = proc.stderr.read()[-2000:]
        last = said.decode("utf-8", "replace").strip().splitlines()[-1:]
        return f"the store's writer process {how}" + (f": {last[0]}" if last else "")

    def close(self) -> None:
        """End the writer process once any batch in progress is committed. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            proc = self._proc
            try:
                if proc.stdin is not None:
                    # Q, not just the end of the pipe: a fork of this process (multiprocessing
                    # and DataLoader workers fork on Linux) holds the pipe open too, and the
                    # process would wait for it, and this call for the process
                    proc.stdin.write(b"Q")
                    proc.stdin.close()
            except OSError:
                pass  # it already stopped
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung SQLite call
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    @property
    def pid(self) -> int:
        return self._proc.pid


def recorder_path(database: str | None, query: object) -> str | None:
    """The file a writer process may write for a SQLite URL's `database`, or None: an
    in-memory database, or one opened with URL options (``?mode=ro``, ``?uri=true``) that the
    process would not apply, keeps its writes in this process."""
    if not database or database == ":memory:" or query:
        return None
    return os.path.abspath(database)
