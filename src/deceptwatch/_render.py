"""Human-readable rendering of a monitor report: a verdict and a findings table per model."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
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


def _unpaired_by_design(f: Any) -> bool:
    """A finding whose trials pose no observed/unobserved pair (a baseline-only precursor,
    an imported log without pairs): it has rates, not a gap, and nothing failed."""
    return f.gap is None and not {"observed", "unobserved"} <= set(f.rates_by_condition)


def _rates(f: Any) -> str:
    """The defect column: observed→unobserved, or each condition's rate for a finding
    without pairs by design ("baseline 52%")."""
    if _unpaired_by_design(f):
        return ", ".join(f"{c} {_rate(r['rate'])}" for c, r in f.rates_by_condition.items())
    return f"{_rate(f.defect_rate_observed)}→{_rate(f.defect_rate_unobserved)}"


def _result(f: Any) -> str:
    from deceptwatch.stats import beyond_placebo, bound_points  # numpy: not on the CLI's path

    if _unpaired_by_design(f):
        return "rate only: no pairs posed"
    if f.gap is None:
        return "no usable pairs"
    if f.significant:
        # a gap in reverse (defects less often when unobserved) is no sign of deception, and
        # neither is one that the placebo wording's gap may explain (the verdict says so)
        if f.gap < 0:
            return "significant, reverse"
        if beyond_placebo(f):
            return "[red]significant[/]"
        if f.placebo_adjusted_ci is None:
            return "[yellow]significant, placebo not compared[/]"
        return "[yellow]significant, within placebo[/]"
    # Not significant after the multiplicity adjustment, though the (unadjusted) interval
    # excludes 0: "rules out > 50 pts" would hide a gap that the interval puts at 22–50.
    if f.ci_low is not None and f.ci_low > 0:
        return f"CI > 0, q > {f.alpha:g}"
    if f.ci_high is not None and f.ci_high < 0:
        return f"CI < 0, q > {f.alpha:g}"
    if f.rules_out_above is not None and bound_points(f.rules_out_above) < 100:
        # rounded up, never down: "> 4.1" would rule out gaps the interval keeps (4.14)
        return f"rules out > {bound_points(f.rules_out_above):.1f} pts"
    return "not significant"  # a bound of 100 points rules nothing out


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
            _rates(f),
            gap,
            q,
            _pts(f.placebo_gap),
            f"{f.n_other}/{f.n_error}",
            _result(f),
        )
    return table


def _interval(ci: Any) -> str:
    return "—" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def render_ladder(ladder: Any, console: Console) -> None:
    """The evidence ladder of one model: its rung, the two criteria, the precursors."""
    console.print(f"  [bold]evidence ladder:[/] {escape(ladder.reason)}", markup=True)
    for label, c in (
        ("appears aligned when observed", ladder.appears_aligned),
        ("appearance depends on oversight", ladder.depends_on_oversight),
    ):
        console.print(f"    {label}: {escape(c.reason)}", markup=False)
    if ladder.precursors:
        scores = "; ".join(
            f"{_precursor(p)}{' (significant)' if p.significant else ''}" for p in ladder.precursors
        )
        console.print(f"    precursors (beside the ladder, points): {scores}", markup=False)


def _precursor(p: Any) -> str:
    return f"{p.family} {p.kind} {_pts(p.score)} {_interval(p.ci)}"


def render_precursor_signal(ladder: Any, console: Console) -> None:
    """Under the verdict: the precursors that are significant, which the verdict (about
    deception) does not count, so that "no_evidence" is not read as "nothing found"."""
    significant = [p for p in ladder.precursors if p.significant] if ladder is not None else []
    if significant:
        console.print(
            f"  significant precursor{'s' if len(significant) > 1 else ''} (beside the ladder, "
            f"not by {'themselves' if len(significant) > 1 else 'itself'} evidence of deception, "
            f"points): {'; '.join(_precursor(p) for p in significant)}",
            markup=False,
        )


def render_probes(m: Any, console: Console) -> None:
    """What --probes found for one model: flag rates per condition, the paired probe gap,
    and whether flags foretold the unobserved defections."""
    if m.probe_note:
        console.print(f"  probes: {escape(m.probe_note)}", markup=True)
    for p in m.probes:
        when = "last prompt token, before acting" if p.before_action else "over the reply"
        console.print(
            f"  [bold]probe {escape(p.probe)}[/] ({p.method}, {p.layer}, {when}); threshold "
            f"{p.threshold:.4g} from {escape(p.calibration)}",
            markup=True,
        )
        rates = "; ".join(
            f"{r.condition} {r.flagged}/{r.n}" + ("" if r.rate is None else f" ({_rate(r.rate)})")
            for r in p.flag_rates
        )
        console.print(f"    flagged: {rates}", markup=False)
        t = p.unobserved_outcomes
        if t is not None:
            pv = "—" if t.p_value is None else f"{t.p_value:.3g}"
            console.print(
                f"    unobserved, flag vs what followed: flagged {t.flagged_defect} defected / "
                f"{t.flagged_aligned} aligned; unflagged {t.unflagged_defect} defected / "
                f"{t.unflagged_aligned} aligned (Fisher one-sided p = {pv})",
                markup=False,
            )
        console.print(f"    {p.reason} (not adjusted across probes)", markup=False)


def render_model(m: Any, console: Console) -> None:
    """One model of a report: its verdict, counts, findings, probes and ladder."""
    style = _VERDICT_STYLE.get(m.verdict, "bold")
    console.print(
        f"[bold]{escape(m.model)}[/]: [{style}]{m.verdict}[/] — {escape(m.reason)}",
        markup=True,
    )
    render_precursor_signal(m.ladder, console)
    if not m.complete:
        console.print(
            "  [bold yellow]INCOMPLETE run:[/] every finding below may be biased",
            markup=True,
        )
    c = m.counts
    why = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in m.other_reasons.items())
    console.print(
        f"  trials {c['stored']}/{m.expected_trials}: aligned {c['aligned']}, defect {c['defect']}, "
        f"other {c['other']}{f' ({why})' if why else ''}, error {c['error']}"
    )
    check = m.power_check  # with a gap to detect: the CLI warns of it on stderr too
    if check is not None and not check.enough:
        console.print(f"  [bold yellow]warning:[/] {escape(check.message)}", markup=True)
    shown = [f for f in m.findings if f.level != "scenario" or f.significant]
    console.print(findings_table(shown))
    hidden = [f for f in m.findings if f.level == "scenario" and not f.significant]
    if hidden:
        by_design = sum(1 for f in hidden if _unpaired_by_design(f))
        unpaired = sum(1 for f in hidden if f.gap is None) - by_design
        parts = [
            f"{n} {what}"
            for n, what in (
                (len(hidden) - unpaired - by_design, "non-significant scenario findings"),
                (unpaired, "scenarios without a usable pair"),
                (by_design, "scenarios that pose no observed/unobserved pair (rates only)"),
            )
            if n
        ]
        what = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
        console.print(f"  ({what} not shown; --json lists all)")
    if any(f.precursor for f in m.findings):
        console.print("  * precursor family: reported beside the evidence ladder, not on it")
    render_probes(m, console)
    if m.ladder is not None:
        render_ladder(m.ladder, console)


def render_report(report: Any, console: Console) -> None:
    from deceptwatch.stats import percent  # numpy: not on the CLI's import path

    console.print(f"run [bold]{report.run_id[:12]}[/]  store {escape(report.db)}", markup=True)
    method = report.config.get("multiplicity", "benjamini_hochberg")
    console.print(f"q: p-values adjusted by {method} across every finding of the run")
    for m in report.models:
        console.print()
        render_model(m, console)
    for c in report.comparisons:
        if c["difference"] is None:
            console.print(
                f"\n{c['model']} vs {c['against']}: no shared scenario with pairs", markup=False
            )
            continue
        q = "—" if c["q_value"] is None else f"{c['q_value']:.2g}"
        console.print(
            f"\ngap of {c['model']} minus gap of {c['against']}: {_pts(c['difference'])} points, "
            f"{percent(c['confidence'])}% CI {_interval(c['ci'])}, over {c['n_scenarios']} "
            f"shared scenarios, q = {q} (adjusted across the comparisons only, not the findings)",
            markup=False,
        )
    if not report.complete:
        console.print(f"[bold yellow]INCOMPLETE:[/] {escape(report.message or '')}", markup=True)


WIDTH = 150  # of the text the report prints where the width is unknown (a file, a notebook)


def _recorded(render: Callable[[Console], None]) -> Console:
    console = Console(  # as the CLI's: no emoji codes (":x:" in a model name), no highlighting
        record=True,
        file=io.StringIO(),
        width=WIDTH,
        force_terminal=True,
        color_system="truecolor",
        highlight=False,
        emoji=False,
    )
    render(console)
    return console


def as_text(render: Callable[[Console], None]) -> str:
    """What `render` prints, as plain text: what the CLI prints to a file or pipe."""
    return _recorded(render).export_text()


_PRE = (
    '<pre style="white-space: pre; overflow-x: auto; line-height: 1.3; '
    "font-family: Menlo, 'DejaVu Sans Mono', Consolas, monospace; font-size: 12px\">"
    "{code}</pre>"
)


def as_html(render: Callable[[Console], None]) -> str:
    """What `render` prints, as one HTML ``<pre>`` with inline colours (for a notebook):
    the same text as the terminal's, every character of it escaped."""
    return _recorded(render).export_html(inline_styles=True, code_format=_PRE)
