"""Shared pieces of the property-based tests that damage real files: any JSON value, and
every place in a JSON document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st


def json_values(meaningful: Sequence[str], *, finite: bool = True) -> st.SearchStrategy[Any]:
    """Small JSON values, with strings the code under test reads for meaning mixed in
    (`finite=False` adds NaN and infinities, which Python's json writes and reads)."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-3, 10)
        | st.floats(width=32, allow_nan=not finite, allow_infinity=not finite)
        | st.text(max_size=8)
        | st.sampled_from(list(meaningful)),
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
        ),
        max_leaves=5,
    )


def places(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document (the root is ``()``), parents before children."""
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += places(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += places(v, (*at, i))
    return out


def reaches(doc: Any, at: tuple[Any, ...]) -> bool:
    """Whether the place `at` exists in `doc` (an earlier change may have removed it)."""
    for step in at:
        inside = (isinstance(doc, dict) and step in doc) or (
            isinstance(doc, list) and isinstance(step, int) and step < len(doc)
        )
        if not inside:
            return False
        doc = doc[step]
    return True


def change(doc: Any, at: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    """`doc` with the value at `at` replaced by `value` (or deleted), in place."""
    if not at:
        return value
    parent = doc
    for step in at[:-1]:
        parent = parent[step]
    if delete:
        del parent[at[-1]]
    else:
        parent[at[-1]] = value
    return doc
