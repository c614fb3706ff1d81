"""What every benchmark shares: result rows, summaries of repetitions, goals, timing, and the
command line of a single benchmark module (``python -m benchmarks.bench_NAME``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Row = dict[str, Any]
Op = Literal[">=", "<="]


class Unavailable(Exception):
    """A benchmark cannot run here (an optional dependency or the organism weights are
    missing). The report says so instead of giving a figure."""


def require_organism(organism: str) -> None:
    """Raise `Unavailable` unless torch and the organism's shipped weights are here."""
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed (pip install -e '.[local]')")
    from deceptwatch.organisms import weights_root

    weights = weights_root() / organism / "model.safetensors"
    if not weights.is_file():
        raise Unavailable(f"the organism weights are missing ({weights})")


def summary(xs: list[float]) -> dict[str, float]:
    """Median, min and max of the repetitions."""
    if not xs:
        raise ValueError("no repetitions to summarise")
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def goal(metric: Literal["ratio", "ours"], op: Op, value: float, text: str) -> dict[str, Any]:
    """A goal on the median of `metric` (``ratio``: ours / baseline; ``ours``: our figure)."""
    return {"metric": metric, "op": op, "value": value, "text": text}


def met(row: Row) -> bool | None:
    """Whether the row's median meets its goal (None when the row has no figure or goal)."""
    g = row.get("goal")
    if not g or row.get(g["metric"]) is None:
        return None
    median = float(row[g["metric"]]["median"])
    value = float(g["value"])
    return median >= value if g["op"] == ">=" else median <= value


def row(
    name: str,
    unit: str,
    ours: list[float],
    base: list[float] | None,
    goal_: dict[str, Any] | None,
    *,
    baseline_name: str | None = None,
    higher_is_better: bool = True,
    **extra: Any,
) -> Row:
    """A result row. With a baseline, `ratio` is ours / baseline per repetition (the
    repetitions are paired: each ran next to its baseline), summarised like the rest."""
    out: Row = {
        "name": name,
        "unit": unit,
        "ours": summary(ours),
        "baseline": None,
        "baseline_name": baseline_name,
        "ratio": None,
        "goal": goal_,
        "higher_is_better": higher_is_better,
        "repeats": len(ours),
        "samples": {"ours": ours, "baseline": base},
    }
    if base is not None:
        if len(base) != len(ours):
            raise ValueError("ours and the baseline need the same number of repetitions")
        out["baseline"] = summary(base)
        out["ratio"] = summary([o / b for o, b in zip(ours, base, strict=True)])
    out.update(extra)
    out["met"] = met(out)
    return out


def rate(fn: Callable[[], int]) -> float:
    """Items per second of one call of `fn`, which returns how many items it did."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- printing


def fmt(x: float) -> str:
    """A figure with as many digits as its size deserves."""
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def spread(s: dict[str, float] | None, unit: str = "") -> str:
    """``median unit [min–max]`` of a summary (``—`` without one)."""
    if s is None:
        return "—"
    u = "×" if unit == "×" else (f" {unit}" if unit else "")
    return f"{fmt(s['median'])}{u} [{fmt(s['min'])}–{fmt(s['max'])}]"


def describe(r: Row) -> str:
    """A row in two lines, for the command line of a benchmark module."""
    parts = [f"ours {spread(r['ours'], r['unit'])}"]
    if r.get("baseline") is not None:
        parts.append(f"baseline {spread(r['baseline'], r['unit'])}")
    if r.get("ratio") is not None:
        parts.append(f"ratio {spread(r['ratio'], '×')}")
    if r.get("goal"):
        met_ = {True: "met", False: "NOT met", None: "—"}[r.get("met")]
        parts.append(f"goal {r['goal']['text']} ({met_})")
    counts = [f"{r['trials']:,} trials" if "trials" in r else "", f"x{r['repeats']}"]
    if "findings" in r:
        counts.insert(0, f"{r['findings']} findings")
    return f"{r['name']}\n  " + "  ".join(parts) + f"  ({', '.join(c for c in counts if c)})"


# --------------------------------------------------------------------------- command line


@dataclass(frozen=True)
class Option:
    """A module-specific option, passed to its ``run`` after ``repeats``, in order."""

    flag: str
    type: Callable[[str], Any]
    default: Any


def main(
    doc: str | None,
    run: Callable[..., list[Row]],
    *options: Option,
    argv: Sequence[str] | None = None,
) -> None:
    """The command line every benchmark module shares: ``--repeats``, the module's own
    `options`, ``--json``. Runs ``run(repeats, *options)`` and prints its rows."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] or None)
    parser.add_argument("--repeats", type=int, default=5)
    dests = []
    for o in options:
        dests.append(parser.add_argument(o.flag, type=o.type, default=o.default).dest)
    parser.add_argument("--json", action="store_true", help="print the raw rows as JSON")
    args = parser.parse_args(argv)
    rows = run(args.repeats, *(getattr(args, d) for d in dests))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(describe(r))
