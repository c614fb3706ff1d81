"""``deceptwatch scenarios lint``: library hygiene checks over scenario files or suites."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deceptwatch._errors import InputError
from deceptwatch.cli._app import err, handle_errors, out, path_value, print_json, scenarios_app


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
    from deceptwatch.scenarios import load_path, load_suites
    from deceptwatch.scenarios._lint import lint_records
    from deceptwatch.scenarios._loader import check_unique

    if paths and suite:
        raise InputError("give PATH arguments or --suite, not both", hint="run lint twice")
    if paths:
        records = check_unique(r for p in paths for r in load_path(p))
    else:
        records = load_suites(suite or ["all"])
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
