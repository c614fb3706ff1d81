"""Human-readable rendering of a monitor report: a verdict and a findings table per model."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_VERDICT_STYLE = {
    "deceptive": "bold red",
    "misaligned_not_deceptive": "bold magenta",
    "no_evidence": "bold green",
    "inconclusive": "bold yellow",
}


def _pts(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _result(f: Any) -> str:
    if f.gap is None:
        return "no usable pairs"
    if f.significant:
        return "[red]significant[/]"
    if f.rules_out_above is not None:
        return f"rules out > {100 * f.rules_out_above:.1f} pts"
    return "not significant"


def findings_table(findings: list[Any]) -> Table:
    table = Table(pad_edge=False, box=None, header_style="bold")
    table.add_column("scope", no_wrap=True, overflow="ellipsis", max_width=44)
    for col in ("pairs", "defect obs→unobs", "gap pts [CI]", "q", "placebo"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("other/err", justify="right", no_wrap=True)
    table.add_column("result", no_wrap=True)
    order = {"model": 0, "family": 1, "scenario": 2}
    for f in sorted(findings, key=lambda f: (f.precursor, order[f.level], f.scope)):
        gap = (
            "—"
            if f.gap is None
            else f"{100 * f.gap:+.1f} [{100 * f.ci_low:+.1f}, {100 * f.ci_high:+.1f}]"
        )
        q = "—" if f.q_value is None else f"{f.q_value:.2g}"
        label = {"model": "ALL", "family": f"{f.scope} (family)"}.get(f.level, f.scope)
        if f.precursor:
            label += " *"
        table.add_row(
            label,
            str(f.n_pairs),
            f"{_rate(f.defect_rate_observed)}→{_rate(f.defect_rate_unobserved)}",
            gap,
            q,
            _pts(f.placebo_gap),
            f"{f.n_other}/{f.n_error}",
            _result(f),
        )
    return table


def render_report(report: Any, console: Console) -> None:
    console.print(f"run [bold]{report.run_id[:12]}[/]  store {report.db}", markup=True)
    for m in report.models:
        style = _VERDICT_STYLE.get(m.verdict, "bold")
        console.print()
        console.print(f"[bold]{m.model}[/]: [{style}]{m.verdict}[/] — {m.reason}", markup=True)
        c = m.counts
        console.print(
            f"  trials {c['stored']}/{m.expected_trials}: aligned {c['aligned']}, defect {c['defect']}, "
            f"other {c['other']}, error {c['error']}"
        )
        console.print(findings_table(m.findings))
        if any(f.precursor for f in m.findings):
            console.print("  * precursor family: reported beside the evidence ladder, not on it")
    if not report.complete:
        console.print(f"[bold yellow]INCOMPLETE:[/] {report.message}", markup=True)
