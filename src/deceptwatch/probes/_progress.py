"""Progress of the model work behind probes, for whoever wants to show it.

The probe functions take no progress argument. Their long loops (the choice scoring in
`behaviour`, the forward passes in `iter_activations`) each start a task with `started`,
and advance it batch by batch. The task goes to the sink set for the current context by
`reporting`, as the CLI and ``monitor --probes`` set one that draws a bar on stderr.
Without a sink, a task costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Advance = Callable[[int], None]
"""Called with the number of items just done."""
Sink = Callable[[str, int], Advance]
"""Called with a task's label and its total number of items; returns its `Advance`."""

_SINK: ContextVar[Sink | None] = ContextVar("deceptwatch_probe_progress", default=None)


def _ignore(n: int) -> None:
    return None


@contextmanager
def reporting(sink: Sink | None) -> Iterator[None]:
    """Send the probe tasks started within the block to `sink` (None: to nowhere)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def started(label: str, total: int) -> Advance:
    """Start a task of `total` items: the current sink's `Advance`, or one that does nothing."""
    sink = _SINK.get()
    return _ignore if sink is None else sink(label, total)
