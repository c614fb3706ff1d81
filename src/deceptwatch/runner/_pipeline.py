"""The two ends of a model's pass: where trials come from, and where results go.

`TrialSource` expands trials lazily, in chunks, drops those the store already holds (linking
them to the run instead), and hands the rest to the workers one at a time from a deque: no
queue operation, future or task switch per trial.

`GroupWriter` collects finished trials and writes them with one transaction per batch, on a
worker thread. A batch is everything that has accumulated when the writer gets its turn:
once `batch_size` rows wait, at the latest every `flush_interval` seconds while any wait,
and at the end. Rows that finish while a commit is under way join the next batch, so batches
grow by themselves when commits are slow (group commit) instead of the loop queueing behind
them; and a big transaction costs SQLite far less per row than many small ones (each commit
rewrites every index page it touched). Workers wait only while `max_pending` rows wait,
which bounds the memory held.

A row counts as stored once its transaction has committed; a crash loses at most the rows
still waiting, which a resume runs again. A failed write stores nothing of its batch; the
writer then drops every later batch too and the run stops: those trials run again on resume.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator

from deceptwatch.scenarios import Trial
from deceptwatch.store import Store, TrialRow


class TrialSource:
    """The trials still to run, `chunk` at a time, checked against the store.

    The producer keeps between one and two chunks of checked trials in a deque ahead of the
    workers; a worker takes one with a ``popleft`` and waits only when the deque is empty.
    """

    def __init__(
        self,
        trials: Iterator[Trial],
        *,
        store: Store,
        run_id: str,
        chunk: int,
        stopped: Callable[[], bool],
        on_cached: Callable[[int], None],
        model_id: str | None = None,
    ) -> None:
        self._trials = trials
        self._model_id = model_id
        self._store = store
        self._run_id = run_id
        self._chunk = max(1, chunk)
        self._stopped = stopped
        self._on_cached = on_cached
        self._ready: collections.deque[Trial] = collections.deque()
        self._more = asyncio.Event()  # trials are ready, or there will be no more
        self._low = asyncio.Event()  # fewer than a chunk is ready: check the next one
        self._low.set()
        self._ended = False

    async def produce(self) -> None:
        """Check chunks of trials against the store until they run out or the run stops.

        When the store holds no trial of this model at all (a first run), nothing can be
        done already, and the chunks go to the workers unchecked.
        """
        try:
            fresh = self._model_id is not None and not await asyncio.to_thread(
                self._store.has_trials, self._model_id
            )
            while not self._stopped():
                if len(self._ready) >= self._chunk:
                    self._low.clear()
                    await self._low.wait()
                    continue
                chunk = [t for _, t in zip(range(self._chunk), self._trials, strict=False)]
                if not chunk:
                    break
                if fresh:
                    done: set[str] = set()
                else:
                    ids = [t.id for t in chunk]
                    done = await asyncio.to_thread(self._store.done_trial_ids, ids)
                if done:
                    await asyncio.to_thread(self._store.link_trials, self._run_id, sorted(done))
                    self._on_cached(len(done))
                    chunk = [t for t in chunk if t.id not in done]
                if chunk and not self._stopped():
                    self._ready.extend(chunk)
                    self._more.set()
        finally:
            self._ended = True
            self._more.set()

    async def next(self) -> Trial | None:
        """The next trial to run, or None when there are no more."""
        ready = self._ready
        while not ready:
            if self._ended:
                return None
            self._more.clear()
            await self._more.wait()
        trial = ready.popleft()
        if len(ready) < self._chunk and not self._low.is_set():
            self._low.set()
        return trial


class GroupWriter:
    """Finished trials to the store, in batches that grow while a commit is under way."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        batch_size: int,
        max_pending: int,
        flush_interval: float,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._batch_size = max(1, batch_size)
        self._max_pending = max(self._batch_size, max_pending)
        self._flush_interval = flush_interval
        self._on_error = on_error
        self._pending: list[TrialRow] = []
        self._due = asyncio.Event()  # write what is pending now
        self._room = asyncio.Event()  # fewer than max_pending rows wait
        self._room.set()
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self.error: Exception | None = None
        self.written = 0
        self.batches: list[int] = []  # sizes of the committed batches

    def add(self, row: TrialRow) -> bool:
        """Queue a finished trial. True when the caller should await `yield_to_writer`:
        a batch just became due (give the writer its turn) or too many rows wait."""
        pending = self._pending
        pending.append(row)
        n = len(pending)
        if n < self._batch_size:
            return False
        self._due.set()
        if n >= self._max_pending:
            self._room.clear()
            return True
        return n == self._batch_size

    async def yield_to_writer(self) -> None:
        """Let the writer take its batch; wait while `max_pending` rows are waiting."""
        if self._room.is_set():
            await asyncio.sleep(0)
        else:
            await self._room.wait()

    def _tick(self) -> None:
        if self._pending:
            self._due.set()
        self._timer = asyncio.get_running_loop().call_later(self._flush_interval, self._tick)

    async def run(self) -> None:
        """The writer task: write batches until `close` is called and nothing is left."""
        self._timer = asyncio.get_running_loop().call_later(self._flush_interval, self._tick)
        try:
            while True:
                await self._due.wait()
                self._due.clear()
                if self._pending:
                    batch, self._pending = self._pending, []
                    self._room.set()
                    await self._write(batch)
                    if self._closing or len(self._pending) >= self._batch_size:
                        self._due.set()
                elif self._closing:
                    return
        finally:
            if self._timer is not None:
                self._timer.cancel()

    async def _write(self, batch: list[TrialRow]) -> None:
        if self.error is not None:
            return  # not stored, so a resume runs these trials again
        try:
            await asyncio.to_thread(self._store.write_trials, self._run_id, batch)
        except Exception as exc:
            self.error = exc
            self._on_error(exc)
        else:
            self.written += len(batch)
            self.batches.append(len(batch))

    def close(self) -> None:
        """No more rows will come: write what is left, then let `run` return."""
        self._closing = True
        self._due.set()
        self._room.set()
