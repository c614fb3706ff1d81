"""`run_terminable`: SIGTERM (or SIGHUP) cancels the coroutine, lets it clean up, then exits
with 143 (or 129).

The signal is real (os.kill of this process), sent from inside the running coroutine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from types import FrameType

import pytest

from deceptwatch._signals import Terminated, run_terminable


def test_sigterm_cancels_the_run_lets_it_clean_up_and_exits_143() -> None:
    cleaned: list[str] = []

    async def run() -> str:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(10)
            return "finished"
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # clean-up may still await (the store's last commit)
            cleaned.append("committed")
            raise

    with pytest.raises(Terminated) as caught:
        run_terminable(run())
    assert caught.value.code == 143
    assert isinstance(caught.value, SystemExit)
    assert cleaned == ["committed"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the default is back


def test_a_second_sigterm_does_not_cut_the_clean_up_short() -> None:
    cleaned: list[str] = []

    async def run() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)  # a second cancel would interrupt this
            cleaned.append("committed")
            raise

    with pytest.raises(Terminated):
        run_terminable(run())
    assert cleaned == ["committed"]


def test_without_sigterm_the_result_and_errors_pass_through() -> None:
    async def ok() -> int:
        await asyncio.sleep(0)
        return 7

    async def fails() -> None:
        raise ValueError("boom")

    assert run_terminable(ok()) == 7
    with pytest.raises(ValueError, match="boom"):
        run_terminable(fails())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_program_that_handles_sigterm_itself_keeps_its_handler() -> None:
    got: list[int] = []

    def mine(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:

        async def run() -> str:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.05)
            return "finished"

        assert run_terminable(run()) == "finished"  # not cancelled
        assert got == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_off_the_main_thread_it_is_plain_asyncio_run() -> None:
    """Signals reach only the main thread, and a loop elsewhere cannot take a handler."""
    result: list[object] = []

    async def run() -> str:
        await asyncio.sleep(0)
        return "finished"

    thread = threading.Thread(target=lambda: result.append(run_terminable(run())))
    thread.start()
    thread.join(10)
    assert result == ["finished"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sighup_is_handled_as_sigterm_unless_ignored_as_under_nohup() -> None:
    async def run() -> str:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        return "finished"

    with pytest.raises(Terminated) as caught:
        run_terminable(run())
    assert (caught.value.code, caught.value.name) == (129, "SIGHUP")
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        assert run_terminable(run()) == "finished"
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
