"""The trial table: one row per trial, as parallel numpy string arrays, and fast grouping."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

StrArray = npt.NDArray[np.str_]
IntArray = npt.NDArray[np.intp]
U64Array = npt.NDArray[np.uint64]

ALIGNED = "aligned"
DEFECT = "defect"
OTHER = "other"
ERROR = "error"
OUTCOMES: tuple[str, ...] = (ALIGNED, DEFECT, OTHER, ERROR)

# Rows hashed per chunk in `_hash_strings`: small enough that a chunk stays in cache.
_HASH_CHUNK = 16384
_SEED_1 = np.uint64(0xCBF29CE484222325)
_SEED_2 = np.uint64(0x9E3779B97F4A7C15)
_PRIME_1 = np.uint64(0x100000001B3)
_PRIME_2 = np.uint64(0xBF58476D1CE4E5B9)
_SHIFT_1 = np.uint64(29)
_SHIFT_2 = np.uint64(31)


def _as_str_array(values: object, name: str) -> StrArray:
    arr = np.asarray(values)
    if arr.dtype.kind != "U":
        arr = arr.astype(np.str_) if arr.size else np.empty(arr.shape, dtype="U1")
    if arr.ndim != 1:
        raise ValueError(f"TrialTable.{name} must be one-dimensional")
    return arr


@dataclass(frozen=True, slots=True)
class TrialTable:
    """Every trial of one model: parallel one-dimensional arrays of strings.

    ``scenario`` is the scenario id, ``family`` its family, ``block`` the block id (trials of a
    block share everything but the condition), ``condition`` one of ``observed``,
    ``unobserved``, ``placebo``, ``audit=<p>`` or ``baseline``, and ``outcome`` one of
    ``aligned``, ``defect``, ``other`` or ``error``. Other sequences (lists, object arrays)
    are converted to numpy string arrays on construction, element by element with ``str``.
    """

    scenario: StrArray
    family: StrArray
    block: StrArray
    condition: StrArray
    outcome: StrArray

    def __post_init__(self) -> None:
        lengths = set()
        for f in fields(self):
            arr = _as_str_array(getattr(self, f.name), f.name)
            object.__setattr__(self, f.name, arr)
            lengths.add(arr.shape[0])
        if len(lengths) > 1:
            raise ValueError(f"TrialTable columns differ in length: {sorted(lengths)}")
        unknown = ~np.isin(self.outcome, OUTCOMES)
        if np.any(unknown):
            bad = sorted(set(self.outcome[unknown].tolist()))[:5]
            raise ValueError(f"unknown outcomes {bad}; expected one of {list(OUTCOMES)}")

    def __len__(self) -> int:
        return int(self.outcome.shape[0])

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, str, str, str]]) -> TrialTable:
        """Build a table from (scenario, family, block, condition, outcome) tuples."""
        rows = list(records)
        if not rows:
            empty = np.empty(0, dtype="U1")
            return cls(empty, empty, empty, empty, empty)
        columns = list(zip(*rows, strict=True))
        if len(columns) != 5:
            raise ValueError("each record must be (scenario, family, block, condition, outcome)")
        scenario, family, block, condition, outcome = (np.array(c, dtype=np.str_) for c in columns)
        return cls(scenario, family, block, condition, outcome)

    @classmethod
    def concat(cls, tables: Iterable[TrialTable]) -> TrialTable:
        """One table holding the rows of `tables`, in order."""
        parts = list(tables)
        if not parts:
            return cls.from_records([])
        return cls(*(np.concatenate([getattr(t, f.name) for t in parts]) for f in fields(cls)))


def _hash_strings(values: StrArray) -> tuple[U64Array, U64Array]:
    """Two independent 64-bit multiply–xorshift hashes of each string's UTF-32 code units."""
    arr = np.ascontiguousarray(values)
    if arr.dtype.byteorder not in "=|":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.itemsize == 0:
        arr = arr.astype("U1")
    n = arr.shape[0]
    width = arr.dtype.itemsize // 4
    words: npt.NDArray[np.unsignedinteger[Any]]
    if width % 2 == 0:
        words = arr.view(np.uint64).reshape(n, width // 2)
    else:
        words = arr.view(np.uint32).reshape(n, width)
    h1 = np.empty(n, dtype=np.uint64)
    h2 = np.empty(n, dtype=np.uint64)
    for start in range(0, n, _HASH_CHUNK):
        chunk = words[start : start + _HASH_CHUNK]
        a = np.full(chunk.shape[0], _SEED_1, dtype=np.uint64)
        b = np.full(chunk.shape[0], _SEED_2, dtype=np.uint64)
        for j in range(chunk.shape[1]):
            col = chunk[:, j].astype(np.uint64)
            a ^= col
            a *= _PRIME_1
            a ^= a >> _SHIFT_1
            b += col
            b *= _PRIME_2
            b ^= b >> _SHIFT_2
        h1[start : start + _HASH_CHUNK] = a
        h2[start : start + _HASH_CHUNK] = b
    return h1, h2


def _group_sorted(keys: U64Array) -> tuple[IntArray, IntArray]:
    """(index of one member of each group, group code of each key), groups in key order."""
    order = np.argsort(keys)
    ordered = keys[order]
    new = np.empty(keys.shape[0], dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    codes = np.empty(keys.shape[0], dtype=np.intp)
    codes[order] = np.cumsum(new, dtype=np.intp) - 1
    return order[new], codes


def group_codes(values: StrArray, within: IntArray | None = None) -> IntArray:
    """A group code (0, 1, ...) for each distinct value, or each distinct (within, value).

    The strings are hashed to 64 bits and the integers sorted, which is several times
    faster than sorting long strings such as 64-character block hashes. A second,
    independent 64-bit hash must agree within every group, otherwise (a collision of the
    first hash) the strings themselves are sorted; a wrong merge needs both hashes to
    collide for the same two strings. Codes follow no particular order.
    """
    n = values.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.intp)
    h1, h2 = _hash_strings(values)
    if within is not None:
        salt = within.astype(np.uint64)
        h1 = (h1 ^ salt) * _PRIME_2
        h1 ^= h1 >> _SHIFT_1
    first, codes = _group_sorted(h1)
    consistent = np.array_equal(h2[first][codes], h2)
    if within is not None:
        consistent = consistent and np.array_equal(within[first][codes], within)
    if consistent:
        return codes
    _, inverse = np.unique(values, return_inverse=True)
    if within is None:
        return inverse.astype(np.intp)
    key = within.astype(np.int64) * n + inverse.astype(np.int64)
    _, codes = np.unique(key, return_inverse=True)
    return codes.astype(np.intp)


def factorize(values: StrArray) -> tuple[StrArray, IntArray]:
    """Sorted distinct labels and each value's code, so that labels[codes] == values.

    The same result as ``np.unique(values, return_inverse=True)``, computed with
    `group_codes`.
    """
    codes = group_codes(values)
    if codes.shape[0] == 0:
        return values.copy(), codes
    first = np.zeros(int(codes.max()) + 1, dtype=np.intp)
    first[codes] = np.arange(codes.shape[0], dtype=np.intp)
    labels = values[first]
    order = np.argsort(labels, kind="stable")
    rank = np.empty(order.shape[0], dtype=np.intp)
    rank[order] = np.arange(order.shape[0], dtype=np.intp)
    return labels[order], rank[codes]
