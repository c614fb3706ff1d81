"""Reading scenario YAML: PyYAML's safe loader (its parser through libyaml when PyYAML was
built with it), refusing a key repeated in one mapping, which YAML would otherwise resolve
silently by keeping the last (two `oversight:` blocks, two `user:` keys).

`safe_load` composes the node tree with the safe loader, checks every mapping's own keys
there (a key that overrides one merged in with ``<<: *anchor`` is not a repeat: merged keys
are not in the mapping's node), then constructs the data with PyYAML's SafeConstructor: the
same two steps as ``yaml.safe_load``, at the same cost.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping holds the same key twice; `problem_mark` is the repeated key's."""

    def __init__(self, key: Any, first: yaml.Node, again: yaml.Node) -> None:
        super().__init__(None, None, f"key {key!r} appears twice in one mapping", again.start_mark)
        self.key = key
        self.first_line = first.start_mark.line + 1
        self.line = again.start_mark.line + 1


def compose(text: str) -> yaml.Node | None:
    """The node tree of `text`, by the safe loader (libyaml's when PyYAML has it)."""
    if yaml.__with_libyaml__:
        return yaml.compose(text, Loader=yaml.CSafeLoader)
    return yaml.compose(text, Loader=yaml.SafeLoader)


def check_keys(root: yaml.Node | None) -> None:
    """Raise DuplicateKeyError for the first repeated key in the file, if any mapping holds
    one (keys compared as constructed, as a mapping would merge them: ``1`` and ``01`` are
    one key). Each node is visited once, however many aliases lead to it."""
    keys = SafeConstructor()
    repeats: list[tuple[int, Any, yaml.Node, yaml.Node]] = []
    visited: set[int] = set()
    pending = [root] if root is not None else []
    while pending:
        node = pending.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                pending += [key_node, value_node]
                if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
                    continue
                try:
                    key = keys.construct_object(key_node)
                    first = seen.setdefault(key, key_node)
                except (TypeError, yaml.YAMLError):  # unhashable or unreadable: the
                    continue  # constructor says so in safe_load, as yaml.safe_load would
                if first is not key_node:
                    repeats.append((key_node.start_mark.index, key, first, key_node))
    if repeats:
        _, key, first, again = min(repeats, key=lambda r: r[0])
        raise DuplicateKeyError(key, first, again)


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, refusing a key repeated in one mapping."""
    root = compose(text)
    if root is None:
        return None
    check_keys(root)
    return SafeConstructor().construct_document(root)
