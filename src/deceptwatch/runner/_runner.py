"""The runner: asyncio with a bounded pool of workers, retries, resume, batched recording.

Trials are expanded lazily and checked against the store in chunks: a trial that already has
an outcome other than `error` is linked to the run and skipped, so running the same command
again resumes and never counts anything twice (a model with no stored trial at all skips the
check). Each call is retried with exponential backoff and jitter, waiting at least as long as
the server's ``Retry-After`` (a server that asks for more than `retry_after_limit`, ten
minutes, fails the call at once rather than being asked again early); each attempt has a time
limit (`attempt_timeout`, or a backend's own ``timeout`` plus `ATTEMPT_MARGIN` when that is
longer, kept by one watchdog for all workers). A run that stops wakes its workers from their
backoff, and sends no further attempt. A call that still fails is recorded as `error` with its reason.
When calls keep failing in a row (an unreachable endpoint), the run stops early, keeps what
it has, and is recorded as incomplete.

Finished trials are written by a group-committing writer thread (see `_pipeline`): one
transaction for all that waits, at least every `flush_interval` seconds. What the harness
does per trial is kept small, since at thousands of trials a second it is the harness, not
the model, that sets the pace: the JSON of a block's factors and choice order, and the score
of a short reply, are computed once per distinct value; backends that ignore the metadata get
none built; and the garbage collector runs less often while trials run (see `_gc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from deceptwatch._deadlines import Deadlines
from deceptwatch._errors import BackendError, StoreError
from deceptwatch._ids import canonical_json, content_hash
from deceptwatch.backends import Backend, GenerateRequest, GenerateResponse, GenerationConfig
from deceptwatch.envs._episode import run_episode
from deceptwatch.runner._gc import fewer_collections
from deceptwatch.runner._pipeline import GroupWriter, TrialSource
from deceptwatch.runner._reply import checked_reply, named, retry_seconds, waits_too_long
from deceptwatch.scenarios import ScenarioRecord, Trial, expand
from deceptwatch.scoring import ERROR, Scored, score_choice
from deceptwatch.store import Store, TrialRow, model_id

CHUNK = 1024
T = TypeVar("T")
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class RunnerConfig:
    """How to run: everything here except `concurrency` and the retry settings enters the
    run id (they change how fast results arrive, not what they are)."""

    seed: int = 0
    epochs: int = 1
    limit: int | None = None
    concurrency: int = 32
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    max_retries: int = 5
    retry_base: float = 0.5
    retry_cap: float = 60.0  # the longest backoff of our own; a Retry-After may be longer
    retry_after_limit: float = 600.0  # a longer Retry-After fails the call instead
    attempt_timeout: float = 600.0  # at least; see `attempt_limit`
    abort_after: int = 0  # consecutive failed trials before giving up; 0: max(16, 2*concurrency)
    # Recording (see _pipeline.GroupWriter): a write starts every `flush_interval` seconds,
    # or sooner once `batch_size` finished trials wait, and takes all that wait; workers pause
    # while `max_pending` wait (0: 2 * batch_size). A crash loses only what waits: about
    # `flush_interval` seconds of work, which a resume runs again.
    batch_size: int = 4096
    max_pending: int = 0
    flush_interval: float = 0.5


@dataclass
class Counters:
    total: int = 0
    done: int = 0
    cached: int = 0
    errors: int = 0
    by_outcome: dict[str, int] = field(
        default_factory=lambda: {"aligned": 0, "defect": 0, "other": 0, "error": 0}
    )
    model: str = ""


@dataclass
class ModelRun:
    spec: str
    model_id: str
    attempted: int
    cached: int
    errors: int
    aborted: bool
    abort_reason: str | None
    # The run stopped on errors that are never retried (a prompt too long for the model, a
    # rejected request): rerunning the same command would stop the same way.
    needs_fix: bool = False
    # Failed trials by error kind, with the first message of each kind, and how many failed
    # with an error that is never retried (a rerun would fail them again).
    error_kinds: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    permanent_errors: int = 0

    def commonest_error(self) -> str:
        """Why trials failed, as a clause for the run's message ("; 4 with timeout (and 1
        other), e.g. ..."): the commonest kind, how many trials it failed, its first message;
        "" when none failed."""
        if not self.error_kinds:
            return ""
        kind, n = max(self.error_kinds.items(), key=lambda kv: kv[1])
        lines = self.error_examples[kind].strip().splitlines()
        example = lines[0][:200] if lines else "(no message)"
        others = self.errors - n
        more = f" (and {others} other{'s' if others != 1 else ''})" if others else ""
        return f"; {n} with {kind}{more}, e.g. {example}"


ProgressHook = Callable[[Counters], None]


def run_id_for(
    records: Sequence[ScenarioRecord], backends: Sequence[Backend], config: RunnerConfig
) -> str:
    return content_hash(
        {
            "models": [b.cache_key() for b in backends],
            "scenarios": [r.content_hash for r in records],
            "seed": config.seed,
            "epochs": config.epochs,
            "limit": config.limit,
            "generation": config.generation.model_dump(mode="json"),
        }
    )


# Seconds the runner's time limit leaves a backend with a time limit of its own (``-o
# timeout=``) to report its timeout itself, with its own message.
ATTEMPT_MARGIN = 30.0


def attempt_limit(config: RunnerConfig, backend: Backend) -> float:
    """The runner's time limit on one attempt at `backend`: `config`'s, or longer for a
    backend whose own ``timeout`` is longer (a slow model run with ``-o timeout=900``)."""
    own = getattr(backend, "timeout", None)
    if isinstance(own, int | float) and not isinstance(own, bool) and own > 0:
        return max(config.attempt_timeout, float(own) + ATTEMPT_MARGIN)
    return config.attempt_timeout


class _RowMaker:
    """Builds the stored row of a finished trial. The JSON of a block's factors and choice
    order is the same for every trial of the block (and recurs across blocks), so it is
    encoded once per distinct value."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._factors: dict[tuple[tuple[str, str], ...], str] = {}
        self._orders: dict[tuple[str, ...], str] = {}
        self._usages: dict[tuple[tuple[str, int], ...], str] = {}
        self._scores: dict[tuple[str, str, tuple[str, ...]], Scored] = {}

    @staticmethod
    def _remember(cache: dict[Any, T], key: Any, value: T) -> T:
        if len(cache) >= 65536:  # a bound, in case a run has that many distinct values
            cache.clear()
        cache[key] = value
        return value

    def _factors_json(self, factors: tuple[tuple[str, str], ...]) -> str:
        text = self._factors.get(factors)
        if text is None:
            text = self._remember(
                self._factors, factors, canonical_json([list(f) for f in factors])
            )
        return text

    def _order_json(self, order: tuple[str, ...]) -> str:
        text = self._orders.get(order)
        if text is None:
            text = self._remember(self._orders, order, canonical_json(list(order)))
        return text

    def _score(self, trial: Trial, text: str) -> Scored:
        """`score_choice`. Short replies repeat ("B", "Answer: (B)"), and their score depends
        only on the text and the block's options as shown, so it is looked up once each."""
        if len(text) > 64:
            return score_choice(trial, text)
        key = (text, trial.scenario_hash, trial.choice_order)
        scored = self._scores.get(key)
        if scored is None:
            scored = self._remember(self._scores, key, score_choice(trial, text))
        return scored

    def _usage_json(self, usage: dict[str, int]) -> str:
        """``json.dumps(usage)``; token counts repeat, so the text is reused."""
        key = tuple(usage.items())
        text = self._usages.get(key)
        if text is None:
            text = self._remember(self._usages, key, json.dumps(usage))
        return text

    def row(
        self,
        trial: Trial,
        response: GenerateResponse | None,
        error: BackendError | None,
        attempts: int,
        latency: float,
        scored: Scored | None = None,
    ) -> TrialRow:
        """`scored`, when given, is the outcome already read (an environment episode's)."""
        messages_json = trial.prompt_json
        if response is not None:
            scored = scored or self._score(trial, response.text)
            outcome, choice, label, method = (
                scored.outcome,
                scored.choice,
                scored.label,
                scored.method,
            )
            raw = response.raw
        else:
            outcome, choice, label, method = ERROR, None, None, "backend_error"
            raw = error.raw if error is not None else None
        return TrialRow(
            trial_id=trial.id,
            model_id=self.model_id,
            block_id=trial.block_id,
            scenario_hash=trial.scenario_hash,
            scenario_id=trial.scenario_id,
            family=trial.family,
            condition=trial.condition,
            audit_probability=trial.audit_probability,
            cue_index=trial.cue_index,
            epoch=trial.epoch,
            factors_json=self._factors_json(trial.factors),
            choice_order_json=self._order_json(trial.choice_order),
            aligned=trial.aligned,
            defect=trial.defect,
            prompt_hash=hashlib.sha256(messages_json.encode("utf-8")).hexdigest(),
            messages_json=messages_json,
            seed=trial.seed,
            text=response.text if response is not None else None,
            raw=raw,
            choice_probs_json=(
                json.dumps(response.choice_probs)
                if response is not None and response.choice_probs
                else None
            ),
            model_reported=response.model if response is not None else None,
            usage_json=(
                self._usage_json(response.usage)
                if response is not None and response.usage
                else None
            ),
            error_kind=error.kind if error is not None else None,
            error=error.message if error is not None else None,
            attempts=attempts,
            latency_ms=latency * 1000.0,
            outcome=outcome,
            choice=choice,
            label=label,
            method=method,
        )


