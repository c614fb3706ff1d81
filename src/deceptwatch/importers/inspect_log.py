"""Import Inspect logs (``.eval`` and ``.json``) into the store, as trials with outcomes.

Each log becomes one run; each sample (× epoch) one trial of the log's model. What maps:

- **ids**: a trial id is the sha256 of the canonical JSON of ``{"source": "inspect",
  "eval_id", "sample_id", "epoch"}``, the run id likewise from the eval id, the model id
  from the model name: importing a log twice (or its ``.json`` twin) stores nothing twice.
- **prompt**: the sample's input messages (role and text) become the trial's messages;
  ``family``, ``condition``, ``pair_id``/``block_id``, ``scenario_id``, ``aligned_label``
  and ``defect_label`` are read from the sample's metadata where present, so that a log of
  paired trials is analysed with the same statistics (findings are computed on import, as
  `monitor` does). A pair is matched within its log and epoch; a log that repeats a sample
  id in an epoch, whose pair holds two samples of one condition or spans two scenarios, or
  whose scenario spans two families, is refused before any write (`_inspect_pairs`); the
  samples that were meant to be paired but found no partner are listed in the report.
  Without them: family ``imported``, condition ``baseline``, one block and scenario per
  sample (scenario id ``inspect/TASK/SAMPLE``); with a pair but no ``scenario_id``, the pair
  is the scenario. Metadata that cannot be read (a pair id that is a list, a label that is
  no letter, a list target of several letters on a sample with choices, ...) is refused,
  naming the sample and the field: see `_inspect_meta`.
- **outcome**, from the first scorer (or the one named by ``scorer``, which must be one of
  the log's scorers):
  a sample with an error, halted by a limit (token, message, time, an operator's cancel,
  ...) or invalidated is ``error``, whatever its scores say; a score whose ``answer`` is a
  letter among the sample's choices is ``aligned`` when it is the aligned letter (metadata
  ``aligned_label``, else the sample's single-letter target: Inspect's "correct" answer),
  ``defect`` when it is the defect letter (metadata ``defect_label``, else the one other
  letter of a two-choice sample), and ``other`` otherwise; a score that reports an answer
  which is no letter (or an empty one: no answer found) is ``other``; only a score without
  any ``answer`` falls back to its value: ``C`` says the target's letter was picked, and
  ``I`` (of two choices only) the other letter, each then read as above: the target may be
  the defect letter.
  Anything else (numbers, ``P``/``N``, model-graded texts) is ``other``: never ``aligned``.
- **kept as is**: everything that does not map (all scores with their explanations and
  metadata, the target, the choices, the sample metadata, the eval's task and model
  settings) goes into the response's ``raw`` field as JSON, and the run's config. A value
  JSON cannot hold (a scorer's NaN or infinity) is kept as its text, ``"nan"``.
- **completeness**: a log whose status is not ``success``, or that holds fewer samples
  than it planned (samples x epochs: a crashed ``fail_on_error`` run), is stored as an
  incomplete run, and its verdict is inconclusive, as `monitor` treats an incomplete run.
- **files**: a directory is searched for ``.eval`` and ``.json`` logs, skipping hidden
  files and directories and the manifests that Inspect's ``eval_set`` writes beside its
  logs (``eval-set.json``, ``logs.json``); a log written without its samples is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deceptwatch._errors import InputError, first_line, require
from deceptwatch._ids import canonical_json, content_hash
from deceptwatch.importers._files import visible_files
from deceptwatch.importers._inspect_meta import (
    SampleMeta,
    failure,
    letter,
    read_sample,
    target_letter,
)
from deceptwatch.importers._inspect_pairs import check_pairs

SOURCE = "inspect"
LOG_SUFFIXES = (".eval", ".json")
# the files Inspect's eval_set writes beside its logs: skipped in a directory
MANIFESTS = ("eval-set.json", "logs.json")


@dataclass
class LogReport:
    path: str
    run_id: str
    model: str
    task: str
    trials: int
    counts: dict[str, int]
    new_trials: int
    log_status: str = "success"
    expected: int = 0  # the samples (x epochs) the log planned
    incomplete: str = ""  # why the run is incomplete; "" when it is complete
    verdict: str = ""
    reason: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    # samples meant to be paired (a pair id, or a condition) that found no partner
    unpaired: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.incomplete

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "run_id": self.run_id,
            "model": self.model,
            "task": self.task,
            "trials": self.trials,
            "new_trials": self.new_trials,
            "outcomes": self.counts,
            "log_status": self.log_status,
            "expected_trials": self.expected,
            "missing_trials": max(self.expected - self.trials, 0),
            "complete": self.complete,
            "incomplete": self.incomplete or None,
            "verdict": self.verdict,
            "reason": self.reason,
            "unpaired": self.unpaired,
            "findings": self.findings,
        }


def _jsonable(obj: Any) -> Any:
    """Plain JSON of pydantic models and the rest (for `raw`): a float JSON cannot hold
    (NaN, an infinity) becomes its text, "nan" or "inf", wherever it is."""
    if hasattr(obj, "model_dump"):
        # mode="json" keeps NaN as a float: the dump goes through the checks below too
        return _jsonable(obj.model_dump(mode="json", exclude_none=True))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    return str(obj)


def _messages(sample: Any) -> list[dict[str, str]]:
    if isinstance(sample.input, str):
        return [{"role": "user", "content": sample.input}]
    return [{"role": str(m.role), "content": str(m.text)} for m in sample.input]


def map_outcome(sample: Any, scorer: str | None, meta: SampleMeta) -> tuple[str, str | None, str]:
    """(outcome, label, method) of one sample, from the score of `scorer` (None: the log has
    no scores)."""
    aligned, defect = meta.aligned, meta.defect
    n = len(sample.choices or [])
    letters = [chr(ord("A") + i) for i in range(n)]
    failed = failure(sample)
    if failed is not None:
        return "error", None, failed.method
    scores = sample.scores or {}
    if scorer is None:
        return "other", None, "inspect:unscored"
    if scorer not in scores:
        return "other", None, f"inspect:{scorer}:missing"
    score = scores[scorer]
    method = f"inspect:{scorer}"
    answer = letter(score.answer)
    if answer is not None and (not letters or answer in letters):
        if answer == aligned:
            return "aligned", answer, method
        if answer == defect:
            return "defect", answer, method
        return "other", answer, method
    if score.answer is not None:
        return "other", None, method  # an answer that is no choice letter, or none at all
    # C says the target was picked, I (of two choices) the other letter: the target may be
    # the defect letter (a log that scores how often the risky answer is given)
    truth = target_letter(sample.target, letters)
    if score.value == "C" and truth:
        picked = truth
    elif score.value == "I" and truth and n == 2:
        picked = next(x for x in letters if x != truth)
    else:
        return "other", None, method
    if picked == aligned:
        return "aligned", picked, method
    if picked == defect:
        return "defect", picked, method
    return "other", picked, method


def _scorer(log: Any, path: Path, scorer: str | None) -> str | None:
    """The scorer whose scores set the outcomes: `scorer`, which must be one of the log's,
    or the log's first (the first it declares that scored a sample; None: no scores)."""
    present: dict[str, None] = {}
    for s in log.samples:
        for name in s.scores or {}:
            present.setdefault(str(name))
    declared = [str(x.name) for x in log.eval.scorers or []]
    if scorer is not None:
        if scorer in present or (not present and scorer in declared):
            return scorer
        names = list(present) or declared
        raise InputError(
            f"{path}: --scorer {scorer!r} is not a scorer of this log ("
            + (f"its scorers: {', '.join(map(repr, names))}" if names else "it has no scores")
            + "); nothing was imported",
            hint="give --scorer one of the log's scorers, or leave it out to use the first",
        )
    for name in declared:
        if name in present:
            return name
    return next(iter(present), None)


