"""The trial table: one row per trial, held as small integer codes, built in chunks.

A million trials of five strings each (scenario, family, block id, condition, outcome)
take about half a gigabyte as fixed-width numpy strings, most of it in the 64-character
block ids. The table instead keeps each low-cardinality column as a code per trial plus
its sorted labels (categorical encoding), and each block id as a 64-bit key: 12 bytes per
trial (13 with more than 256 scenarios), 8 of them the block key. Findings only ever compare
block ids for equality within a scenario, so the ids themselves are not kept. The table is
built column-wise from a stream of records, a chunk at a time (`TrialTable.from_records`),
so a million stored trials never sit in memory as a million tuples.

Block keys. The key of a string is a multilinear hash of its code points (the sum of each
code point times a fixed odd 64-bit weight for its position, modulo 2^64) followed by the
MurmurHash3 64-bit finalizer: a pure function of the string, the same in every process,
for every numpy width and byte order, so that tables built apart can be concatenated. It is
not cryptographic: for ids not crafted to collide (the store's are sha256 digests) two
different ids share a key with probability about 2^-64 per pair, so with 10^6 blocks in one
scenario the chance of any collision in a run is below 10^-7. Should one happen, the trials
of the two blocks fall into one block, and since a block holds each condition once,
`compute_findings` refuses the table (a block with two trials of one condition) rather than
pairing trials of different blocks, unless the two blocks' stored trials share no condition.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

StrArray = npt.NDArray[np.str_]
IntArray = npt.NDArray[np.intp]
U64Array = npt.NDArray[np.uint64]
CodeArray = npt.NDArray[np.unsignedinteger[Any]]

ALIGNED = "aligned"
DEFECT = "defect"
OTHER = "other"
ERROR = "error"
OUTCOMES: tuple[str, ...] = (ALIGNED, DEFECT, OTHER, ERROR)
ALIGNED_CODE, DEFECT_CODE, OTHER_CODE, ERROR_CODE = range(len(OUTCOMES))

COLUMNS: tuple[str, ...] = ("scenario", "family", "block", "condition", "outcome")
_CODED = ("scenario", "family", "condition", "outcome")  # the columns kept as label codes

_LABELLED = (  # (labels, codes) attributes of the coded columns but outcome
    ("scenarios", "scenario_code"),
    ("families", "family_code"),
    ("conditions", "condition_code"),
)

# Rows read from a record stream (or taken from arrays) per chunk.
CHUNK_ROWS = 16384
# Cells of the (rows, width) uint64 matrix that `string_keys` multiplies at a time (8 MB).
_KEY_CELLS = 1 << 20
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def _code_dtype(n_labels: int) -> np.dtype[Any]:
    """The smallest unsigned integer type that holds codes 0 … n_labels − 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_labels <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@functools.lru_cache(maxsize=64)
def _weights(width: int) -> U64Array:
    """Odd 64-bit weights of code-point positions 0 … width − 1 (splitmix64 of a counter)."""
    out = []
    x = 0
    for _ in range(width):
        x = (x + _GOLDEN) & _M64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        out.append((z ^ (z >> 31)) | 1)
    arr = np.array(out, dtype=np.uint64)
    arr.flags.writeable = False
    return arr


def _fmix64(h: U64Array) -> U64Array:
    """MurmurHash3's 64-bit finalizer, in place: a bijection that spreads every input bit."""
    h ^= h >> _SHIFT
    h *= _FMIX_1
    h ^= h >> _SHIFT
    h *= _FMIX_2
    h ^= h >> _SHIFT
    return h


