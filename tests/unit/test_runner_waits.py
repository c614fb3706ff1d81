"""The runner's waits: a Retry-After longer than the backoff cap is honoured (and one past
`retry_after_limit` fails the call at once), a stopping run wakes its workers from backoff
and sends nothing more, a backend's own longer timeout lengthens the runner's time limit,
and a backend holding connections is closed once its model's trials are done."""

from __future__ import annotations

import asyncio
import time

from test_runner import _Flaky, _recs, _run

from deceptwatch._errors import BackendError
from deceptwatch.backends import BaseBackend, GenerateRequest, GenerateResponse
from deceptwatch.runner import RunnerConfig
from deceptwatch.runner._runner import ATTEMPT_MARGIN, attempt_limit
from deceptwatch.store import Store


def test_a_retry_after_longer_than_the_backoff_cap_is_waited_out(
    db_url: str, minimal_yaml: str
) -> None:
    backend = _Flaky(retry_after=0.4)
    cfg = RunnerConfig(retry_base=0.001, retry_cap=0.01, concurrency=1, limit=1)
    with Store.open(db_url) as store:
        _run_id, [res], _ = _run(store, _recs(minimal_yaml), [backend], cfg)
        assert res.errors == 0
    assert backend.seen
    for times in backend.seen.values():
        assert len(times) == 2
        assert times[1] - times[0] >= 0.4  # the server's wait, not the cap's


def test_a_retry_after_past_the_limit_fails_the_call_at_once(
    db_url: str, minimal_yaml: str
) -> None:
    backend = _Flaky(retry_after=30.0)
    cfg = RunnerConfig(retry_after_limit=5.0, concurrency=1, limit=1, abort_after=100)
    t0 = time.monotonic()
    with Store.open(db_url) as store:
        run_id, [res], _ = _run(store, _recs(minimal_yaml), [backend], cfg)
        n = len(backend.seen)
        assert n >= 1
        assert res.errors == n
        assert "asks to wait 30s" in res.error_examples["http_429"]
        assert store.run_counts(run_id)["error"] == n  # recorded: a resume tries them again
    assert time.monotonic() - t0 < 5
    assert all(len(t) == 1 for t in backend.seen.values())


class _StopsMidRetry(BaseBackend):
    """The first call gets a 429 asking for a long wait; every later one a 400 (never
    retried), which stops a run with ``abort_after=1``."""

    def __init__(self) -> None:
        super().__init__("stops:")
        self.calls: list[str] = []

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.calls.append(request.trial_id)
        if len(self.calls) == 1:
            raise BackendError("HTTP 429", kind="http_429", retryable=True, retry_after=30.0)
        await asyncio.sleep(0.05)  # the first trial is in its backoff by now
        raise BackendError("HTTP 400", kind="http_400", retryable=False)


def test_a_stopping_run_wakes_from_backoff_and_sends_nothing_more(
    db_url: str, minimal_yaml: str
) -> None:
    backend = _StopsMidRetry()
    cfg = RunnerConfig(concurrency=2, abort_after=1, max_retries=5)
    t0 = time.monotonic()
    with Store.open(db_url) as store:
        run_id, [res], _ = _run(store, _recs(minimal_yaml), [backend], cfg)
        assert res.aborted
        counts = store.run_counts(run_id)
        assert counts["error"] == 1  # the 400; the trial stopped mid-retry stays unstored
        assert counts["done"] == 0
    assert time.monotonic() - t0 < 10  # not the 30 s the server asked for
    assert len(backend.calls) == 2  # no attempt after the stop


class _Slow(BaseBackend):
    """A backend with a time limit of its own (as ``-o timeout=``), longer than the
    runner's, whose replies take longer than the runner's."""

    def __init__(self, timeout: float) -> None:
        super().__init__("slow:")
        self.timeout = timeout

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        await asyncio.sleep(0.3)
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")


def test_a_backends_longer_timeout_lengthens_the_runners(db_url: str, minimal_yaml: str) -> None:
    assert attempt_limit(RunnerConfig(), _Slow(900.0)) == 900.0 + ATTEMPT_MARGIN
    assert attempt_limit(RunnerConfig(), _Slow(60.0)) == 600.0
    cfg = RunnerConfig(attempt_timeout=0.1, concurrency=1, limit=1, max_retries=0)
    with Store.open(db_url) as store:
        _run_id, [res], _ = _run(store, _recs(minimal_yaml), [_Slow(1.0)], cfg)
    assert res.errors == 0


class _Pooled(BaseBackend):
    """Holds connections (says how many); records when it is called and closed."""

    def __init__(self, spec: str, log: list[str]) -> None:
        super().__init__(spec)
        self.log = log

    def connections(self, concurrency: int) -> int:
        return concurrency

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        if not self.log or self.log[-1] != f"call {self.spec}":
            self.log.append(f"call {self.spec}")
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")

    async def aclose(self) -> None:
        self.log.append(f"close {self.spec}")


def test_each_models_pool_is_closed_before_the_next_model_runs(
    db_url: str, minimal_yaml: str
) -> None:
    log: list[str] = []
    backends = [_Pooled("one:", log), _Pooled("two:", log)]
    cfg = RunnerConfig(concurrency=1, limit=2)
    with Store.open(db_url) as store:
        _run(store, _recs(minimal_yaml), backends, cfg)
    assert log == ["call one:", "close one:", "call two:", "close two:"]