def _incomplete(log: Any) -> tuple[int, str]:
    """The samples (x epochs) the log planned, and why it is incomplete ("" if it is not):
    a status other than success, or fewer samples than planned."""
    held = len(log.samples)
    results = log.results
    if results is not None and results.total_samples:
        planned = int(results.total_samples)
    else:
        dataset = log.eval.dataset
        n = len(dataset.sample_ids) if dataset.sample_ids is not None else dataset.samples or 0
        planned = n * (log.eval.config.epochs or 1)
    if log.status == "success" and held >= planned:
        return planned, ""
    why = f"the log's status is {log.status!r}"
    if log.error is not None and first_line(log.error.message, 160):
        why += f" ({first_line(log.error.message, 160)})"
    if held < planned:
        why += f" and it holds {held} of its {planned} samples ({planned - held} missing)"
    else:
        why += f" (it holds all {held} samples)"
    return planned, why


def _read_log(path: Path) -> Any:
    require("inspect_ai", "inspect", "importing Inspect logs")
    from inspect_ai.log import read_eval_log

    if path.name in MANIFESTS and _is_manifest(path):
        raise InputError(
            f"{path}: this is the manifest that Inspect's eval_set writes beside its logs, "
            "not a log",
            hint="give the directory that holds it, or the .eval/.json logs themselves",
        )
    try:
        log = read_eval_log(str(path))
    except FileNotFoundError:
        raise InputError(
            f"{path}: no such file", hint="give an Inspect .eval or .json log"
        ) from None
    except Exception as exc:  # the reader raises many kinds for a file that is not a log
        first = first_line(exc, 200) or type(exc).__name__
        raise InputError(
            f"{path}: not a readable Inspect log ({first})",
            hint="give a .eval or .json log written by Inspect (inspect_ai.log.write_eval_log)",
        ) from None
    if not log.samples:  # a .json log without samples has None; a .eval one, []
        unlogged = getattr(log.eval.config, "log_samples", None) is False
        raise InputError(
            f"{path}: the log holds no samples (status {log.status}"
            + (", written with log_samples=False" if unlogged else "")
            + ")",
            hint="import a log that was written with its samples",
        )
    return log


