"""The standard streams of the `deceptwatch` process: each one open (a closed one gets
/dev/null, so that no file the process opens takes its number), stdout that writes what its
encoding cannot (replaced, not an exception after a run), and JSON documents in UTF-8."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any


def isatty(stream: Any) -> bool:
    """Whether `stream` is a terminal; a stream the process started without (None: its
    descriptor was closed, as by ``>&-``) is not."""
    return stream is not None and stream.isatty()


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def json_text(data: Any) -> str:
    """`data` as a JSON document that UTF-8 can encode: a lone surrogate, which stands for
    a byte of a file name that is not UTF-8 (b"bad\\xff" reads as "bad\\udcff"), is written
    as its JSON escape, which a reader decodes back to the same name."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


def print_json(data: Any) -> None:
    """One JSON document on stdout, in UTF-8 whatever the locale's encoding (as JSON
    exchanged between programs must be: a Latin-1 stdout could not write the "—" of a
    reason)."""
    text = json_text(data)
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (a notebook's, a test's)
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()  # what went before, in order
    buffer.write(text.encode("utf-8"))
    buffer.flush()


_STANDARD = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def open_standard_streams() -> None:
    """Put /dev/null on each standard descriptor that the process started without (``>&-``,
    or a supervisor that closed it): otherwise the next file opened takes its number, the
    store's own among them, and whatever is written to "stdout" goes into the database (its
    writer process inherits it as its stdout). Python leaves such a stream None, on which
    the first print of the report or the progress bar raised AttributeError. What would have
    been printed there is discarded, as Python's print discards it."""
    for fd, name, mode in _STANDARD:
        try:
            os.fstat(fd)
            continue  # open
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDONLY if mode == "r" else os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def tolerant_stdout() -> None:
    """Text on stdout that its encoding cannot write is replaced, not an exception after the
    run (UnicodeEncodeError, exit 1: the code of an incomplete run): a Latin-1 locale cannot
    write the report's "—", and a strict UTF-8 one not the name of a file that is not
    UTF-8, which it writes back as its bytes instead, as `ls` does."""
    import codecs
    import io

    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        utf8 = codecs.lookup(stream.encoding).name == "utf-8"
        stream.reconfigure(errors="surrogateescape" if utf8 else "replace")
