"""Load scenario files and suites, with errors that name the file, scenario, field and line.

A YAML file holds one scenario (a mapping) or a list of them. A suite is a directory of such
files; the built-in suites live in ``deceptwatch/scenarios/builtin/<suite>/``. Files are
parsed with PyYAML's safe loader (its C build, libyaml, when installed: about 10x as fast as
the pure-Python one, which loading every built-in suite used to wait on for over 2 s). Only
when a file has a problem is it parsed again, node by node (``yaml.compose``), for the line
numbers of the error messages.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deceptwatch._errors import InputError
from deceptwatch._ids import content_hash
from deceptwatch.scenarios._schema import FAMILIES, FieldError, Scenario

YAML_SUFFIXES = (".yaml", ".yml")
ALL_SUITES = "all"


@dataclass(frozen=True)
class ScenarioRecord:
    """A validated scenario with where it came from."""

    scenario: Scenario
    suite: str
    source: str

    @cached_property
    def content_hash(self) -> str:
        return content_hash(self.scenario.dump())

    @property
    def id(self) -> str:
        return self.scenario.id

    @property
    def family(self) -> str:
        return self.scenario.family


# --------------------------------------------------------------------------- errors


def _node_at(node: yaml.Node | None, loc: Sequence[int | str]) -> yaml.Node | None:
    """Walk a composed YAML node along a pydantic error location.

    Returns the key node for the last step into a mapping (so that the line is the field's),
    and the deepest node reached when the location runs past the document (a missing field).
    """
    for i, key in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    node = k if last else v
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if not 0 <= key < len(node.value):
                return node
            node = node.value[key]
        else:
            return node
    return node


_HINTS: dict[str, str] = {
    "extra_forbidden": "remove the field or fix its spelling; `deceptwatch scenarios schema` "
    "lists every allowed field",
    "missing": "add the field; `deceptwatch scenarios schema` shows its type",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "ids and keys use lowercase letters, digits, '_', '-', '.' and '/'",
    "too_short": "add entries: the list may not be empty",
    "string_too_short": "give a non-empty text",
    "string_too_long": "shorten it",
    "too_long": "remove entries",
    "string_type": "give a text (quote it if YAML reads it as a number, date or boolean)",
    "int_type": "give a whole number, e.g. 1",
    "int_parsing": "give a whole number, e.g. 1",
    "int_from_float": "give a whole number, e.g. 1",
    "float_type": "give a number, e.g. 0.5",
    "float_parsing": "give a number, e.g. 0.5",
    "finite_number": "give a finite number, e.g. 0.5",
    "bool_type": "give true or false",
    "bool_parsing": "give true or false",
    "list_type": "give a YAML list (entries starting with '- ')",
    "dict_type": "give a YAML mapping (key: value lines)",
    "model_type": "give a YAML mapping (key: value lines)",
    "model_attributes_type": "give a YAML mapping (key: value lines)",
    "greater_than_equal": "give a larger value",
    "greater_than": "give a larger value",
    "less_than_equal": "give a smaller value",
    "less_than": "give a smaller value",
}
# For any other problem: where to look up what the field takes.
_DEFAULT_HINT = "`deceptwatch scenarios schema` shows what every field takes"
_SHAPE_HINT = (
    "a scenario file holds one scenario (a mapping with id, family, choices, ...) or a list "
    "of them; `deceptwatch scenarios schema` shows the format"
)

_FIELD_HINTS: dict[str, str] = {
    "aligned": "set `aligned` to the id of one of the `choices`",
    "defect": "set `defect` to the id of another of the `choices`",
    "unobserved": "give each condition its own paraphrases",
    "placebo": "a placebo rewords an observed cue without changing its meaning",
    "user": "put {{oversight}} where the cue belongs, and use only declared {{slots}}",
    "messages": "put {{oversight}} where the cue belongs, and use only declared {{slots}}",
}


def _loc_text(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(scenario)"


def _format_validation_error(
    err: ValidationError,
    *,
    path: str,
    sid: str | None,
    root: yaml.Node | None,
    prefix: tuple[int, ...],
) -> str:
    lines = []
    for e in err.errors(include_url=False):
        loc: list[int | str] = list(e["loc"])
        msg = e["msg"]
        hint = _HINTS.get(e["type"])
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, FieldError):
            # a cross-field check: point at the field it names
            loc = [*loc, *ctx_err.field.replace("]", "").replace("[", ".").split(".")]
            loc = [int(p) if isinstance(p, str) and p.isdigit() else p for p in loc]
            msg = str(ctx_err)
            hint = _FIELD_HINTS.get(ctx_err.field.split(".")[0], hint)
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        if e["type"] == "literal_error" and loc and loc[-1] == "family":
            hint = "family must be one of: " + ", ".join(FAMILIES)
        node = _node_at(root, [*prefix, *loc])
        where = f"{path}:{node.start_mark.line + 1}" if node is not None else path
        who = f"scenario '{sid}'" if sid else "scenario"
        line = f"{where}: {who}: field '{_loc_text(loc)}': {msg}"
        line += f"\n  hint: {hint or _DEFAULT_HINT}"
        lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def _safe_load(text: str) -> Any:
    """``yaml.safe_load``, through libyaml when PyYAML was built with it."""
    if yaml.__with_libyaml__:
        return yaml.load(text, Loader=yaml.CSafeLoader)
    return yaml.load(text, Loader=yaml.SafeLoader)


def _compose(text: str) -> yaml.Node | None:
    """The node tree of `text`, by the parser that `_safe_load` uses."""
    if yaml.__with_libyaml__:
        return yaml.compose(text, Loader=yaml.CSafeLoader)
    return yaml.compose(text, Loader=yaml.SafeLoader)


class _Nodes:
    """The node tree of a parsed document, for line numbers: composed on first use, so
    that a file without problems is parsed once."""

    def __init__(self, text: str) -> None:
        self._text = text

    @cached_property
    def root(self) -> yaml.Node | None:
        # The parser that loaded the text: PyYAML's own refuses some text that libyaml
        # reads (a tab after "key:"), and a problem's line is not worth a traceback.
        try:
            return _compose(self._text)
        except yaml.YAMLError:  # pragma: no cover - the same parser read it already
            return None


def parse_scenarios(text: str, *, path: str, suite: str) -> list[ScenarioRecord]:
    """Parse and validate one YAML document holding a scenario or a list of scenarios."""
    try:
        data = _safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(
            f"{where}: malformed YAML: {problem}",
            hint="check the indentation and quoting near that line",
        ) from None
    if data is None:
        raise InputError(f"{path}: the file is empty", hint=_SHAPE_HINT)
    items: list[tuple[tuple[int, ...], Any]]
    if isinstance(data, list):
        items = [((i,), d) for i, d in enumerate(data)]
    elif isinstance(data, dict):
        items = [((), data)]
    else:
        raise InputError(
            f"{path}:1: expected a scenario (a mapping) or a list of scenarios, "
            f"got {type(data).__name__}",
            hint=_SHAPE_HINT,
        )
    records: list[ScenarioRecord] = []
    problems: list[str] = []
    nodes = _Nodes(text)
    for prefix, item in items:
        sid = item.get("id") if isinstance(item, dict) else None
        sid = sid if isinstance(sid, str) else None
        if not isinstance(item, dict):
            node = _node_at(nodes.root, prefix)
            line = node.start_mark.line + 1 if node is not None else 1
            problems.append(
                f"{path}:{line}: list entry {prefix[0]} is not a mapping\n  hint: {_SHAPE_HINT}"
            )
            continue
        try:
            scenario = Scenario.model_validate(item)
        except ValidationError as err:
            problems.append(
                _format_validation_error(err, path=path, sid=sid, root=nodes.root, prefix=prefix)
            )
            continue
        records.append(ScenarioRecord(scenario=scenario, suite=suite, source=path))
    if problems:
        raise InputError("\n".join(problems))
    return records


def load_file(path: str | Path, *, suite: str | None = None) -> list[ScenarioRecord]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{p}: cannot read scenario file: {exc.strerror}",
            hint="check the path and that the file is readable",
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{p}: not UTF-8 text (byte {exc.start})", hint="save it as UTF-8"
        ) from None
    return parse_scenarios(text, path=str(p), suite=suite or p.stem)


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(f for f in directory.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file())


def check_unique(records: Iterable[ScenarioRecord]) -> list[ScenarioRecord]:
    seen: dict[str, ScenarioRecord] = {}
    out = []
    for r in records:
        if r.id in seen:
            raise InputError(
                f"{r.source}: scenario '{r.id}': field 'id': duplicate id, also defined in "
                f"{seen[r.id].source}",
                hint="give every scenario a unique id (bump `version` to revise one)",
            )
        seen[r.id] = r
        out.append(r)
    return out


def load_path(path: str | Path, *, suite: str | None = None) -> list[ScenarioRecord]:
    """Load a YAML file, or every YAML file under a directory (recursively, sorted)."""
    p = Path(path)
    if p.is_dir():
        name = suite or p.name
        files = _yaml_files(p)
        if not files:
            raise InputError(
                f"{p}: no .yaml or .yml files in this directory",
                hint="scenario files end in .yaml or .yml",
            )
        return check_unique(r for f in files for r in load_file(f, suite=name))
    if p.is_file():
        return check_unique(load_file(p, suite=suite))
    what = "not a regular file or directory" if p.exists() else "no such file or directory"
    raise InputError(f"{p}: {what}", hint="give a YAML file or a directory of them")


def _builtin_root() -> Path:
    return Path(str(importlib.resources.files("deceptwatch.scenarios") / "builtin"))


def builtin_suites() -> list[str]:
    """Names of the built-in suites."""
    root = _builtin_root()
    return sorted(d.name for d in root.iterdir() if d.is_dir() and _yaml_files(d))


def load_suite(name_or_path: str) -> list[ScenarioRecord]:
    """A built-in suite by name, ``all`` for every built-in suite, or a path."""
    suites = builtin_suites()
    if not name_or_path.strip():
        raise InputError(
            "a suite name is empty",
            hint=f"built-in suites: {', '.join([*suites, ALL_SUITES])}; or give a YAML file or directory",
        )
    if name_or_path == ALL_SUITES:
        return check_unique(r for s in suites for r in load_path(_builtin_root() / s, suite=s))
    if name_or_path in suites:
        return load_path(_builtin_root() / name_or_path, suite=name_or_path)
    p = Path(name_or_path)
    if p.exists():
        return load_path(p)
    raise InputError(
        f"unknown suite '{name_or_path}': it is not a built-in suite and no such path exists",
        hint=f"built-in suites: {', '.join([*suites, ALL_SUITES])}; or give a YAML file or directory",
    )


def load_suites(names: Sequence[str]) -> list[ScenarioRecord]:
    """Several suites at once; scenario ids must be unique across them."""
    return check_unique(r for n in names for r in load_suite(n))


def find_scenario(scenario_id: str) -> ScenarioRecord:
    for r in load_suite(ALL_SUITES):
        if r.id == scenario_id:
            return r
    raise InputError(
        f"no built-in scenario has id '{scenario_id}'",
        hint="`deceptwatch scenarios list` shows the ids",
    )
