"""Load scenario files and suites, with errors that name the file, scenario, field and line.

A YAML file holds one scenario (a mapping) or a list of them. A suite is a directory of such
files; the built-in suites live in ``deceptwatch/scenarios/builtin/<suite>/``. Files are
parsed with PyYAML's safe loader (its C build, libyaml, when installed: about 10x as fast as
the pure-Python one, which loading every built-in suite used to wait on for over 2 s), which
refuses a key repeated in one mapping (see `_yaml`). Only when a file has a problem is it
parsed again, node by node (``yaml.compose``), for the line numbers of the error messages.

A directory, or several suites or paths, are read whole: the InputError lists the problems of
every file (and every directory that cannot be read), and nothing is loaded until none is left.
"""

from __future__ import annotations

import errno
import importlib.resources
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from deceptwatch._errors import InputError
from deceptwatch._ids import content_hash
from deceptwatch.scenarios._messages import (
    SHAPE_HINT,
    format_validation_error,
    node_at,
    reader_error,
    yaml_hint,
)
from deceptwatch.scenarios._schema import Scenario
from deceptwatch.scenarios._yaml import DuplicateKeyError, compose, safe_load

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


# --------------------------------------------------------------------------- loading


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
            return compose(self._text)
        except yaml.YAMLError:  # pragma: no cover - the same parser read it already
            return None


