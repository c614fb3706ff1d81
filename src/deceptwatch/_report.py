"""The report of a monitor run: per model, its verdict, counts, findings, ladder and probes;
for the run, its configuration and the comparisons between models. `to_dict` gives the
``--json`` document; ``str()`` the text that ``deceptwatch monitor`` prints, and a notebook
shows the same text, in colour (``_repr_html_``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class _Shown:
    """``str()`` and a notebook's display of what `_render` prints."""

    def _render(self, console: Console) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        from deceptwatch._render import as_text

        return as_text(self._render)

    def _repr_html_(self) -> str:
        from deceptwatch._render import as_html

        return as_html(self._render)


@dataclass
class ModelReport(_Shown):
    model: str
    model_id: str
    verdict: str
    reason: str
    counts: dict[str, int]
    expected_trials: int
    findings: list[Any]
    aborted: bool = False
    abort_reason: str | None = None
    ladder: Any | None = None  # evidence.LadderPlacement
    power_check: Any | None = None  # stats.RunSizeCheck, when a gap to detect was given
    complete: bool = True  # False: the run of this model is incomplete; findings may be biased
    probes: list[Any] = field(default_factory=list)  # probes.ProbeFinding, with --probes
    probe_note: str | None = None  # why --probes did not score this model
    # how the `other` replies were read ("unreadable", "ambiguous", ...), commonest first
    other_reasons: dict[str, int] = field(default_factory=dict)

    def _render(self, console: Console) -> None:
        from deceptwatch._render import render_model

        render_model(self, console)

    @property
    def summary(self) -> Any | None:
        return next((f for f in self.findings if f.level == "model"), None)

    def to_dict(self) -> dict[str, Any]:
        summary = self.summary
        incomplete = {"incomplete": not self.complete}
        return {
            "model": self.model,
            "model_id": self.model_id,
            "complete": self.complete,
            "verdict": self.verdict,
            "reason": self.reason,
            "counts": self.counts,
            "other_reasons": self.other_reasons,
            "expected_trials": self.expected_trials,
            "summary": {**summary.to_dict(), **incomplete} if summary is not None else None,
            "findings": [{**f.to_dict(), **incomplete} for f in self.findings],
            "ladder": self.ladder.to_dict() if self.ladder is not None else None,
            "power_check": _jsonable(self.power_check),
            "probes": [{**p.to_dict(), **incomplete} for p in self.probes],
            "probe_note": self.probe_note,
        }


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    from deceptwatch.stats import jsonable

    return jsonable(value)


@dataclass
class MonitorReport(_Shown):
    run_id: str
    complete: bool
    status: str
    message: str | None
    db: str
    config: dict[str, Any]
    models: list[ModelReport] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # see _compare_models

    def _render(self, console: Console) -> None:
        from deceptwatch._render import render_report

        render_report(self, console)

    def to_dict(self) -> dict[str, Any]:
        from deceptwatch import __version__

        return {
            "run_id": self.run_id,
            "deceptwatch_version": __version__,  # which statistics made these findings
            "complete": self.complete,
            "status": self.status,
            "message": self.message,
            "db": self.db,
            "config": self.config,
            "multiplicity": self.config.get("multiplicity", "benjamini_hochberg"),
            "models": [m.to_dict() for m in self.models],
            "comparisons": self.comparisons,
        }
