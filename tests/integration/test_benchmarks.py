"""Every benchmark runs at a tiny size, through the same command that writes BENCHMARKS.md,
so that the benchmarks cannot rot. Their figures are not checked here: performance is
measured in benchmarks/, never asserted in tests. What is checked: each row ran, its rates
are positive, its ratios were computed from a baseline of the same run, and the report
holds every row, the machine and the versions."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPEATS = 2

# inspect_ai is in the `bench` extra, which `scripts/setup.sh --dev` installs: in CI its row
# must run, never skip.
INSPECT = importlib.util.find_spec("inspect_ai") is not None
if not INSPECT and os.environ.get("CI"):
    raise RuntimeError("inspect_ai is missing in CI: install the `bench` extra (setup.sh --dev)")

pytestmark = [
    pytest.mark.slow,
    # inspect_ai's own retry set-up, not ours
    pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """One quick run of every benchmark, as ``python -m benchmarks --quick --repeats 2``
    (two repetitions: state carried from one repetition to the next must not break)."""
    tmp = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        mp.setenv("XDG_DATA_HOME", str(tmp / "data"))  # Inspect's data directory
        mp.chdir(tmp)
        from benchmarks import run as bench_run

        results = bench_run.run_all(REPEATS, quick=True, log=lambda msg: None)
        out = tmp / "BENCHMARKS.md"
        out.write_text(bench_run.render(results))
        yield results, out.read_text()


def _outcome(results: Any, key: str) -> Any:
    (o,) = [o for o in results.outcomes if o.benchmark.key == key]
    return o


def _measured(results: Any, key: str, n_rows: int) -> list[dict[str, Any]]:
    o = _outcome(results, key)
    assert o.status == "measured", o.reason
    assert len(o.rows) == n_rows
    for r in o.rows:
        assert r["repeats"] == REPEATS
        assert len(r["samples"]["ours"]) == REPEATS
        assert all(x > 0 for x in r["samples"]["ours"])
        assert r["ours"]["min"] <= r["ours"]["median"] <= r["ours"]["max"]
        if r["baseline"] is not None:
            assert all(x > 0 for x in r["samples"]["baseline"])
            ratios = [
                o / b for o, b in zip(r["samples"]["ours"], r["samples"]["baseline"], strict=True)
            ]
            assert r["ratio"]["min"] == pytest.approx(min(ratios))
            assert r["ratio"]["max"] == pytest.approx(max(ratios))
    return list(o.rows)


def _with_baseline(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        assert r["baseline"] is not None
        assert r["ratio"] is not None
        assert r["ratio"]["median"] > 0
        assert r["met"] in (True, False)


@pytest.mark.skipif(not INSPECT, reason="inspect_ai not installed (the `bench` extra)")
def test_inspect_row_compares_with_inspect_eval(report: tuple[Any, str]) -> None:
    rows = _measured(report[0], "inspect", 1)
    _with_baseline(rows)
    assert rows[0]["trials"] == 20  # 10 pairs, the same work in both harnesses


def test_inspect_row_says_why_when_inspect_is_missing(report: tuple[Any, str]) -> None:
    o = _outcome(report[0], "inspect")
    if INSPECT:
        assert o.status == "measured"
    else:
        assert o.status == "unavailable"
        assert "inspect_ai" in (o.reason or "")


def test_mock_and_http_rows_measure_against_baselines(report: tuple[Any, str]) -> None:
    _with_baseline(_measured(report[0], "mock", 1))
    _with_baseline(_measured(report[0], "http", 1))


def test_postgres_row_measures_against_the_same_run_on_sqlite(report: tuple[Any, str]) -> None:
    """In CI the PostgreSQL server is installed (.ci/run): its row must run there."""
    o = _outcome(report[0], "postgres")
    if o.status != "measured" and not os.environ.get("CI"):
        pytest.skip(f"the PostgreSQL row cannot run here: {o.reason}")
    (r,) = _measured(report[0], "postgres", 1)
    assert r["baseline"] is not None
    assert r["ratio"]["median"] > 0
    assert r["goal"] is None
    assert r["trials"] >= 300


def test_local_model_rows_measure_against_baselines(report: tuple[Any, str]) -> None:
    choice, choice_bf16, ceiling, forward = _measured(report[0], "local", 4)
    _with_baseline([choice, choice_bf16, forward])
    assert ceiling["baseline"] is not None
    assert ceiling["goal"] is None  # context for the choice rows, with no goal of its own


def test_probes_rows_measure_against_a_plain_forward_pass(report: tuple[Any, str]) -> None:
    hooked, early = _measured(report[0], "probes", 2)
    _with_baseline([hooked])
    assert hooked["goal"] is not None
    assert early["goal"] is None  # faster by construction: reported, with no goal
    assert early["ratio"]["median"] > 0


def test_stats_row_times_findings(report: tuple[Any, str]) -> None:
    (r,) = _measured(report[0], "stats", 1)
    assert r["baseline"] is None
    assert r["unit"] == "s"
    assert r["findings"] > 1
    assert r["trials"] >= 2000
    assert r["met"] in (True, False)


def test_memory_rows_give_peaks_per_size_and_growth(report: tuple[Any, str]) -> None:
    rows = _measured(report[0], "memory", 3)
    small, large, growth = rows
    assert small["unit"] == large["unit"] == "MB"
    assert small["trials"] < large["trials"]
    assert large["met"] in (True, False)  # the size limit applies to the largest run
    assert all(a and a > 0 for a in large["peak_after_runner_mb"])
    assert growth["unit"] == "×"
    assert growth["samples"]["ours"] == pytest.approx(
        [a / b for a, b in zip(large["samples"]["ours"], small["samples"]["ours"], strict=True)]
    )


def test_report_holds_machine_versions_and_every_row(report: tuple[Any, str]) -> None:
    results, text = report
    assert "--quick" in text
    for heading in ("## Machine", "## Versions", "## Results"):
        assert heading in text
    for field in ("CPUs", "CPU model", "RAM"):
        assert f"| {field} |" in text
    for dist in ("python", "deceptwatch", "torch", "transformers", "aiohttp", "inspect_ai"):
        assert f"| {dist} |" in text
    assert "| numpy |" in text
    for o in results.outcomes:
        assert f"### {o.benchmark.number}. {o.benchmark.title}" in text
        if o.rows:
            for r in o.rows:
                assert f"| {r['name']} |" in text
        else:
            assert o.reason in text
    numbers = {o.benchmark.number.split()[0] for o in results.outcomes}
    assert numbers == {"1", "2", "3", "4", "5", "6"}
