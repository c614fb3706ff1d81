"""Per-attempt time limits, kept by one watchdog instead of a timer per call (the runner's
workers, and the ``openai:`` backend's own time limit).

``asyncio.timeout`` schedules and cancels a timer on every call (a few microseconds each, and
a heap of cancelled timers), which at thousands of calls a second is a measurable share of the
harness. Here a worker arms its deadline before an attempt and disarms it after; a watchdog
task wakes every `interval` (an eighth of the limit, at most a second) and cancels the
workers that are over. An attempt therefore ends between `timeout` and `timeout + interval`
after it began. The cancellation is turned back into a timeout where it arrives, as
``asyncio.timeout`` does: only when it is the watchdog's own, so that a cancellation from
outside (Ctrl-C, a cancelled run) still goes through.

Usage, in the task that makes the call::

    deadlines.arm(task)
    try:
        result = await call()
    except asyncio.CancelledError:
        if not deadlines.timed_out(task):
            raise
        ...  # the attempt took too long
    finally:
        deadlines.disarm(task)
"""

from __future__ import annotations

import asyncio
from typing import Any


class Deadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.interval = min(1.0, max(timeout / 8, 0.001))
        self._running: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def watch(self) -> None:
        """The watchdog; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            now = loop.time()
            for task in [t for t, end in self._running.items() if end <= now]:
                if task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def arm(self, task: asyncio.Task[Any]) -> None:
        """Start the clock of an attempt made by `task`."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        self._running[task] = loop.time() + self.timeout

    def timed_out(self, task: asyncio.Task[Any]) -> bool:
        """Called on `CancelledError` in `task`: True when the watchdog cancelled it (and
        nothing else did), so that the caller treats it as a timeout and carries on."""
        self._running.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def disarm(self, task: asyncio.Task[Any]) -> None:
        """Stop the clock. If the watchdog fired but the attempt swallowed the cancellation,
        withdraw it, so that it does not hit whatever the task awaits next."""
        self._running.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
