"""The report of a monitor run: per model, its verdict, counts, findings, ladder and probes;
for the run, its configuration and the comparisons between models. `to_dict` gives the
``--json`` document; ``str()`` the text that ``deceptwatch monitor`` prints, and a notebook
shows the same text, in colour (``_repr_html_``).

A report is frozen, as the store's record of the run is: its lists are tuples and its
mappings read-only, so that neither `to_dict` nor the text can come to say other than what
was stored. `to_dict` gives new, plain lists and dicts, free to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from rich.console import Console


class FrozenDict(dict[str, Any]):
    """A dict that refuses changes (and, unlike a mappingproxy, pickles and is JSON)."""

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise TypeError("a report is frozen: copy it with to_dict() to change it")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


def _frozen(value: Any) -> Any:
    """Plain data made read-only all the way down: dicts as FrozenDict, lists as tuples."""
    if isinstance(value, Mapping):
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """The inverse of `_frozen`: new dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _freeze_fields(obj: Any, data: Iterable[str], objects: Iterable[str]) -> None:
    for name in data:
        object.__setattr__(obj, name, _frozen(getattr(obj, name)))
    for name in objects:  # frozen results (findings, models): only the list is made a tuple
        object.__setattr__(obj, name, tuple(getattr(obj, name)))


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


@dataclass(frozen=True)
class ModelReport(_Shown):
    model: str
    model_id: str
    verdict: str
    reason: str
    counts: Mapping[str, int]
    expected_trials: int
    findings: Sequence[Any]  # a tuple once made
    aborted: bool = False
    abort_reason: str | None = None
    ladder: Any | None = None  # evidence.LadderPlacement
    power_check: Any | None = None  # stats.RunSizeCheck, when a gap to detect was given
    complete: bool = True  # False: the run of this model is incomplete; findings may be biased
    probes: Sequence[Any] = ()  # probes.ProbeFinding, with --probes
    probe_note: str | None = None  # why --probes did not score this model
    # how the `other` replies were read ("unreadable", "ambiguous", ...), commonest first
    other_reasons: Mapping[str, int] = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        _freeze_fields(self, ("counts", "other_reasons"), ("findings", "probes"))

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
            "counts": dict(self.counts),
            "other_reasons": dict(self.other_reasons),
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


@dataclass(frozen=True)
class MonitorReport(_Shown):
    run_id: str
    complete: bool
    status: str
    message: str | None
    db: str
    config: Mapping[str, Any]
    models: Sequence[ModelReport] = ()
    comparisons: Sequence[Mapping[str, Any]] = ()  # see _compare_models

    def __post_init__(self) -> None:
        _freeze_fields(self, ("config", "comparisons"), ("models",))

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
            "config": _plain(self.config),
            "multiplicity": self.config.get("multiplicity", "benjamini_hochberg"),
            "models": [m.to_dict() for m in self.models],
            "comparisons": _plain(self.comparisons),
        }
