"""Fewer runs of the cyclic garbage collector while trials run.

The runner allocates many short-lived containers per trial (messages, requests, rows) and
almost no reference cycles, so the collector's default young-generation threshold (700
allocations) makes it walk the same young objects (the trials and rows in flight) again and
again: about a tenth of the runner's time on the ``mock:`` path. While a run is in progress
the threshold is raised (never lowered) and then restored, also when runs nest or overlap in
threads. Reference counting frees everything that is not a cycle as before; cycles are
collected as before, only in larger steps.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def fewer_collections(young: int = YOUNG_THRESHOLD) -> Iterator[None]:
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            g0, g1, g2 = _saved
            if g0 > 0:  # 0: the collector is disabled by threshold; leave it so
                gc.set_threshold(max(g0, young), g1, g2)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
