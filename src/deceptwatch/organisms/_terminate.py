"""SIGTERM and SIGHUP during training handled as Ctrl-C is: the training stops where it is,
what it had written is removed (``staged_dir``), and `Terminated` ends the command with the
status the signal's default action gives (143, 129).

Training runs synchronously in the main thread, so the asyncio handling of
`deceptwatch._signals.run_terminable` does not apply: here the signal's handler raises
`Terminated` in the main thread, as Python's own SIGINT handler raises KeyboardInterrupt.
The same rules hold: only a signal left at its default action is handled (one ignored under
``nohup``, or handled by a program that calls this one, keeps that), only the first signal
raises (a second could cut the clean-up short), and the previous handlers come back at the
end.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

from deceptwatch._signals import SIGNALS, Terminated, _may_handle


@contextlib.contextmanager
def terminable() -> Iterator[None]:
    """Within the block, SIGTERM or SIGHUP raises `Terminated` (once) in the main thread."""
    raised: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not raised:
            raised.append(signum)
            raise Terminated(signum)

    previous: dict[int, object] = {}
    for signum in SIGNALS:
        if _may_handle(signum):
            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
