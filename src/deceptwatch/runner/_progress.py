"""A rich progress bar on stderr: trials done of total, rate, errors, time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deceptwatch.runner._runner import Counters, ProgressHook


@contextmanager
def progress_bar(total: int, *, enabled: bool = True) -> Iterator[ProgressHook]:
    """Yield a hook for `run_trials` that draws the bar; a no-op hook when disabled."""
    if not enabled:
        yield lambda counters: None
        return
    console = Console(file=sys.stderr, emoji=False)
    progress = Progress(
        TextColumn("[bold]{task.fields[model]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} trials/s"),
        TextColumn("[red]{task.fields[errors]} errors"),
        TextColumn("{task.fields[cached]} cached"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("trials", total=total, model="", rate="-", errors=0, cached=0)
    start = time.perf_counter()

    def hook(c: Counters) -> None:
        elapsed = max(time.perf_counter() - start, 1e-9)
        fresh = c.done - c.cached
        progress.update(
            task,
            completed=c.done,
            model=c.model,
            rate=f"{fresh / elapsed:,.0f}",
            errors=c.errors,
            cached=c.cached,
        )

    with progress:
        yield hook
