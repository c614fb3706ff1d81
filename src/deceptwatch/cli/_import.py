"""``deceptwatch import ...``: bring question sets and logs made elsewhere into deceptwatch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from deceptwatch.cli._app import err, handle_errors, path_value, say
from deceptwatch.cli._streams import print_json
from deceptwatch.cli._typer import App

import_app = App(
    help="Import model-written-evals question sets and Inspect logs.", no_args_is_help=True
)


@import_app.command("mwe")
@handle_errors
def import_mwe_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH",
            parser=path_value,
            help="JSONL files or directories of them (hidden files and directories are skipped).",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            parser=path_value,
            help="Directory for the scenario YAML files. Without it: report only.",
        ),
    ] = None,
    flip: Annotated[
        list[Path] | None,
        typer.Option(
            "--flip",
            parser=path_value,
            help="Swap matching and not-matching answers in this file. Repeatable.",
        ),
    ] = None,
    keep: Annotated[
        list[Path] | None,
        typer.Option(
            "--keep", parser=path_value, help="Import this suspect file as written. Repeatable."
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="Precursor family for every file, instead of one from the file name."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout.")
    ] = False,
) -> None:
    """Convert model-written-evals JSONL into precursor scenarios, checking each file's polarity.

    Exit 0 when every file was imported, 1 when a suspect file was left out (pass --flip FILE or --keep FILE), 2 on bad input (nothing written).
    """
    from deceptwatch.importers.mwe import import_mwe

    reports = import_mwe(paths, out, flip=flip or [], keep=keep or [], family=family)
    suspect = [r for r in reports if r.status == "suspect"]
    if as_json:
        print_json({"out": str(out) if out else None, "files": [r.as_json() for r in reports]})
    else:
        for r in reports:
            style = {"suspect": "bold red", "unchecked": "yellow"}.get(r.status, "green")
            say(
                f"{r.status}:",
                style,
                f"{r.path}: {r.family}, {r.records} records, matching answers read "
                f"{r.matching_yes} yes / {r.matching_no} no — {r.reason}",
            )
            repeats = r.repeats
            unusable = [x for x in r.skipped if x not in repeats]
            for what, rows in (("unusable records", unusable), ("repeated records", repeats)):
                if rows:
                    say("  skipped:", "yellow", f"{len(rows)} {what}, {_lines(rows)}")
            if r.output:
                err.print(f"  wrote {r.imported} scenarios to {r.output}", markup=False)
            elif r.status != "suspect":
                err.print(f"  would import {r.imported} scenarios", markup=False)
        total = sum(r.imported for r in reports)
        where = f"in {out}" if out else "(report only: pass --out DIR to write)"
        err.print(f"{total} scenarios {where}", markup=False)
    if suspect:
        raise typer.Exit(1)


def _lines(rows: list[tuple[int, str]]) -> str:
    """ "lines 3, 9 (+2 more)"; a repeat says which line it repeats: "line 9 (= 3)"."""
    from deceptwatch.importers.mwe import REPEAT

    shown = []
    for n, reason in rows[:10]:
        first = reason.removeprefix(REPEAT).strip() if reason.startswith(REPEAT) else ""
        shown.append(f"{n} (= {first})" if first else str(n))
    more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
    return ("line " if len(rows) == 1 else "lines ") + ", ".join(shown) + more


@import_app.command("inspect-log")
@handle_errors
def import_inspect_log_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH",
            parser=path_value,
            help="Inspect .eval/.json logs or directories of them (hidden files and "
            "directories, and eval_set's eval-set.json and logs.json, are skipped).",
        ),
    ],
    db: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="SQLAlchemy URL or SQLite path. Default: $DECEPTWATCH_DB, else deceptwatch/deceptwatch.db in $XDG_DATA_HOME (~/.local/share).",
        ),
    ] = None,
    scorer: Annotated[
        str | None,
        typer.Option(
            help="The scorer whose score sets the outcome (one of the log's). Default: the first."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout.")
    ] = False,
) -> None:
    """Read Inspect logs into the store: one run per log, one trial per sample and epoch.

    Importing a log again stores nothing twice (stable trial ids). A log that did not finish (status other than success, or fewer samples than planned) is stored as an incomplete run with an inconclusive verdict. Exit 0 when every log was complete, 1 when one was not (as `monitor` for an incomplete run), 2 on bad input (nothing stored).
    """
    from sqlalchemy.engine import make_url

    from deceptwatch.importers.inspect_log import import_inspect_logs
    from deceptwatch.store import resolve_db_url

    reports = import_inspect_logs(paths, db, scorer=scorer)
    if as_json:
        shown = make_url(resolve_db_url(db)).render_as_string(hide_password=True)  # as monitor's
        print_json({"db": shown, "logs": [r.as_json() for r in reports]})
    for r in [] if as_json else reports:
        c = r.counts
        err.print(
            f"{r.path}: run {r.run_id[:12]}, {r.model}, task {r.task}: {r.trials} trials "
            f"({r.new_trials} new) — aligned {c['aligned']}, defect {c['defect']}, "
            f"other {c['other']}, error {c['error']}",
            markup=False,
        )
        if r.incomplete:
            say("  incomplete:", "bold yellow", f"{r.incomplete}: stored as an incomplete run")
        if r.unpaired:
            say(
                "  unpaired:",
                "bold yellow",
                f"{len(r.unpaired)} samples found no partner in their pair (pairs are matched "
                f"within one log and epoch), so no pair counts them: {_samples(r.unpaired)}",
            )
        err.print(f"  verdict: {r.verdict}: {r.reason}", markup=False)
    if any(r.incomplete for r in reports):
        raise typer.Exit(1)


def _samples(rows: list[dict[str, Any]]) -> str:
    """ "'s3-observed' (epoch 1, pair 'p3'), ... (+2 more)"."""
    shown = [
        f"{x['sample']!r} (epoch {x['epoch']}"
        + (f", pair {x['pair']!r})" if x["pair"] is not None else f", {x['condition']})")
        for x in rows[:10]
    ]
    more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
    return ", ".join(shown) + more
