"""The CLI's Typer app class: help that shows what each option takes.

Typer 0.29 shows an option's Python type in help, ``--epochs <int>`` and ``--model
<list[str]>``, and gives flags one too, ``--json <bool>`` and even ``--help <bool>``, as if
they took a value. `App` makes every command and group with `Command` and `Group`, which
name an option's value in upper case, as click does (``--epochs INTEGER``, or the
``metavar`` an option gives, e.g. ``--model SPEC``), and show nothing for a flag; an
argument shows its metavar (``PATH``) without ``<list[Path]>`` after it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

F = TypeVar("F", bound=Callable[..., Any])

_VALUE_NAMES: dict[object, str] = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


class _NamedArgument(TyperArgument):
    """An argument whose metavar says what it takes: no Python type beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _name_values(params: list[Any]) -> None:
    for param in params:
        if type(param) is TyperArgument and param.metavar is not None:
            param.__class__ = _NamedArgument  # same fields; only the help differs
        if param.param_type_name != "option" or param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""  # a flag takes no value
            continue
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        if get_origin(annotation) is list:  # a repeatable option: one value each time
            (annotation,) = get_args(annotation)
        name = _VALUE_NAMES.get(annotation)
        if name is not None:
            param.metavar = name


class _NamesValues:
    """Mixed into a command or group: its options, and its --help, as `_name_values` says."""

    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_values(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            _name_values([option])
        return option


class Command(_NamesValues, TyperCommand):
    pass


class Group(_NamesValues, TyperGroup):
    pass


class App(typer.Typer):
    """`typer.Typer` whose groups and commands are `Group` and `Command`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        kwargs.setdefault("cls", Command)
        decorate: Callable[[F], F] = super().command(*args, **kwargs)
        return decorate