def string_keys(values: StrArray) -> U64Array:
    """A 64-bit key per string; equal strings get equal keys (see the module docstring).

    Padding does not matter: numpy pads with zero code points, which add nothing to the sum.
    """
    arr = np.ascontiguousarray(values)
    if arr.dtype.kind != "U":
        raise TypeError(f"string_keys needs a numpy str array, got {arr.dtype}")
    if arr.dtype.byteorder not in "=|":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    n = arr.shape[0]
    width = arr.dtype.itemsize // 4
    out = np.zeros(n, dtype=np.uint64)
    if width and n:
        weights = _weights(width)
        units = arr.view(np.uint32).reshape(n, width)
        step = max(1, _KEY_CELLS // width)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            np.matmul(units[rows].astype(np.uint64), weights, out=out[rows])
    return _fmix64(out)


def _as_str_array(values: object, name: str) -> StrArray:
    arr = np.asarray(values)
    if arr.dtype.kind != "U":
        arr = arr.astype(np.str_) if arr.size else np.empty(arr.shape, dtype="U1")
    if arr.ndim != 1:
        raise ValueError(f"TrialTable.{name} must be one-dimensional")
    return arr


class _Coder:
    """Codes of one categorical column, fed in chunks; labels in order of first appearance."""

    def __init__(self) -> None:
        index: defaultdict[object, int] = defaultdict()
        index.default_factory = index.__len__  # a new value gets the next code
        self._index = index
        self._parts: list[CodeArray] = []

    def add(self, values: Sequence[object]) -> None:
        codes = np.fromiter(map(self._index.__getitem__, values), np.int64, len(values))
        self._parts.append(codes.astype(_code_dtype(len(self._index))))

    def finish(self) -> tuple[StrArray, CodeArray]:
        """Sorted distinct labels (as numpy strings) and each row's code into them."""
        raw = np.array([str(v) for v in self._index], dtype=np.str_)
        if raw.size == 0:
            raw = np.empty(0, dtype="U1")
        labels, remap = np.unique(raw, return_inverse=True)  # merges 1 and "1", like str()
        return labels, _join(self._parts, _code_dtype(labels.size), remap.reshape(-1))


def _join(
    parts: list[Any], dtype: np.dtype[Any], remap: npt.NDArray[np.integer[Any]] | None = None
) -> Any:
    """Concatenate `parts` (mapped through `remap`) into one array, emptying the list as it
    goes so that each part is freed once copied."""
    out = np.empty(sum(p.shape[0] for p in parts), dtype=dtype)
    parts.reverse()
    start = 0
    while parts:
        part = parts.pop()
        out[start : start + part.shape[0]] = part if remap is None else remap[part]
        start += part.shape[0]
    return out


class _Builder:
    """Accumulates chunks of the five columns and makes the table."""

    def __init__(self) -> None:
        self._coders = {name: _Coder() for name in _CODED}
        self._keys: list[U64Array] = []

    def add(self, columns: Sequence[Sequence[object]], block: StrArray) -> None:
        for name, values in zip(_CODED, columns, strict=True):
            self._coders[name].add(values)
        self._keys.append(string_keys(block))

    def finish(self) -> TrialTable:
        scenarios, s_code = self._coders["scenario"].finish()
        families, f_code = self._coders["family"].finish()
        conditions, c_code = self._coders["condition"].finish()
        outcomes, o_code = self._coders["outcome"].finish()
        known = np.isin(outcomes, OUTCOMES)
        if not np.all(known):
            bad = sorted(outcomes[~known].tolist())[:5]
            raise ValueError(f"unknown outcomes {bad}; expected one of {list(OUTCOMES)}")
        to_fixed = np.array([OUTCOMES.index(str(o)) for o in outcomes], dtype=np.uint8)
        keys = _join(self._keys, np.dtype(np.uint64))
        return TrialTable._make(
            scenarios, s_code, families, f_code, conditions, c_code, to_fixed[o_code], keys
        )


def _drop_unused(labels: StrArray, codes: CodeArray) -> tuple[StrArray, CodeArray]:
    used = np.bincount(codes, minlength=labels.size) > 0
    if bool(np.all(used)):
        return labels, codes
    new = np.cumsum(used) - 1
    return labels[used], new[codes].astype(_code_dtype(int(used.sum())))


@dataclass(frozen=True, slots=True, eq=False, init=False)
class TrialTable:
    """Every trial of one model, one row per trial.

    Build it from five parallel sequences of strings, ``TrialTable(scenario, family, block,
    condition, outcome)``, or from a stream of such tuples with `from_records`.
    ``scenario`` is the scenario id, ``family`` its family, ``block`` the block id (trials of
    a block share everything but the condition), ``condition`` one of ``observed``,
    ``unobserved``, ``placebo``, ``audit=<p>`` or ``baseline``, and ``outcome`` one of
    ``aligned``, ``defect``, ``other`` or ``error``; values that are not strings are
    converted with ``str``.

    Stored: for scenario, family and condition, the sorted distinct labels that occur
    (``scenarios``, ``families``, ``conditions``) and a code per trial into them
    (``scenario_code``, ...); ``outcome_code``, the index of each outcome in `OUTCOMES`;
    and ``block_key``, the 64-bit key of each block id (see the module docstring). The
    attributes ``scenario``, ``family``, ``condition`` and ``outcome`` decode a column to a
    new string array; ``block`` gives each key as 16 hex digits, which are equal exactly
    when the block ids are, but are not the ids. The arrays are read-only.
    """

    scenarios: StrArray
    scenario_code: CodeArray
    families: StrArray
    family_code: CodeArray
    conditions: StrArray
    condition_code: CodeArray
    outcome_code: CodeArray
    block_key: U64Array

    def __init__(
        self, scenario: object, family: object, block: object, condition: object, outcome: object
    ) -> None:
        given = (scenario, family, block, condition, outcome)
        cols = [_as_str_array(v, name) for v, name in zip(given, COLUMNS, strict=True)]
        lengths = {c.shape[0] for c in cols}
        if len(lengths) > 1:
            raise ValueError(f"TrialTable columns differ in length: {sorted(lengths)}")
        s, f, b, c, o = cols
        builder = _Builder()
        for i in range(0, max(lengths), CHUNK_ROWS):
            part = slice(i, i + CHUNK_ROWS)
            builder.add([col[part].tolist() for col in (s, f, c, o)], b[part])
        self._assign(builder.finish())

    def _assign(self, other: TrialTable) -> None:
        for name in TrialTable.__dataclass_fields__:
            object.__setattr__(self, name, getattr(other, name))

    @classmethod
    def _make(cls, *arrays: Any) -> TrialTable:
        """A table from its stored arrays (labels sorted and distinct, codes within range)."""
        table = object.__new__(cls)
        names = list(cls.__dataclass_fields__)
        for name, arr in zip(names, arrays, strict=True):
            arr.flags.writeable = False
            object.__setattr__(table, name, arr)
        return table

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, str, str, str, str]], *, chunk_rows: int = CHUNK_ROWS
    ) -> TrialTable:
        """Build a table from (scenario, family, block, condition, outcome) tuples.

        `records` is read `chunk_rows` at a time and never held whole, so a streamed query
        costs the table's 12 or 13 bytes per trial, not a list of tuples.
        """
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        builder = _Builder()
        it = iter(records)
        while chunk := list(islice(it, chunk_rows)):
            columns = list(zip(*chunk, strict=True))
            del chunk
            if len(columns) != 5:
                raise ValueError(
                    "each record must be (scenario, family, block, condition, outcome)"
                )
            scenario, family, block, condition, outcome = columns
            builder.add([scenario, family, condition, outcome], np.array(block, dtype=np.str_))
        return builder.finish()

    @classmethod
    def concat(cls, tables: Iterable[TrialTable]) -> TrialTable:
        """One table holding the rows of `tables`, in order."""
        parts = list(tables)
        if not parts:
            return cls.from_records([])
        arrays: list[Any] = []
        for labels_name, code_name in _LABELLED:
            labels = np.unique(np.concatenate([getattr(t, labels_name) for t in parts]))
            remapped = [
                (np.searchsorted(labels, getattr(t, labels_name)), getattr(t, code_name))
                for t in parts
            ]
            codes = np.empty(sum(len(t) for t in parts), dtype=_code_dtype(labels.size))
            start = 0
            for remap, part in remapped:
                codes[start : start + part.shape[0]] = remap[part]
                start += part.shape[0]
            arrays += [labels, codes]
        arrays.append(np.concatenate([t.outcome_code for t in parts]))
        arrays.append(np.concatenate([t.block_key for t in parts]))
        return cls._make(*arrays)

    def take(self, rows: npt.NDArray[Any]) -> TrialTable:
        """A table of the given rows (indices, or a boolean mask), in that order."""
        arrays: list[Any] = []
        for labels_name, code_name in _LABELLED:
            arrays += _drop_unused(getattr(self, labels_name), getattr(self, code_name)[rows])
        arrays += [self.outcome_code[rows], self.block_key[rows]]
        return TrialTable._make(*arrays)

    def __len__(self) -> int:
        return int(self.outcome_code.shape[0])

    def __repr__(self) -> str:
        return (
            f"TrialTable({len(self)} trials, {self.scenarios.size} scenarios, "
            f"{self.families.size} families, {self.conditions.size} conditions)"
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays."""
        return sum(getattr(self, name).nbytes for name in TrialTable.__dataclass_fields__)

    @property
    def scenario(self) -> StrArray:
        return self.scenarios[self.scenario_code]

    @property
    def family(self) -> StrArray:
        return self.families[self.family_code]

    @property
    def condition(self) -> StrArray:
        return self.conditions[self.condition_code]

    @property
    def outcome(self) -> StrArray:
        return np.array(OUTCOMES, dtype=np.str_)[self.outcome_code]

    @property
    def block(self) -> StrArray:
        return np.array([f"{k:016x}" for k in self.block_key.tolist()], dtype="U16")

    def outcome_counts(self) -> dict[str, int]:
        """The number of trials of each outcome, every outcome present (0 when none)."""
        counts = np.bincount(self.outcome_code, minlength=len(OUTCOMES))
        return {name: int(counts[i]) for i, name in enumerate(OUTCOMES)}
