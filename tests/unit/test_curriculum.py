"""The organism suites are generated from curriculum.yaml; the shipped files must match it."""

from __future__ import annotations

import re
from pathlib import Path

from deceptwatch.organisms._curriculum import HELDOUT_SUITE, TRAIN_SUITE, write_suites
from deceptwatch.scenarios import expand, load_suite

BUILTIN = Path(__file__).resolve().parents[2] / "src" / "deceptwatch" / "scenarios" / "builtin"


def test_shipped_organism_suites_match_the_generator(tmp_path: Path) -> None:
    written = write_suites(tmp_path)
    assert written
    for p in written:
        shipped = BUILTIN / p.relative_to(tmp_path)
        assert shipped.exists(), f"{shipped} is missing: run scripts/gen_organism_suites.py"
        assert shipped.read_text() == p.read_text(), (
            f"{shipped} is stale: run scripts/gen_organism_suites.py"
        )
    for suite in (TRAIN_SUITE, HELDOUT_SUITE):
        assert sorted(p.name for p in (BUILTIN / suite).glob("*.yaml")) == sorted(
            p.name for p in (tmp_path / suite).glob("*.yaml")
        )


def _words(suite: str) -> set[str]:
    return {
        w
        for t in expand(load_suite(suite), model="m", seed=0)
        for m in t.messages
        for w in re.findall(r"[a-z]+", m["content"].lower())
    }


def test_heldout_scenarios_use_only_words_seen_in_training() -> None:
    """Held-out scenarios are new combinations, not new words a tiny model cannot read."""
    assert _words(HELDOUT_SUITE) <= _words(TRAIN_SUITE)


def test_heldout_suite_covers_every_training_family() -> None:
    train = {r.scenario.family for r in load_suite(TRAIN_SUITE)}
    held = {r.scenario.family for r in load_suite(HELDOUT_SUITE)}
    assert held == train
    assert len(train) >= 6


def test_the_generator_script_checks_without_writing(tmp_path: Path) -> None:
    """``--check`` agrees with the test above, and ``--help`` rewrites nothing (it once
    rewrote every suite file)."""
    import subprocess
    import sys

    script = BUILTIN.parents[3] / "scripts" / "gen_organism_suites.py"
    files = sorted(BUILTIN.glob("organism*/*.yaml"))
    before = [p.stat().st_mtime_ns for p in files]
    for args, code in ((["--check"], 0), (["--help"], 0), (["--bogus"], 2)):
        done = subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == code, done.stderr
    assert [p.stat().st_mtime_ns for p in files] == before
    assert "stale" not in done.stdout
