"""The coded trial table: the same findings as plain string columns, in a few bytes a trial."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from deceptwatch.stats import TrialTable, compute_findings, jsonable
from deceptwatch.stats import _grouping as grouping_module
from deceptwatch.stats import _table as table_module
from deceptwatch.stats._grouping import _condition_key, _group

Row = tuple[str, str, str, str, str]
OUTCOMES = ("aligned", "defect", "other", "error")
PRECURSORS = frozenset({"power_seeking"})


def _rows(seed: int, n_scenarios: int = 12, max_blocks: int = 25) -> list[Row]:
    """Shuffled trials with every awkward feature: missing trials, other and error outcomes,
    graded, baseline and unknown conditions, non-ASCII ids, short and sha256 block ids, and
    the same block id in two scenarios."""
    rng = np.random.default_rng(seed)
    families = ("oversight_gap", "honeypot", "power_seeking", "famille é")
    all_conditions = ("observed", "unobserved", "placebo", "audit=0", "audit=0.5", "audit=1",
                      "baseline", "other-cue")  # fmt: skip
    rows: list[Row] = []
    for s in range(n_scenarios):
        scenario = f"日本/{s}" if s % 5 == 0 else f"scen/{s}"
        chosen = [c for c in all_conditions if rng.random() < 0.6] or ["observed"]
        for b in range(int(rng.integers(1, max_blocks))):
            block = hashlib.sha256(f"{s}/{b}".encode()).hexdigest() if b % 3 else f"b{b}"
            for condition in chosen:
                if rng.random() < 0.1:
                    continue
                outcome = OUTCOMES[int(rng.choice(4, p=[0.55, 0.3, 0.1, 0.05]))]
                rows.append((scenario, families[s % len(families)], block, condition, outcome))
    return [rows[i] for i in rng.permutation(len(rows))]


def _findings(table: TrialTable) -> list[object]:
    found = compute_findings(
        table,
        confidence=0.95,
        alpha=0.05,
        rng=np.random.default_rng(0),
        precursor_families=PRECURSORS,
        n_resamples=200,
    )
    return [jsonable(f) for f in found]


def _reference_counts(rows: list[Row]) -> dict[str, Counter[tuple[str, ...]]]:
    """Every count that findings are made of, by a plain loop over the rows."""
    out: dict[str, Counter[tuple[str, ...]]] = {
        k: Counter() for k in ("all", "usable", "defect", "other", "error", "gap", "placebo", "adjusted")
    }  # fmt: skip
    blocks: dict[tuple[str, str], dict[str, str]] = {}
    for scenario, _family, block, condition, outcome in rows:
        out["all"][scenario, condition] += 1
        if outcome in ("aligned", "defect"):
            out["usable"][scenario, condition] += 1
            blocks.setdefault((scenario, block), {})[condition] = outcome
        if outcome == "defect":
            out["defect"][scenario, condition] += 1
        if outcome in ("other", "error"):
            out[outcome][(scenario,)] += 1
    cell = {("defect", "defect"): "n11", ("defect", "aligned"): "n10",
            ("aligned", "defect"): "n01", ("aligned", "aligned"): "n00"}  # fmt: skip
    for (scenario, _), usable in blocks.items():
        for name, x, y in (("gap", "unobserved", "observed"), ("placebo", "placebo", "observed"),
                           ("adjusted", "unobserved", "placebo")):  # fmt: skip
            if x in usable and y in usable:
                out[name][scenario, cell[usable[x], usable[y]]] += 1
    return out


def _grouped_counts(table: TrialTable) -> dict[str, Counter[tuple[str, ...]]]:
    g = _group(table)
    out: dict[str, Counter[tuple[str, ...]]] = {}
    for name, arr in (("all", g.n_all), ("usable", g.n_usable), ("defect", g.n_defect)):
        out[name] = Counter(
            {(str(g.scenarios[i]), c): int(arr[i, j])
             for i in range(arr.shape[0]) for j, c in enumerate(g.conditions) if arr[i, j]}
        )  # fmt: skip
    for name, vec in (("other", g.n_other), ("error", g.n_error)):
        out[name] = Counter({(str(s),): int(v) for s, v in zip(g.scenarios, vec, strict=True) if v})
    for name, cells in (("gap", g.gap), ("placebo", g.placebo), ("adjusted", g.adjusted)):
        out[name] = Counter(
            {(str(g.scenarios[i]), label): int(cells[i, k])
             for i in range(cells.shape[0]) for k, label in enumerate(("n11", "n10", "n01", "n00"))
             if cells[i, k]}
        )  # fmt: skip
    return out


@pytest.mark.parametrize(("seed", "step"), [(0, 1 << 16), (1, 7), (2, 1)])
def test_coded_table_counts_match_a_plain_loop_over_the_rows(
    seed: int, step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every finding is a function of these per-scenario counts and paired cells. (`step`:
    block boundaries are found a slice of the sorted trials at a time; small slices check
    the seams.)"""
    monkeypatch.setattr(grouping_module, "_STEP", step)
    rows = _rows(seed)
    table = TrialTable.from_records(iter(rows), chunk_rows=37)
    assert _grouped_counts(table) == _reference_counts(rows)
    g = _group(table)
    assert list(g.conditions) == sorted({r[3] for r in rows}, key=_condition_key)
    assert g.scenarios.tolist() == sorted({r[0] for r in rows})


