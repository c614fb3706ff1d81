"""What `monitor` checks before anything is written: that each backend can work at all (its
own `check`), and that the process may open the files its connections need.

Each call in flight to an HTTP endpoint holds a socket, and a socket is an open file. Under a
limit of 1,024 files (``ulimit -n``, a common default) a run at ``--concurrency 2000`` used to
fail its connections and then whatever else opened a file (a lazy import, the store), ending
in a traceback. `preflight` raises the soft limit as far as the hard limit allows, as
servers do at start, and refuses a run that would still not fit, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deceptwatch._errors import DeceptwatchError, InputError, first_line

RESERVE = 128  # files besides the connections: the store and its WAL, lazy imports, the terminal


def raise_open_files(needed: int) -> int:
    """Raise this process's soft limit on open files (RLIMIT_NOFILE) toward `needed`, up to
    the hard limit. Returns the soft limit then in force, or `needed` where it is higher (or
    where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return needed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # pragma: no cover - e.g. above macOS's OPEN_MAX
            return soft
        soft = target
    return soft


def preflight(backends: Sequence[Any], concurrency: int) -> None:
    """Run each backend's `check` (a local checkpoint that does not load raises InputError),
    then make room for the connections of the backend that holds the most (models run one
    after another), or raise InputError saying what to lower or raise."""
    for b in backends:
        check = getattr(b, "check", None)  # a Backend need not have it (third-party ones)
        if check is None:
            continue
        try:
            check()
        except DeceptwatchError:
            raise
        except Exception as exc:  # a third-party backend's own failure: nothing is written
            raise InputError(
                f"model {getattr(b, 'spec', b)!r} failed its check before the run: "
                f"{type(exc).__name__}: {first_line(exc)}",
                hint="fix what the message names; a backend of your own should raise "
                "InputError naming the option and the fix",
            ) from exc
    sockets = 0
    for b in backends:
        count = getattr(b, "connections", None)  # backends that hold sockets say how many
        if callable(count):
            sockets = max(sockets, int(count(concurrency)))
    if not sockets:
        return
    needed = sockets + RESERVE
    limit = raise_open_files(needed)
    if limit >= needed:
        return
    fits = limit - RESERVE
    lower = f"lower --concurrency to {fits} or less, or " if fits >= 1 else ""
    raise InputError(
        f"this run holds up to {sockets:,} connections open at once, and this process may "
        f"open only {limit:,} files (its limit, ulimit -n), {RESERVE} of which it keeps for "
        "other files",
        hint=f"{lower}raise the limit: ulimit -n {needed}",
    )
