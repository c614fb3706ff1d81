"""The writer process of a SQLite store (see `deceptwatch.store._recorder`).

Run as a script, ``python -I _recorder_main.py PATH BUSY_TIMEOUT_MS``, it imports the standard
library only, so that it starts in milliseconds. It reads batches from stdin. A batch is any
number of ``S`` frames, each an 8-byte little-endian length and a `marshal`-ed ``(sql, rows)``
(a statement and a chunk of its rows, run with ``executemany`` in one ``BEGIN IMMEDIATE``
transaction as they arrive), then ``C`` to commit it or ``A`` to drop it. After each batch it
writes ``K`` (committed), ``A`` (dropped) or ``E``, an 8-byte length and a UTF-8 message
(nothing of the batch was stored) to stdout. It stops at ``Q``, which its parent sends
when it is done, or at the end of stdin, when its parent dies.
"""

import marshal
import signal
import sqlite3
import struct
import sys
from typing import BinaryIO

_LENGTH = struct.Struct("<Q")


def _read(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _check(sql: str, rows: list[tuple[object, ...]]) -> None:
    """Refuse a value that is not text, a number or None. `marshal` turns any object that
    exposes a buffer (a numpy float, for one) into bytes, which SQLite would store as a blob
    in place of the number; the store has no column for bytes."""
    for row in rows:
        for value in row:
            if type(value) not in _PLAIN:
                table = sql.split("(", 1)[0].removeprefix("INSERT INTO ").strip()
                raise TypeError(
                    f"a row for {table} holds {type(value).__name__} {repr(value)[:40]}, which the "
                    "store cannot hold: pass plain text and numbers (a numpy number is sent "
                    "as its bytes)"
                )


def encodable_text(text: str) -> str:
    """`text` with any lone surrogate (U+D800 to U+DFFF alone: a reply's JSON may hold
    ``"\\ud83d"``, half an emoji) as U+FFFD, the replacement character: UTF-8 cannot encode
    one. Here, with the standard library only, for the writer process and `_rows` alike."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _encodable(value: object) -> object:
    return encodable_text(value) if type(value) is str else value


def main(path: str, busy_timeout_ms: int) -> int:
    # Stopping is the parent's to decide: on Ctrl-C, SIGTERM or SIGHUP it commits the replies
    # it holds, through us, and then closes our stdin. A scheduler that signals every process
    # of a job (and the terminal, though we are in a session of our own) must not end us
    # first. A batch sent is committed or not, never cut short.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # The pragmas of the parent's connections (`_sqlite.sqlite_setup`), which made the file
    # a WAL database before starting us.
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    failed: Exception | None = None  # what went wrong in the batch being received
    while True:
        kind = stdin.read(1)
        if kind == b"S":  # a statement and a chunk of its rows
            head = _read(stdin, _LENGTH.size)
            body = None if head is None else _read(stdin, _LENGTH.unpack(head)[0])
            if body is None:
                break  # the parent died while sending: the transaction is rolled back
            if failed is not None:
                continue  # read the rest of a failed batch, and do nothing with it
            try:
                sql, rows = marshal.loads(body)
                _check(sql, rows)
                if not conn.in_transaction:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(sql, rows)
                except UnicodeEncodeError:  # as `_rows.encodable`: lone surrogates as U+FFFD
                    conn.executemany(sql, [tuple(map(_encodable, row)) for row in rows])
            except Exception as exc:
                failed = exc
        elif kind in (b"C", b"A"):  # the end of a batch: commit it, or (A) drop it
            if failed is None and kind == b"C" and conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except Exception as exc:
                    failed = exc
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if failed is None:
                stdout.write(b"K" if kind == b"C" else b"A")
            else:
                message = f"{type(failed).__name__}: {failed}".encode("utf-8", "replace")
                stdout.write(b"E" + _LENGTH.pack(len(message)) + message)
            stdout.flush()
            failed = None
        else:
            break  # Q (the parent is done), or the end of stdin (the parent died)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
