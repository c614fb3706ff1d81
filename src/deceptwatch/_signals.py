"""SIGTERM handled as asyncio handles Ctrl-C, for the monitor's synchronous entry point.

A scheduler's time limit (Slurm, Kubernetes, ``docker stop``) or a plain ``kill`` sends
SIGTERM, whose default action ends the process at once: the run stayed 'running' in the
store, and replies not yet committed were lost, paid for and never recorded. Under
`run_terminable` the signal cancels the run instead, as Ctrl-C does: it stops calling the
model, commits what has finished, and records the run as interrupted, so that the same
command resumes it. Then `Terminated` is raised: a SystemExit with status 143 (128 +
SIGTERM), the status the signal's default action gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_STATUS = 128 + int(signal.SIGTERM)


class Terminated(SystemExit):
    """SIGTERM stopped a run; what had finished was committed first."""

    def __init__(self) -> None:
        super().__init__(EXIT_STATUS)


def _may_handle_sigterm() -> bool:
    """Only in the main thread (signals reach no other), and only where nobody else has
    set a handler: a program that handles SIGTERM itself keeps its own handling."""
    return (
        hasattr(signal, "SIGTERM")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )


def run_terminable(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with SIGTERM cancelling `main` (once: a second signal could cut
    its clean-up short) and then raising `Terminated`."""
    terminated = False

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            if not terminated:
                terminated = True
                task.cancel()

        installed = False
        if _may_handle_sigterm():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, on_sigterm)  # not on Windows
                installed = True
        try:
            return await main
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGTERM)  # back to the default action

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
