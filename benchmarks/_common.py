"""What every benchmark shares: result rows, summaries of repetitions, goals, timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any, Literal

Row = dict[str, Any]
Op = Literal[">=", "<="]


class Unavailable(Exception):
    """A benchmark cannot run here (an optional dependency or the organism weights are
    missing). The report says so instead of giving a figure."""


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