class _Run:
    """State of one model's pass over the trials."""

    def __init__(
        self,
        *,
        run_id: str,
        backend: Backend,
        records: Sequence[ScenarioRecord],
        store: Store,
        config: RunnerConfig,
        counters: Counters,
    ) -> None:
        self.run_id = run_id
        self.backend = backend
        self.records = records
        self.store = store
        self.config = config
        self.counters = counters
        self.model_key = canonical_json(backend.cache_key())
        self.model_id = model_id(backend.cache_key())
        self.rows = _RowMaker(self.model_id)
        self.attempt_timeout = attempt_limit(config, backend)
        self.deadlines = Deadlines(self.attempt_timeout)
        self.stopping = asyncio.Event()  # set with `abort_reason`: wakes workers in backoff
        self.uses_metadata = bool(getattr(backend, "uses_metadata", True))
        self.consecutive_failures = 0
        self.abort_after = config.abort_after or max(16, 2 * config.concurrency)
        self.abort_reason: str | None = None
        self.needs_fix = False
        self.attempted = 0
        self.cached = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.error_examples: dict[str, str] = {}
        self.permanent_errors = 0
        self.source = TrialSource(
            expand(
                records,
                model=self.model_key,
                seed=config.seed,
                epochs=config.epochs,
                limit=config.limit,
                generation=config.generation.model_dump(mode="json"),
            ),
            store=store,
            run_id=run_id,
            chunk=CHUNK,
            stopped=self.stopped,
            on_cached=self._cached,
            model_id=self.model_id,
        )
        self.writer = GroupWriter(
            store,
            run_id,
            batch_size=config.batch_size,
            max_pending=config.max_pending or 2 * config.batch_size,
            flush_interval=config.flush_interval,
            on_error=self._write_failed,
        )

    def stopped(self) -> bool:
        """Whether the run gave up (a method, not a property: it changes across awaits)."""
        return self.abort_reason is not None

    def _cached(self, n: int) -> None:
        self.cached += n
        self.counters.cached += n
        self.counters.done += n

    def _write_failed(self, exc: Exception) -> None:
        self.give_up(f"writing to the store failed: {type(exc).__name__}: {exc}")

    def give_up(self, reason: str) -> None:
        """Stop the run for `reason`: no new trial starts, and none is tried again."""
        self.abort_reason = reason
        self.stopping.set()

    def request(self, trial: Trial) -> GenerateRequest:
        labels = trial.labels
        if not self.uses_metadata:
            return GenerateRequest(
                trial.messages,
                tuple(zip(labels, trial.choice_texts, strict=True)),
                self.config.generation,
                trial.backend_seed,
                trial.id,
                _NO_METADATA,
                trial.prompt_json,
            )
        order = trial.choice_order
        return GenerateRequest(
            messages=trial.messages,
            choices=tuple(zip(labels, trial.choice_texts, strict=True)),
            config=self.config.generation,
            seed=trial.backend_seed,
            trial_id=trial.id,
            metadata={
                "condition": trial.condition,
                "audit_probability": trial.audit_probability,
                "scenario_id": trial.scenario_id,
                "family": trial.family,
                "factors": dict(trial.factors),
                "aligned_label": labels[order.index(trial.aligned)],
                "defect_label": labels[order.index(trial.defect)],
            },
            messages_json=trial.prompt_json,
        )

    async def call(
        self, trial: Trial, task: asyncio.Task[Any], request: GenerateRequest | None = None
    ) -> tuple[GenerateResponse | None, BackendError | None, int]:
        """One call with retries; `request` defaults to the trial's own (an episode sends
        one per step)."""
        cfg = self.config
        request = request or self.request(trial)
        jitter: random.Random | None = None
        last: BackendError | None = None
        deadlines = self.deadlines
        for attempt in range(cfg.max_retries + 1):
            deadlines.arm(task)
            try:
                return checked_reply(await self.backend.generate(request)), None, attempt + 1
            except BackendError as exc:
                last = exc
            except asyncio.CancelledError as exc:
                if deadlines.timed_out(task):
                    last = BackendError(
                        f"no reply within {self.attempt_timeout:g}s",
                        kind="timeout",
                        retryable=True,
                    )
                elif task.cancelling():  # the run is cancelled (Ctrl-C): not this trial's
                    raise
                else:  # nobody cancelled the worker: the backend's own (an inner task's)
                    last = BackendError(
                        f"{named(exc)} raised by the backend, which nothing had cancelled",
                        kind="exception",
                        retryable=False,
                    )
            except TimeoutError as exc:  # a backend's own time limit, not the runner's
                last = BackendError(
                    f"no reply within the backend's own time limit ({named(exc)})",
                    kind="timeout",
                    retryable=True,
                )
            except Exception as exc:  # a bug in a backend must not lose the trial
                last = BackendError(
                    f"{type(exc).__name__}: {exc}", kind="exception", retryable=False
                )
            finally:
                deadlines.disarm(task)
            if not last.retryable or attempt == cfg.max_retries or self.stopped():
                return None, last, attempt + 1
            jitter = jitter or random.Random(trial.backend_seed + attempt)
            delay = min(cfg.retry_cap, cfg.retry_base * 2**attempt) * (0.5 + 0.5 * jitter.random())
            wait = retry_seconds(last.retry_after)
            if wait is not None:
                if wait > cfg.retry_after_limit:
                    return None, waits_too_long(last, wait, cfg.retry_after_limit), attempt + 1
                delay = max(delay, wait)
            # Woken early when the run stops: then no further attempt is sent.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopped():
                return None, last, attempt + 1
        return None, last, cfg.max_retries + 1  # pragma: no cover - loop always returns

    async def work(self) -> None:
        source, writer, counters, by_outcome = (
            self.source,
            self.writer,
            self.counters,
            self.counters.by_outcome,
        )
        perf = time.perf_counter
        task = asyncio.current_task()
        assert task is not None
        while True:
            trial = await source.next()
            if trial is None:
                return
            if self.stopped():
                continue  # drain what was handed out; unstored, a resume runs it
            t0 = perf()
            scored = None
            if trial.environment is None:
                response, error, attempts = await self.call(trial, task)
            else:  # a simulated environment: one episode of many calls
                response, error, attempts, scored = await run_episode(self, trial, task)
            if error is not None and self.stopped() and error.retryable:
                continue  # stopped mid-retry: leave it unstored, so that a resume runs it
            row = self.rows.row(trial, response, error, attempts, perf() - t0, scored)
            self.attempted += 1
            counters.done += 1
            by_outcome[row.outcome] += 1
            if error is not None:
                self.errors += 1
                counters.errors += 1
                self.error_kinds[error.kind] = self.error_kinds.get(error.kind, 0) + 1
                self.error_examples.setdefault(error.kind, error.message)
                self.permanent_errors += not error.retryable
                self.consecutive_failures += 1
                if self.consecutive_failures >= self.abort_after and self.abort_reason is None:
                    # "after 5 retries" would be wrong for an error that is never retried
                    # (a prompt too long for the model), so the last trial's attempts.
                    self.give_up(
                        f"{self.consecutive_failures} trials in a row failed, the last after "
                        f"{attempts} attempt{'' if attempts == 1 else 's'}: {error.message}"
                    )
                    self.needs_fix = not error.retryable
            else:
                self.consecutive_failures = 0
            if writer.add(row):
                await writer.yield_to_writer()

    def workers(self) -> int:
        """How many trials run at once: `concurrency`, or fewer for a backend that holds
        fewer connections (``-o max_connections=``). A worker that waited for a pooled
        connection would spend that wait on its attempt's time limit."""
        n = self.config.concurrency
        connections = getattr(self.backend, "connections", None)
        if callable(connections):
            n = min(n, int(connections(n)))
        return max(1, n)

    async def run(self) -> ModelRun:
        size_pool = getattr(self.backend, "set_concurrency", None)
        if callable(size_pool):
            size_pool(self.config.concurrency)
        with self.store.writer_process():
            writing = asyncio.create_task(self.writer.run())
            watchdog = asyncio.create_task(self.deadlines.watch())
            try:
                tasks = [asyncio.create_task(self.work()) for _ in range(self.workers())]
                tasks.append(asyncio.create_task(self.source.produce()))
                try:
                    await asyncio.gather(*tasks)
                except BaseException:
                    # gather leaves the other workers running: they would go on calling
                    # the model after the run has ended, with nothing to record their work
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
            finally:
                watchdog.cancel()
                self.writer.close()
                await writing
        if self.writer.error is not None:
            exc = self.writer.error
            raise StoreError.of(exc, " while recording trials") from exc
        return ModelRun(
            spec=self.backend.spec,
            model_id=self.model_id,
            attempted=self.attempted,
            cached=self.cached,
            errors=self.errors,
            aborted=self.stopped(),
            abort_reason=self.abort_reason,
            needs_fix=self.needs_fix,
            error_kinds=dict(self.error_kinds),
            error_examples=dict(self.error_examples),
            permanent_errors=self.permanent_errors,
        )


