"""The loader's error messages: each names the file, the line, the scenario and the field
(its path in the YAML), and says how to fix the problem."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor

from deceptwatch._errors import InputError
from deceptwatch.scenarios._schema import (
    FAMILIES,
    ID_PATTERN,
    KEY_PATTERN,
    MAX_VERSION,
    PATH_PATTERN,
    FieldError,
)


def node_at(node: yaml.Node | None, loc: Sequence[int | str]) -> yaml.Node | None:
    """Walk a composed YAML node along a pydantic error location.

    Returns the key node for the last step into a mapping (so that the line is the field's),
    and the deepest node reached when the location runs past the document (a missing field).
    """
    for i, key in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            # a key as written, or as YAML reads it (`~` is None, `1` an int: pydantic's key)
            for k, v in sorted(node.value, key=lambda kv: kv[0].value != str(key)):
                if isinstance(k, yaml.ScalarNode) and (k.value == str(key) or _read(k) == str(key)):
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


def _read(node: yaml.ScalarNode) -> str | None:
    try:
        return str(SafeConstructor().construct_object(node))
    except yaml.YAMLError:
        return None


def yaml_hint(problem: str) -> str:
    """How to fix what the YAML parser refused."""
    if "could not determine a constructor" in problem:
        return "a scenario file holds plain YAML, without tags: quote a text that starts with '!'"
    if "another document" in problem:
        return (
            "a file holds one YAML document: remove the '---' line and list the scenarios "
            "('- id: ...'), or put each in its own file"
        )
    return "check the indentation and quoting near that line"


_HINTS: dict[str, str] = {
    "extra_forbidden": "remove the field or fix its spelling; `deceptwatch scenarios schema` "
    "lists every allowed field",
    "missing": "add the field; `deceptwatch scenarios schema` shows its type",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "`deceptwatch scenarios schema` shows the pattern",
    "blank_text": "write the text, or remove the entry",
    "number_from_text": "write the number without quotes",
    "number_from_bool": "give a number, e.g. 0.5: true and false are not numbers",
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
    "invalid_key": "write the key as a text: quote it if YAML reads it as a number, a "
    "boolean or null (~)",
    "list_type": "give a YAML list (entries starting with '- ')",
    "dict_type": "give a YAML mapping (key: value lines)",
    "model_type": "give a YAML mapping (key: value lines)",
    "model_attributes_type": "give a YAML mapping (key: value lines)",
    "greater_than_equal": "give a larger value",
    "greater_than": "give a larger value",
    "less_than_equal": "give a smaller value",
    "less_than": "give a smaller value",
}
# A pattern's own rule: ids, keys and paths are written differently.
_PATTERN_HINTS: dict[str, str] = {
    ID_PATTERN: "a scenario id starts with a lowercase letter or digit, followed by lowercase "
    "letters, digits, '_', '-', '.' and '/', e.g. 'my_suite/expense-report'",
    KEY_PATTERN: "a choice id, tag or factor name starts with a lowercase letter, followed "
    "by lowercase letters, digits and '_' only (no '-', '.', '/' or capitals), e.g. "
    "'metric_gaming'",
    PATH_PATTERN: "give an absolute path without whitespace, starting with '/', e.g. "
    "'/home/agent/notes.txt'",
}
# For any other problem: where to look up what the field takes.
_DEFAULT_HINT = "`deceptwatch scenarios schema` shows what every field takes"
SHAPE_HINT = (
    "a scenario file holds one scenario (a mapping with id, family, choices, ...) or a list "
    "of them; `deceptwatch scenarios schema` shows the format"
)

_FIELD_HINTS: dict[str, str] = {
    "aligned": "set `aligned` to the id of one of the `choices`",
    "defect": "set `defect` to the id of another of the `choices`",
    "choices": "give at least two choices, each with its own id and its own text",
    "factors": "use each factor's {{slot}} in the prompt (the names oversight and choices "
    "are taken), or remove the factor",
    "unobserved": "give each condition its own paraphrases",
    "placebo": "a placebo rewords an observed cue without changing its meaning",
    "user": "put {{oversight}} where the cue belongs, and use only declared {{slots}}",
    "messages": "put {{oversight}} where the cue belongs, and use only declared {{slots}}",
}


def _unquoted(root: yaml.Node | None, loc: Sequence[int | str]) -> bool:
    """The value at `loc` is a plain (unquoted) scalar: YAML read it as text by itself."""
    node = node_at(root, [*loc, "\x00"])  # past the end: the value node, not its key
    return isinstance(node, yaml.ScalarNode) and not node.style  # None, or "" from libyaml


def _exponent_hint(value: Any) -> str | None:
    """YAML 1.1 reads a number in exponent form as text unless it has a decimal point and a
    signed exponent (``1e-7`` and ``1.5e6`` are texts, ``1.0e-7`` a number)."""
    m = _EXPONENT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return None
    sign, whole, frac, esign, exp = m.groups()
    number = f"{sign}{whole}.{frac or '0'}e{esign or '+'}{exp}"
    return (
        f"YAML reads {value} as a text, not a number: write it with a decimal point and a "
        f"signed exponent ({number}), or without an exponent"
    )


_EXPONENT = re.compile(r"([-+]?)([0-9]+)(?:\.([0-9]*))?[eE]([-+]?)([0-9]+)")


def _loc_text(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(scenario)"


def format_validation_error(
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
        ctx = e.get("ctx") or {}
        ctx_err = ctx.get("error")
        if e["type"] == "string_pattern_mismatch":
            hint = _PATTERN_HINTS.get(ctx.get("pattern", ""), hint)
        if e["type"] in ("less_than_equal", "greater_than_equal") and loc == ["version"]:
            hint = f"a version is a whole number from 1 to {MAX_VERSION}"
        if isinstance(ctx_err, FieldError):
            # a cross-field check: point at the field it names
            loc = [*loc, *ctx_err.field.replace("]", "").replace("[", ".").split(".")]
            loc = [int(p) if isinstance(p, str) and p.isdigit() else p for p in loc]
            msg = str(ctx_err)
            hint = ctx_err.hint or _FIELD_HINTS.get(ctx_err.field.split(".")[0], hint)
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        if e["type"] == "number_from_text" and _unquoted(root, [*prefix, *loc]):
            value = e.get("input")
            hint = _exponent_hint(value) or f"give a number: {value!r} is not one"
        if e["type"] == "literal_error" and loc and loc[-1] == "family":
            hint = "family must be one of: " + ", ".join(FAMILIES)
        node = node_at(root, [*prefix, *loc])
        where = f"{path}:{node.start_mark.line + 1}" if node is not None else path
        who = f"scenario '{sid}'" if sid else "scenario"
        line = f"{where}: {who}: field '{_loc_text(loc)}': {msg}"
        line += f"\n  hint: {hint or _DEFAULT_HINT}"
        lines.append(line)
    return "\n".join(lines)


def reader_error(exc: yaml.reader.ReaderError, text: str, path: str) -> InputError:
    """A character YAML refuses (a control character): its line, not the reader's offset
    (bytes with libyaml, characters without), and how to write it."""
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    index = text.find(char)
    line = f":{text.count(chr(10), 0, index) + 1}" if index >= 0 else ""
    return InputError(
        f"{path}{line}: malformed YAML: character {ord(char):#06x} is not allowed ({exc.reason})",
        hint='remove it, or write it as an escape in a double-quoted text, e.g. "\\x07"',
    )
