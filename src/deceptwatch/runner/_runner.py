"""The runner: asyncio with a bounded pool of workers, retries, resume, batched recording.

Trials are expanded lazily and checked against the store in chunks: a trial that already has
an outcome other than `error` is linked to the run and skipped, so running the same command
again resumes and never counts anything twice. Each call is retried with exponential backoff
and jitter, waiting at least as long as the server's ``Retry-After``. A call that still fails
is recorded as `error` with its reason. When calls keep failing in a row (an unreachable
endpoint), the run stops early, keeps what it has, and is recorded as incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deceptwatch._errors import BackendError
from deceptwatch._ids import canonical_json, content_hash
from deceptwatch.backends import Backend, GenerateRequest, GenerateResponse, GenerationConfig
from deceptwatch.scenarios import ScenarioRecord, Trial, expand
from deceptwatch.scoring import ERROR, score_choice
from deceptwatch.store import Store, TrialRow, model_id

CHUNK = 1024


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
    retry_cap: float = 60.0
    attempt_timeout: float = 600.0
    abort_after: int = 0  # consecutive failed trials before giving up; 0: max(16, 2*concurrency)
    batch_size: int = 512


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


def _row(
    trial: Trial,
    mid: str,
    response: GenerateResponse | None,
    error: BackendError | None,
    attempts: int,
    latency: float,
) -> TrialRow:
    messages_json = trial.prompt_json
    if response is not None:
        scored = score_choice(trial, response.text)
        outcome, choice, label, method = scored.outcome, scored.choice, scored.label, scored.method
    else:
        outcome, choice, label, method = ERROR, None, None, "backend_error"
    return TrialRow(
        trial_id=trial.id,
        model_id=mid,
        block_id=trial.block_id,
        scenario_hash=trial.scenario_hash,
        scenario_id=trial.scenario_id,
        family=trial.family,
        condition=trial.condition,
        audit_probability=trial.audit_probability,
        cue_index=trial.cue_index,
        epoch=trial.epoch,
        factors_json=canonical_json([list(f) for f in trial.factors]),
        choice_order_json=canonical_json(list(trial.choice_order)),
        aligned=trial.aligned,
        defect=trial.defect,
        prompt_hash=hashlib.sha256(messages_json.encode("utf-8")).hexdigest(),
        messages_json=messages_json,
        seed=trial.seed,
        text=response.text if response is not None else None,
        raw=(response.raw if response is not None else (error.raw if error is not None else None)),
        choice_probs_json=(
            json.dumps(response.choice_probs)
            if response is not None and response.choice_probs
            else None
        ),
        model_reported=response.model if response is not None else None,
        usage_json=json.dumps(response.usage) if response is not None and response.usage else None,
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
        self.queue: asyncio.Queue[Trial | None] = asyncio.Queue(
            maxsize=max(64, config.concurrency * 4)
        )
        self.pending: list[TrialRow] = []
        self.writes: asyncio.Queue[list[TrialRow] | None] = asyncio.Queue(maxsize=4)
        self.consecutive_failures = 0
        self.abort_after = config.abort_after or max(16, 2 * config.concurrency)
        self.abort_reason: str | None = None
        self.write_error: Exception | None = None
        self.attempted = 0
        self.cached = 0
        self.errors = 0

    def stopped(self) -> bool:
        """Whether the run gave up (a method, not a property: it changes across awaits)."""
        return self.abort_reason is not None

    async def produce(self) -> None:
        cfg = self.config
        trials = expand(
            self.records,
            model=self.model_key,
            seed=cfg.seed,
            epochs=cfg.epochs,
            limit=cfg.limit,
            generation=cfg.generation.model_dump(mode="json"),
        )
        chunk: list[Trial] = []

        async def flush_chunk() -> None:
            ids = [t.id for t in chunk]
            done = await asyncio.to_thread(self.store.done_trial_ids, ids)
            if done:
                await asyncio.to_thread(self.store.link_trials, self.run_id, sorted(done))
                self.cached += len(done)
                self.counters.cached += len(done)
                self.counters.done += len(done)
            for t in chunk:
                if self.stopped():
                    return
                if t.id not in done:
                    await self.queue.put(t)
            chunk.clear()

        for t in trials:
            if self.stopped():
                break
            chunk.append(t)
            if len(chunk) >= CHUNK:
                await flush_chunk()
        if chunk and not self.stopped():
            await flush_chunk()
        for _ in range(self.config.concurrency):
            await self.queue.put(None)

    async def call(self, trial: Trial) -> tuple[GenerateResponse | None, BackendError | None, int]:
        cfg = self.config
        request = GenerateRequest(
            messages=trial.messages,
            choices=tuple(zip(trial.labels, trial.choice_texts, strict=True)),
            config=cfg.generation,
            seed=trial.backend_seed,
            trial_id=trial.id,
            metadata={
                "condition": trial.condition,
                "audit_probability": trial.audit_probability,
                "scenario_id": trial.scenario_id,
                "family": trial.family,
                "factors": dict(trial.factors),
                "aligned_label": trial.aligned_label,
                "defect_label": trial.defect_label,
            },
        )
        jitter: random.Random | None = None
        last: BackendError | None = None
        for attempt in range(cfg.max_retries + 1):
            try:
                async with asyncio.timeout(cfg.attempt_timeout):
                    return await self.backend.generate(request), None, attempt + 1
            except BackendError as exc:
                last = exc
            except TimeoutError:
                last = BackendError(
                    f"no reply within {cfg.attempt_timeout:g}s", kind="timeout", retryable=True
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a backend must not lose the trial
                last = BackendError(
                    f"{type(exc).__name__}: {exc}", kind="exception", retryable=False
                )
            if not last.retryable or attempt == cfg.max_retries or self.stopped():
                return None, last, attempt + 1
            jitter = jitter or random.Random(trial.backend_seed + attempt)
            delay = min(cfg.retry_cap, cfg.retry_base * 2**attempt) * (0.5 + 0.5 * jitter.random())
            if last.retry_after is not None:
                delay = max(delay, min(last.retry_after, cfg.retry_cap))
            await asyncio.sleep(delay)
        return None, last, cfg.max_retries + 1  # pragma: no cover - loop always returns

    async def work(self) -> None:
        while True:
            trial = await self.queue.get()
            if trial is None:
                return
            if self.stopped():
                continue
            t0 = time.perf_counter()
            response, error, attempts = await self.call(trial)
            if error is not None and self.stopped() and error.retryable:
                continue  # stopped mid-retry: leave it unstored, so that a resume runs it
            row = _row(trial, self.model_id, response, error, attempts, time.perf_counter() - t0)
            self.attempted += 1
            self.counters.done += 1
            self.counters.by_outcome[row.outcome] += 1
            if error is not None:
                self.errors += 1
                self.counters.errors += 1
                self.consecutive_failures += 1
                if self.consecutive_failures >= self.abort_after and self.abort_reason is None:
                    self.abort_reason = (
                        f"{self.consecutive_failures} trials in a row failed after "
                        f"{self.config.max_retries} retries; last error: {error.message}"
                    )
            else:
                self.consecutive_failures = 0
            self.pending.append(row)
            if len(self.pending) >= self.config.batch_size:
                batch, self.pending = self.pending, []
                await self.writes.put(batch)

    async def write(self) -> None:
        while True:
            batch = await self.writes.get()
            if batch is None:
                return
            if self.write_error is not None:
                continue  # not stored, so a resume runs these trials again
            try:
                await asyncio.to_thread(self.store.write_trials, self.run_id, batch)
            except Exception as exc:
                self.write_error = exc
                self.abort_reason = f"writing to the store failed: {type(exc).__name__}: {exc}"

    async def run(self) -> ModelRun:
        size_pool = getattr(self.backend, "set_concurrency", None)
        if callable(size_pool):
            size_pool(self.config.concurrency)
        writer = asyncio.create_task(self.write())
        try:
            workers = [asyncio.create_task(self.work()) for _ in range(self.config.concurrency)]
            producer = asyncio.create_task(self.produce())
            await asyncio.gather(producer, *workers)
        finally:
            if self.pending:
                await self.writes.put(self.pending)
                self.pending = []
            await self.writes.put(None)
            await writer
        if self.write_error is not None:
            raise self.write_error
        return ModelRun(
            spec=self.backend.spec,
            model_id=self.model_id,
            attempted=self.attempted,
            cached=self.cached,
            errors=self.errors,
            aborted=self.stopped(),
            abort_reason=self.abort_reason,
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
