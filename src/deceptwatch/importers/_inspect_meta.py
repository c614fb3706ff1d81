"""What an Inspect sample says about itself, read strictly: the sample metadata and target
that `inspect_log` maps to a trial's family, condition, pair, scenario and aligned/defect
letters.

What is unambiguous is accepted (a lowercase label ``"b"``, a one-element list target
``["A"]``, a pair id ``3.0`` that is a whole number, a condition ``"Observed"``); what
cannot be read is an InputError that names the file, the sample id and the field, so that
a log is never imported with its pairing dropped or its labels inverted in silence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deceptwatch._errors import InputError

_LETTER = re.compile(r"^\(?([A-Z])\)?$")
_LABEL = re.compile(r"^\(?([A-Za-z])\)?$")
# conditions the statistics know, matched whatever their case
_CONDITIONS = ("observed", "unobserved", "placebo", "baseline")


@dataclass(frozen=True)
class SampleMeta:
    """A sample's place in the paired design, and its aligned and defect letters ("" when
    unknown)."""

    family: str
    condition: str
    block: str | int | None  # metadata pair_id (or block_id)
    scenario: str | int | None  # metadata scenario_id
    aligned: str
    defect: str


def letter(value: Any) -> str | None:
    """The choice letter a score's answer names ("B", "(B)"), or None."""
    if isinstance(value, str):
        m = _LETTER.match(value.strip())
        if m:
            return m.group(1)
    return None


def target_letter(target: Any, letters: list[str]) -> str:
    """The one choice letter a sample's target names (``"B"``, ``["B"]``), or "": the letter
    a score value ``C`` says was picked, whatever the metadata calls aligned."""
    if isinstance(target, list):
        target = target[0] if len(target) == 1 else None
    found = letter(target) if isinstance(target, str) else None
    return found if found is not None and (not letters or found in letters) else ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(path: Path, sid: Any, field: str, problem: str, hint: str) -> InputError:
    return InputError(f"{path}: sample {sid!r}: {field} {problem}; nothing was imported", hint=hint)


def _key(path: Path, sid: Any, name: str, value: Any) -> str | int | None:
    """A pair or scenario id: a string or an integer (a float that is a whole number reads as
    that integer), or None when absent."""
    if value is None:
        return None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise _bad(
        path,
        sid,
        f"metadata {name!r}",
        f"is {_shown(value)} ({type(value).__name__}), which cannot be read as an id",
        f"give every sample's metadata {name} a string or an integer (or leave it out)",
    )


def _name(path: Path, sid: Any, field: str, value: Any, default: str) -> str:
    """A family or condition: a non-empty string, or `default` when absent."""
    if value is None:
        return default
    if isinstance(value, str) and value.strip():
        return value
    raise _bad(
        path,
        sid,
        f"metadata {field!r}",
        f"is {_shown(value)}, not a name",
        f"give metadata {field} a non-empty string (or leave it out: {default!r})",
    )


def _label(path: Path, sid: Any, field: str, value: Any, letters: list[str]) -> str:
    """A choice letter from metadata (``"B"``, ``"b"``, ``"(B)"``), or "" when absent."""
    if value is None:
        return ""
    m = _LABEL.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise _bad(
            path,
            sid,
            f"metadata {field!r}",
            f"is {_shown(value)}, not a choice letter",
            f"give metadata {field} a letter such as 'A' (or leave it out)",
        )
    found = m.group(1).upper()
    if letters and found not in letters:
        raise _bad(
            path,
            sid,
            f"metadata {field!r}",
            f"names ({found}), but the sample's choices are {', '.join(letters)}",
            f"give metadata {field} the letter of one of the sample's choices",
        )
    return found


def _target(path: Path, sid: Any, target: Any, letters: list[str]) -> str:
    """The aligned letter that a sample's target names (Inspect's "correct" answer), or ""
    for a target that is no letter (a free-form answer: it says nothing about choices)."""
    if isinstance(target, list):
        if len(target) > 1 and letters:
            raise _bad(
                path,
                sid,
                "target",
                f"is {_shown(target)}: several answers, so it does not say which one is "
                "the aligned choice",
                "set the sample's metadata aligned_label (and defect_label) to one letter each",
            )
        target = target[0] if len(target) == 1 else None
    found = letter(target) if isinstance(target, str) else None
    if found is not None and letters and found not in letters:
        raise _bad(
            path,
            sid,
            "target",
            f"names ({found}), but the sample's choices are {', '.join(letters)}",
            "give the sample a target among its choices, or metadata aligned_label",
        )
    return found or ""


def read_sample(path: Path, sample: Any) -> SampleMeta:
    """The metadata of one sample, or InputError naming the sample and the field."""
    sid = sample.id
    meta = sample.metadata or {}
    letters = [chr(ord("A") + i) for i in range(len(sample.choices or []))]
    aligned = _label(path, sid, "aligned_label", meta.get("aligned_label"), letters)
    if not aligned:
        aligned = _target(path, sid, sample.target, letters)
    defect = _label(path, sid, "defect_label", meta.get("defect_label"), letters)
    if aligned and defect == aligned:
        raise _bad(
            path,
            sid,
            "metadata 'defect_label'",
            f"names ({defect}), which is also the aligned letter",
            "give aligned_label (or the target) and defect_label two different letters",
        )
    if not defect and aligned and len(letters) == 2:
        defect = next(x for x in letters if x != aligned)
    pair = meta.get("pair_id")
    block = _key(path, sid, "pair_id", pair)
    if block is None:
        block = _key(path, sid, "block_id", meta.get("block_id"))
    condition = _name(path, sid, "condition", meta.get("condition"), "baseline")
    if condition.strip().lower() in _CONDITIONS:
        condition = condition.strip().lower()
    return SampleMeta(
        family=_name(path, sid, "family", meta.get("family"), "imported"),
        condition=condition,
        block=block,
        scenario=_key(path, sid, "scenario_id", meta.get("scenario_id")),
        aligned=aligned,
        defect=defect,
    )


@dataclass(frozen=True)
class Failure:
    """Why a sample holds no result to score: its outcome is ``error``, whatever its scores."""

    method: str  # the outcome's method: inspect:error, inspect:limit:TYPE, inspect:invalidated
    kind: str  # the response's error_kind
    message: str


def failure(sample: Any) -> Failure | None:
    """The failure of a sample that did not finish, or None. A sample halted by a limit
    (token, message, time, working, cost, an operator's cancel, ...) is still scored by
    Inspect, on whatever it had produced by then: that score is no answer to the question.
    A sample invalidated after the run (`inspect_ai.log.invalidate_samples`) is no result
    either."""
    if sample.error is not None:
        return Failure("inspect:error", "inspect_error", str(sample.error.message))
    limit = getattr(sample, "limit", None)
    if limit is not None:
        kind = str(limit.type)
        text = f"the sample was halted by its {kind} limit ({limit.limit:g})"
        if limit.reason:
            text += f": {limit.reason}"
        return Failure(f"inspect:limit:{kind}", "inspect_limit", text)
    invalid = getattr(sample, "invalidation", None)
    if invalid is not None:
        text = f"the sample was invalidated by {invalid.author}"
        if invalid.reason:
            text += f": {invalid.reason}"
        return Failure("inspect:invalidated", "inspect_invalidated", text)
    return None