def test_every_way_of_building_a_table_gives_the_same_findings() -> None:
    rows = _rows(7)
    reference = TrialTable(*(np.array(col) for col in zip(*rows, strict=True)))
    expected = _findings(reference)
    assert len(expected) > 10
    half = len(rows) // 2
    perm = np.random.default_rng(1).permutation(len(rows))
    built = {
        "streamed, one chunk": TrialTable.from_records(iter(rows)),
        "streamed, chunks of 5": TrialTable.from_records(iter(rows), chunk_rows=5),
        "from lists": TrialTable(*(list(col) for col in zip(*rows, strict=True))),
        "concatenated": TrialTable.concat(
            [TrialTable.from_records(rows[:half]), TrialTable.from_records(rows[half:])]
        ),
        "rows permuted": reference.take(perm),
        "decoded and rebuilt": TrialTable(
            reference.scenario,
            reference.family,
            reference.block,
            reference.condition,
            reference.outcome,
        ),
    }
    for how, table in built.items():
        assert len(table) == len(rows), how
        assert _findings(table) == expected, how
    streamed = built["streamed, chunks of 5"]
    for name in ("scenarios", "scenario_code", "families", "family_code", "conditions",
                 "condition_code", "outcome_code", "block_key"):  # fmt: skip
        assert np.array_equal(getattr(streamed, name), getattr(reference, name)), name


def test_columns_decode_to_what_was_stored() -> None:
    rows = _rows(3)
    table = TrialTable.from_records(rows)
    for i, name in enumerate(("scenario", "family", "block", "condition", "outcome")):
        if name == "block":
            continue
        assert getattr(table, name).tolist() == [r[i] for r in rows], name
    # block: one 16-hex-digit key per distinct (block id), equal exactly when the ids are
    pairs = set(zip(table.block.tolist(), (r[2] for r in rows), strict=True))
    assert len(pairs) == len({r[2] for r in rows}) == len(set(table.block.tolist()))
    assert table.outcome_counts() == {o: sum(r[4] == o for r in rows) for o in OUTCOMES}
    assert table.outcome.dtype.kind == "U"
    assert "TrialTable(" in repr(table)


def test_take_keeps_only_the_labels_it_uses() -> None:
    rows = [("a", "f", "b1", "observed", "aligned"), ("b", "g", "b2", "observed", "error")]
    table = TrialTable.from_records(rows)
    sub = table.take(np.array([1]))
    assert (sub.scenarios.tolist(), sub.families.tolist()) == (["b"], ["g"])
    assert sub.scenario_code.tolist() == [0]
    assert sub.outcome.tolist() == ["error"]
    assert len(table.take(np.zeros(2, dtype=bool))) == 0


def test_table_memory_per_trial_is_small() -> None:
    """Structural, not timed: 64-character block ids cost 8 bytes, the rest one byte each."""
    n_blocks, conditions = 30_000, ("observed", "unobserved", "placebo", "audit=0.1")

    def stream() -> Iterator[Row]:
        for b in range(n_blocks):
            block = hashlib.sha256(str(b).encode()).hexdigest()
            scenario = f"suite/scenario-with-a-long-name-{b % 150}"
            for c in conditions:
                yield scenario, "oversight_gap", block, c, "defect" if b % 7 == 0 else "aligned"

    table = TrialTable.from_records(stream())
    n = len(table)
    assert n == n_blocks * len(conditions)
    assert table.block_key.dtype == np.uint64
    for codes in (table.scenario_code, table.family_code, table.condition_code, table.outcome_code):
        assert codes.dtype.itemsize == 1
    assert table.nbytes <= 12 * n + 50_000  # labels: 150 scenario names and a few more
    assert table.nbytes / n < 13
    # as plain numpy string columns the same table would take over 400 bytes a trial
    assert table.scenario.nbytes + table.block.nbytes > 150 * n


def test_code_types_grow_with_the_number_of_labels() -> None:
    assert table_module._code_dtype(256) == np.uint8
    assert table_module._code_dtype(257) == np.uint16
    assert table_module._code_dtype(70_000) == np.uint32
    rows = [(f"s{i}", "f", f"b{i}", "observed", "aligned") for i in range(300)]
    table = TrialTable.from_records(rows, chunk_rows=100)
    assert table.scenario_code.dtype == np.uint16
    assert sorted(table.scenario.tolist()) == sorted(r[0] for r in rows)


def test_tables_are_read_only_and_bad_input_is_refused() -> None:
    table = TrialTable.from_records([("s", "f", "b", "observed", "aligned")])
    with pytest.raises(ValueError, match="read-only"):
        table.outcome_code[0] = 1
    with pytest.raises(AttributeError):
        table.block_key = np.zeros(1, dtype=np.uint64)  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown outcomes"):
        TrialTable.from_records([("s", "f", "b", "observed", "aligned?")])
    with pytest.raises(ValueError, match="each record must be"):
        TrialTable.from_records([("s", "f", "b", "observed")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="chunk_rows"):
        TrialTable.from_records([], chunk_rows=0)
    with pytest.raises(ValueError, match="one-dimensional"):
        TrialTable([["s"]], ["f"], ["b"], ["observed"], ["aligned"])
    empty = TrialTable.from_records(iter([]))
    assert len(empty) == 0
    assert empty.outcome_counts() == dict.fromkeys(OUTCOMES, 0)


def test_string_keys_ignore_width_and_byte_order() -> None:
    values = np.array(["", "a", "a b", "é", "日本", "x" * 200, "0" * 64])
    keys = table_module.string_keys(values)
    assert len(set(keys.tolist())) == values.size
    for other in (values.astype("U300"), values.astype(">U250")):
        assert np.array_equal(table_module.string_keys(other), keys)
    single = [int(table_module.string_keys(np.array([v]))[0]) for v in values.tolist()]
    assert single == keys.tolist()
    with pytest.raises(TypeError):
        table_module.string_keys(np.array([b"bytes"]))  # type: ignore[arg-type]