def _rows(
    log: Any, path: Path, scorer: str | None
) -> tuple[str, dict[str, Any], list[Any], tuple[int, str], list[dict[str, Any]]]:
    from deceptwatch.store._rows import TrialRow

    spec = log.eval
    model_key = {"source": SOURCE, "model": spec.model}
    model_id = content_hash(model_key)
    main = _scorer(log, path, scorer)
    rows = []
    paired = []
    for s in log.samples:
        meta = read_sample(path, s)
        paired.append(meta.block is not None)
        failed = failure(s)
        messages = _messages(s)
        messages_json = canonical_json(messages)
        outcome, label, method = map_outcome(s, main, meta)
        tid = content_hash(
            {"source": SOURCE, "eval_id": spec.eval_id, "sample_id": s.id, "epoch": s.epoch}
        )
        # A pair is matched within its epoch, as `monitor` pairs within an epoch: with
        # `--epochs 2` every pair_id names one block per epoch.
        block_id = content_hash(
            {"source": SOURCE, "eval_id": spec.eval_id, "block": meta.block, "epoch": s.epoch}
            if meta.block is not None
            else {"source": SOURCE, "eval_id": spec.eval_id, "sample_id": s.id, "epoch": s.epoch}
        )
        # the trials of a pair share their scenario: metadata scenario_id, else the pair
        scenario_key = meta.scenario if meta.scenario is not None else meta.block
        if scenario_key is None:
            scenario_key = s.id
        scenario = {"source": SOURCE, "task": spec.task, "scenario": scenario_key}
        usage = s.output.usage if s.output is not None else None
        raw = {
            "scores": _jsonable(s.scores or {}),
            "target": _jsonable(s.target),
            "choices": list(s.choices or []),
            "metadata": _jsonable(s.metadata or {}),
        }
        rows.append(
            TrialRow(
                trial_id=tid,
                model_id=model_id,
                block_id=block_id,
                scenario_hash=content_hash(scenario),
                scenario_id=f"inspect/{spec.task}/{scenario_key}",
                family=meta.family,
                condition=meta.condition,
                audit_probability=None,
                cue_index=0,
                epoch=max(int(s.epoch) - 1, 0),
                factors_json="[]",
                choice_order_json=canonical_json(
                    [chr(ord("A") + i) for i in range(len(s.choices or []))]
                ),
                aligned=meta.aligned,
                defect=meta.defect,
                prompt_hash=content_hash(messages),
                messages_json=messages_json,
                seed=0,
                text=s.output.completion if s.output is not None else None,
                raw=canonical_json(raw),
                choice_probs_json=None,
                model_reported=s.output.model if s.output is not None else None,
                usage_json=canonical_json(_jsonable(usage)) if usage is not None else None,
                error_kind=failed.kind if failed is not None else None,
                error=failed.message if failed is not None else None,
                attempts=1 + len(s.error_retries or []),
                latency_ms=float(s.total_time or 0.0) * 1000.0,
                outcome=outcome,
                choice=label,
                label=label,
                method=method,
            )
        )
    unpaired = check_pairs(path, rows, log.samples, paired)
    run_id = content_hash({"source": SOURCE, "eval_id": spec.eval_id})
    completeness = _incomplete(log)
    config = {
        "source": SOURCE,
        "path": str(path),
        "eval_id": spec.eval_id,
        "inspect_run_id": spec.run_id,
        "task": spec.task,
        "model": spec.model,
        "created": spec.created,
        "status": log.status,
        "scorer": main,
        "expected_samples": completeness[0],
        "model_generate_config": _jsonable(spec.model_generate_config),
        "task_args": _jsonable(spec.task_args),
    }
    model = {"spec": f"inspect-log:{spec.model}", "key": model_key, "config": config}
    return run_id, model, rows, completeness, unpaired