async def run_trials(
    *,
    run_id: str,
    records: Sequence[ScenarioRecord],
    backends: Sequence[Backend],
    store: Store,
    config: RunnerConfig,
    counters: Counters,
    on_progress: ProgressHook | None = None,
    progress_interval: float = 0.1,
) -> list[ModelRun]:
    """Run every trial of `records` on each backend in turn; returns one `ModelRun` each."""
    results: list[ModelRun] = []
    stop = asyncio.Event()

    async def tick() -> None:
        while not stop.is_set():
            if on_progress is not None:
                on_progress(counters)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), progress_interval)

    ticker = asyncio.create_task(tick())
    try:
        with fewer_collections():
            for backend in backends:
                counters.model = backend.spec
                run = _Run(
                    run_id=run_id,
                    backend=backend,
                    records=records,
                    store=store,
                    config=config,
                    counters=counters,
                )
                results.append(await run.run())
                if callable(getattr(backend, "connections", None)):
                    # Its pool is closed before the next model opens one: the limit on open
                    # files is checked for one model's connections (see `preflight`). It
                    # opens again if used after the run.
                    await backend.aclose()
    finally:
        stop.set()
        await ticker
        if on_progress is not None:
            on_progress(counters)
    return results


def describe_models(
    backends: Sequence[Backend],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(b.spec, b.cache_key(), b.describe()) for b in backends]