def parse_scenarios(text: str, *, path: str, suite: str) -> list[ScenarioRecord]:
    """Parse and validate one YAML document holding a scenario or a list of scenarios."""
    try:
        data = safe_load(text)
    except DuplicateKeyError as exc:
        raise InputError(
            f"{path}:{exc.line}: key {exc.key!r} appears twice in one mapping (first on line "
            f"{exc.first_line}); YAML would keep only the last one, silently",
            hint="remove one of the two, or merge them into one",
        ) from None
    except yaml.reader.ReaderError as exc:
        raise reader_error(exc, text, path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{where}: malformed YAML: {problem}", hint=yaml_hint(problem)) from None
    except UnicodeEncodeError as exc:  # a lone surrogate, which no UTF-8 file can hold
        raise InputError(
            f"{path}: not UTF-8 text (character {exc.start} is a lone surrogate)",
            hint="save it as UTF-8",
        ) from None
    if data is None:
        raise InputError(f"{path}: the file is empty", hint=SHAPE_HINT)
    if data == []:
        raise InputError(f"{path}:1: the file holds an empty list: no scenarios", hint=SHAPE_HINT)
    items: list[tuple[tuple[int, ...], Any]]
    if isinstance(data, list):
        items = [((i,), d) for i, d in enumerate(data)]
    elif isinstance(data, dict):
        items = [((), data)]
    else:
        raise InputError(
            f"{path}:1: expected a scenario (a mapping) or a list of scenarios, "
            f"got {type(data).__name__}",
            hint=SHAPE_HINT,
        )
    records: list[ScenarioRecord] = []
    problems: list[str] = []
    nodes = _Nodes(text)
    for prefix, item in items:
        sid = item.get("id") if isinstance(item, dict) else None
        sid = sid if isinstance(sid, str) else None
        if not isinstance(item, dict):
            node = node_at(nodes.root, prefix)
            line = node.start_mark.line + 1 if node is not None else 1
            problems.append(
                f"{path}:{line}: list entry {prefix[0]} is not a mapping\n  hint: {SHAPE_HINT}"
            )
            continue
        try:
            scenario = Scenario.model_validate(item)
        except ValidationError as err:
            problems.append(
                format_validation_error(err, path=path, sid=sid, root=nodes.root, prefix=prefix)
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


def _unreadable(path: Path, exc: OSError, what: str) -> str:
    return str(
        InputError(
            f"{path}: cannot read this {what}: {exc.strerror or exc}",
            hint="make it readable (see `ls -ld` on it), or move it out of the directory given",
        )
    )


def _is_file(entry: os.DirEntry[str]) -> bool:
    """`entry` is a regular file, or a link to one, as ``Path.is_file`` says: False for a
    dangling or looping link, an error for one this user may not follow."""
    try:
        return entry.is_file()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF):
            return False
        raise


def _yaml_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The YAML files under `directory`, recursively and sorted, and a problem for each
    directory or entry on the way that cannot be read (``Path.rglob`` skips those silently,
    so that a suite would quietly lose their scenarios). Links to directories are not
    followed, as ``rglob`` does not."""
    files: list[Path] = []
    problems: list[str] = []
    pending = [directory]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            problems.append(_unreadable(current, exc, "directory"))
            continue
        for entry in entries:
            path = current / entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif path.suffix in YAML_SUFFIXES and _is_file(entry):
                    files.append(path)
            except OSError as exc:
                problems.append(_unreadable(path, exc, "entry"))
    return sorted(files), sorted(problems)


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _duplicates(records: Iterable[ScenarioRecord]) -> tuple[list[ScenarioRecord], list[str]]:
    """`records` with each id once, and a problem for each id met again."""
    seen: dict[str, ScenarioRecord] = {}
    out = []
    problems = []
    for r in records:
        first = seen.get(r.id)
        if first is None:
            seen[r.id] = r
            out.append(r)
        elif _same_file(first.source, r.source):
            also = "" if first.source == r.source else f" (the same file as {first.source})"
            problems.append(
                str(
                    InputError(
                        f"{r.source}: read twice{also}: the suites or paths given overlap, or a "
                        "link leads to a file given as well",
                        hint="read each file once: give each file, directory or suite once, "
                        "none inside another",
                    )
                )
            )
        else:
            problems.append(
                str(
                    InputError(
                        f"{r.source}: scenario '{r.id}': field 'id': duplicate id, also "
                        f"defined in {first.source}",
                        hint="give every scenario a unique id (bump `version` to revise one)",
                    )
                )
            )
    # a file read twice is one problem, not one per scenario in it
    return out, list(dict.fromkeys(problems))


def check_unique(records: Iterable[ScenarioRecord]) -> list[ScenarioRecord]:
    """`records`, or an InputError naming every id that is defined twice."""
    out, problems = _duplicates(records)
    if problems:
        raise InputError("\n".join(problems))
    return out


def _load_dir(p: Path, suite: str) -> tuple[list[ScenarioRecord], list[str]]:
    """Every scenario under a directory, and a problem for every file that has one."""
    files, problems = _yaml_files(p)
    if not files and not problems:
        problems.append(
            str(
                InputError(
                    f"{p}: no .yaml or .yml files in this directory",
                    hint="scenario files end in .yaml or .yml",
                )
            )
        )
    records: list[ScenarioRecord] = []
    for f in files:
        try:
            records.extend(load_file(f, suite=suite))
        except InputError as exc:
            problems.append(str(exc))
    return records, problems


def load_path(path: str | Path, *, suite: str | None = None) -> list[ScenarioRecord]:
    """Load a YAML file, or every YAML file under a directory (recursively, sorted). A
    directory is read whole: the InputError names every file that has a problem."""
    p = Path(path)
    if p.is_dir():
        records, problems = _load_dir(p, suite or p.name)
        unique, repeated = _duplicates(records)
        if problems or repeated:
            raise InputError("\n".join([*problems, *repeated]))
        return unique
    if p.is_file():
        return check_unique(load_file(p, suite=suite))
    what = "not a regular file or directory" if p.exists() else "no such file or directory"
    raise InputError(f"{p}: {what}", hint="give a YAML file or a directory of them")


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _given_twice(given: Sequence[tuple[str, str]], what: str) -> list[str]:
    """A problem for each pair of (name, real path) of which one reads the other's files:
    the same path twice, or a file or directory inside a directory given as well."""
    problems = []
    for j, (name, target) in enumerate(given):
        for earlier, before in given[:j]:
            if target == before:
                said = (
                    f"{what} '{name}' is given twice"
                    if earlier == name
                    else f"{what}s '{earlier}' and '{name}' are the same"
                )
            elif _inside(target, before) or _inside(before, target):
                inner, outer = (name, earlier) if _inside(target, before) else (earlier, name)
                said = f"{what} '{inner}' is part of '{outer}', which is given as well"
            else:
                continue
            hint = f"give each {what} once, and none inside another: its files would be read twice"
            problems.append(str(InputError(said, hint=hint)))
            break
    return problems


def load_paths(paths: Sequence[str | Path]) -> list[ScenarioRecord]:
    """Several YAML files or directories, read whole: the InputError names every path
    given twice, every file that has a problem, and every id defined twice."""
    given = [(str(p), os.path.realpath(p)) for p in paths]
    return _read_all(given, "path", load_path)


def _builtin_root() -> Path:
    return Path(str(importlib.resources.files("deceptwatch.scenarios") / "builtin"))


def builtin_suites() -> list[str]:
    """Names of the built-in suites."""
    root = _builtin_root()
    return sorted(d.name for d in root.iterdir() if d.is_dir() and _yaml_files(d)[0])


def _no_suite(name: str, suites: Sequence[str]) -> InputError:
    what = (
        "a suite name is empty"
        if not name.strip()
        else f"unknown suite '{name}': it is not a built-in suite and no such path exists"
    )
    return InputError(
        what,
        hint=f"built-in suites: {', '.join([*suites, ALL_SUITES])}; or give a YAML file or directory",
    )


def load_suite(name_or_path: str | os.PathLike[str]) -> list[ScenarioRecord]:
    """A built-in suite by name, ``all`` for every built-in suite, or a path."""
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str):
        raise InputError(
            f"a suite is a name or a path, got {name_or_path!r}",
            hint="e.g. load_suite('core'), or load_suites(['core', 'honeypot']) for several",
        )
    suites = builtin_suites()
    if not name_or_path.strip():
        raise _no_suite(name_or_path, suites)
    if name_or_path == ALL_SUITES:
        return check_unique(r for s in suites for r in load_path(_builtin_root() / s, suite=s))
    if name_or_path in suites:
        return load_path(_builtin_root() / name_or_path, suite=name_or_path)
    p = Path(name_or_path)
    if p.exists():
        return load_path(p)
    raise _no_suite(name_or_path, suites)


def _suite_target(name: str, suites: Sequence[str]) -> str:
    """The real path a suite name reads, for telling that two names read the same files."""
    if name == ALL_SUITES:
        return os.path.realpath(_builtin_root())
    return os.path.realpath(_builtin_root() / name if name in suites else name)


def load_suites(names: Sequence[str] | str) -> list[ScenarioRecord]:
    """Several suites at once; scenario ids must be unique across them. Every suite is
    read: the InputError names each suite given twice and each problem of every suite.
    One name (or path) alone counts as a list of it."""
    if isinstance(names, str | os.PathLike):
        names = [os.fspath(names)]
    names = [os.fspath(n) if isinstance(n, os.PathLike) else n for n in names]
    for n in names:
        if not isinstance(n, str):
            raise InputError(
                f"a suite is a name or a path, got {n!r}", hint="e.g. load_suites(['core'])"
            )
    suites = builtin_suites()
    given = [(n, _suite_target(n, suites)) for n in names if n.strip()]
    return _read_all(given, "suite", load_suite, every=names)


def _read_all(
    given: list[tuple[str, str]],
    kind: str,
    load: Callable[[str], list[ScenarioRecord]],
    every: Sequence[str] | None = None,
) -> list[ScenarioRecord]:
    """The records of every `given` (name, what it resolves to) path or suite, read whole
    with `load`: the InputError names each one given twice, each problem of every one, and
    every id defined twice. `every` is the names to read, when not all those given."""
    problems = _given_twice(given, kind)
    if problems:
        raise InputError("\n".join(problems))
    records: list[ScenarioRecord] = []
    for name in every if every is not None else [n for n, _ in given]:
        try:
            records.extend(load(name))
        except InputError as exc:
            problems.append(str(exc))
    unique, repeated = _duplicates(records)
    if problems or repeated:
        raise InputError("\n".join([*problems, *repeated]))
    return unique


def find_scenario(scenario_id: str) -> ScenarioRecord:
    for r in load_suite(ALL_SUITES):
        if r.id == scenario_id:
            return r
    raise InputError(
        f"no built-in scenario has id '{scenario_id}'",
        hint="`deceptwatch scenarios list` shows the ids",
    )
