"""Rich progress bars on stderr: trials done of total, rate, errors, time left; and a bar
per task of the model work behind probes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deceptwatch.runner._runner import Counters, ProgressHook

TaskSink = Callable[[str, int], Callable[[int], None]]
"""As `deceptwatch.probes.Sink` (which this module does not import)."""


class _Terminal:
    """stderr for the bar, which stops drawing once a write fails: a terminal that hung up
    (a dropped SSH connection) fails every write with EIO, and that must not become the
    error that ends the run, nor replace the SIGHUP that stops it cleanly."""

    def __init__(self, file: TextIO) -> None:
        self._file = file
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._file.write(text)
            except OSError:
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._file.flush()
            except OSError:
                self.gone = True

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: as the file's
        return getattr(self._file, name)


def _stderr() -> Console:
    return Console(file=_Terminal(sys.stderr), emoji=False)  # type: ignore[arg-type]


@contextmanager
def progress_bar(total: int, *, enabled: bool = True) -> Iterator[ProgressHook]:
    """Yield a hook for `run_trials` that draws the bar; a no-op hook when disabled, or
    when the process has no stderr (pythonw, a closed descriptor: Python's None)."""
    if not enabled or sys.stderr is None:
        yield lambda counters: None
        return
    console = _stderr()
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
            model=escape(c.model),  # a spec is text, not markup: "openai:x[/]y[/]z"
            rate=f"{fresh / elapsed:,.0f}",
            errors=c.errors,
            cached=c.cached,
        )

    with progress:
        yield hook


@contextmanager
def task_bars(prefix: str = "", *, enabled: bool = True) -> Iterator[TaskSink | None]:
    """Yield a sink that draws one bar per task it is given (a probe's model choices, its
    activations), each labelled `prefix` and the task's label; None when disabled or when
    the process has no stderr."""
    if not enabled or sys.stderr is None:
        yield None
        return
    console = _stderr()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )

    def start(label: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(escape(f"{prefix}{label}"), total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        return advance

    with progress:
        yield start