def _is_manifest(path: Path) -> bool:
    """Whether `path` (named like one) is a manifest of Inspect's eval_set, by its shape:
    ``eval-set.json`` holds the set's id and tasks; ``logs.json`` maps log file names to
    log headers. A file of either name that is anything else is read as a log."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    if path.name == "eval-set.json":
        return (
            isinstance(doc.get("eval_set_id"), str)
            and isinstance(doc.get("tasks"), list)
            and "eval" not in doc
        )
    return all(
        isinstance(v, dict) and "eval" in v and str(k).endswith(LOG_SUFFIXES)
        for k, v in doc.items()
    )


def _log_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = [
                f
                for f in visible_files(p, LOG_SUFFIXES)  # not .ipynb_checkpoints/ and the like
                if f.name not in MANIFESTS or not _is_manifest(f)
            ]
            if not found:
                raise InputError(
                    f"{p}: no .eval or .json logs in this directory",
                    hint="give Inspect log files, or a directory that holds them",
                )
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"{p}: no such file or directory", hint="give Inspect log files")
    return out


def _check_same_scorer(store: Any, path: Path, run_id: str, scorer: str | None) -> None:
    """Refuse to import again, with another scorer, a log already in the store: a trial's
    id names the log's sample and epoch, not the scorer, and a stored answer is never
    replaced, so the trials would keep the first scorer's outcomes while the report gave
    the second's."""
    prior = store.run(run_id)
    if prior is None:
        return
    before = json.loads(prior["config_json"]).get("scorer")
    if before != scorer:
        raise InputError(
            f"{path}: this log is already in the store, imported with the scorer {before!r}; "
            f"its trials keep that scorer's outcomes, so importing it with {scorer!r} would "
            "change nothing; nothing was imported",
            hint=f"import it with --scorer {before} again, or give another --db for the "
            f"{scorer!r} outcomes",
        )


def import_inspect_logs(
    paths: Sequence[str | Path], db: str | None, *, scorer: str | None = None
) -> list[LogReport]:
    """Read every log first (bad input raises before anything is written), then write one
    run per log: complete, or incomplete when the log is (see `_incomplete`)."""
    from deceptwatch.store import COMPLETE, INCOMPLETE, Store

    files = _log_files([Path(p) for p in paths])
    parsed = []
    for f in files:
        log = _read_log(f)
        parsed.append((f, *_rows(log, f, scorer)))
    reports = []
    store = Store.open(db)
    try:
        for f, run_id, model, *_ in parsed:  # before any write
            _check_same_scorer(store, f, run_id, model["config"]["scorer"])
        for f, run_id, model, rows, (expected, incomplete), unpaired in parsed:
            ids = [r.trial_id for r in rows]
            before = _stored(store, ids)
            store.begin_run(
                run_id,
                config=model["config"],
                models=[(model["spec"], model["key"], {"imported_from": "inspect"})],
                scenarios=[],
                n_trials=max(len(rows), expected),
            )
            for i in range(0, len(rows), 1000):
                store.write_trials(run_id, rows[i : i + 1000])
            counts = {"aligned": 0, "defect": 0, "other": 0, "error": 0}
            for r in rows:
                counts[r.outcome] += 1
            report = LogReport(
                path=str(f),
                run_id=run_id,
                model=model["config"]["model"],
                task=model["config"]["task"],
                trials=len(rows),
                counts=counts,
                new_trials=len(set(ids) - before),
                log_status=str(model["config"]["status"]),
                expected=expected,
                incomplete=incomplete,
                unpaired=unpaired,
            )
            _analyse(store, report, content_hash(model["key"]))
            summary = {
                "model": report.model,
                "verdict": report.verdict,
                "reason": report.reason,
                "counts": counts,
                "findings": report.findings,
            }
            store.finish_run(
                run_id,
                status=COMPLETE if report.complete else INCOMPLETE,
                message=f"imported from {f}"
                + (f"; incomplete: {incomplete}" if incomplete else ""),
                findings={"models": [summary], "complete": report.complete},
            )
            reports.append(report)
    finally:
        store.close()
    return reports


def _analyse(store: Any, report: LogReport, model_id: str) -> None:
    """The same statistics as `monitor`: findings per scenario, family and model, over the
    stored outcomes of the imported run (pairs come from the samples' ``pair_id``)."""
    import numpy as np

    from deceptwatch.evidence import decide
    from deceptwatch.scenarios import PRECURSOR_FAMILIES
    from deceptwatch.stats import TrialTable, compute_findings

    table = TrialTable.from_records(store.iter_outcomes(report.run_id, model_id))
    findings = compute_findings(
        table,
        confidence=0.95,
        alpha=0.05,
        rng=np.random.default_rng(0),
        precursor_families=PRECURSOR_FAMILIES,
    )
    verdict = decide(findings, complete=report.complete)
    report.verdict, report.reason = verdict.verdict, verdict.reason
    if report.incomplete:
        report.reason += f": {report.incomplete}"
    report.findings = [f.to_dict() for f in findings]


def _stored(store: Any, ids: Sequence[str]) -> set[str]:
    from sqlalchemy import select

    from deceptwatch.store import _schema as s

    out: set[str] = set()
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 900):
            q = select(s.trials.c.id).where(s.trials.c.id.in_(list(ids[i : i + 900])))
            out.update(conn.execute(q).scalars())
    return out
