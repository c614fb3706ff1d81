"""``deceptwatch scenarios``: validate, lint, list and show scenarios, and print their JSON
Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from deceptwatch._errors import InputError
from deceptwatch.cli._app import err, handle_errors, out, path_value, scenarios_app
from deceptwatch.cli._streams import print_json


@scenarios_app.command("validate")
@handle_errors
def scenarios_validate(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", parser=path_value, help="YAML files or directories."),
    ],
) -> None:
    """Check scenario files; report every problem with file, scenario, field and line.

    Every file is read, under every directory given: exit 2 lists the problems of all of them.
    """
    from deceptwatch.scenarios import load_paths

    records = load_paths(paths)
    err.print(f"{len(records)} scenarios valid")


@scenarios_app.command("list")
@handle_errors
def scenarios_list(
    suite: Annotated[
        str, typer.Option(metavar="SUITE", help="Built-in suite name, 'all', or a path.")
    ] = "all",
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
        table.add_row(escape(r.id), r.family, escape(r.suite), str(r.scenario.version))
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
    body = record.scenario.model_dump(
        mode="json", exclude_none=True, exclude=record.scenario.unused_fields()
    )
    if as_json:
        print_json({"suite": record.suite, "content_hash": record.content_hash, "scenario": body})
        return
    import yaml

    out.print(
        f"[bold]{escape(record.id)}[/] (suite {escape(record.suite)}, hash "
        f"{record.content_hash[:12]})",
        markup=True,
    )
    out.print(yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100), markup=False)
    trials = list(expand([record], model="preview", seed=0, limit=1))
    for t in trials:
        out.print(f"[bold]--- {t.condition}: {escape(t.cue)}[/]", markup=True, highlight=False)
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


@scenarios_app.command("lint")
@handle_errors
def scenarios_lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="PATH", parser=path_value, help="YAML files or directories."),
    ] = None,
    suite: Annotated[
        list[str] | None,
        typer.Option(
            "--suite", "-s", metavar="SUITE", help="Built-in suite name or 'all'. Repeatable."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout.")
    ] = False,
) -> None:
    """Check that pairs differ only in the cue, that no cue leaks an answer, and that choice letters are balanced.

    Exit 1 with problems listed per scenario id, 0 when clean, 2 on bad input. Without PATH or --suite: every built-in suite.
    """
    from deceptwatch.scenarios import load_paths, load_suites
    from deceptwatch.scenarios._lint import lint_records

    if paths and suite:
        raise InputError("give PATH arguments or --suite, not both", hint="run lint twice")
    records = load_paths(paths) if paths else load_suites(suite or ["all"])
    problems = lint_records(records)
    if as_json:
        print_json(
            {
                "scenarios": len(records),
                "problems": [p.as_json() for p in problems],
                "clean": not problems,
            }
        )
    else:
        current = None
        for p in problems:
            if p.where != current:
                out.print(p.where, markup=False, highlight=False)
                current = p.where
            out.print(f"  [{p.check}] {p.message}", markup=False, highlight=False)
        bad = len({p.where for p in problems})
        err.print(f"{len(records)} scenarios, {bad} with problems", markup=False)
    if problems:
        raise typer.Exit(1)
