"""SIGTERM and SIGHUP handled as asyncio handles Ctrl-C, for the monitor's synchronous
entry point.

A scheduler's time limit (Slurm, Kubernetes, ``docker stop``) or a plain ``kill`` sends
SIGTERM, and a dropped SSH connection sends SIGHUP to a run left in the foreground; the
default action of either ends the process at once: the run stayed 'running' in the store,
and replies not yet committed were lost, paid for and never recorded. Under
`run_terminable` the signal cancels the run instead, as Ctrl-C does: it stops calling the
model, commits what has finished, and records the run as interrupted, so that the same
command resumes it. Then `Terminated` is raised: a SystemExit with the status the signal's
default action gives (128 + its number: 143 for SIGTERM, 129 for SIGHUP).

A signal that is ignored (SIGHUP under ``nohup``) or handled by the program that calls the
monitor keeps that handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(SystemExit):
    """A signal stopped a run; what had finished was committed first."""

    def __init__(self, signum: int = int(signal.SIGTERM)) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _may_handle(signum: int) -> bool:
    """Only in the main thread (signals reach no other), and only where nobody else has
    set a handler: a program that handles the signal itself, or ignores it, keeps that."""
    return (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signum) is signal.SIG_DFL
    )


def run_terminable(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with SIGTERM or SIGHUP cancelling `main` (once: a second signal
    could cut its clean-up short) and then raising `Terminated`."""
    received: int | None = None

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            nonlocal received
            if received is None:
                received = signum
                task.cancel()

        installed = []
        for signum in SIGNALS:
            if _may_handle(signum):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, on_signal, int(signum))  # not on Windows
                    installed.append(signum)
        try:
            return await main
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)  # back to the default action

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if received is not None:
            raise Terminated(received) from None
        raise
