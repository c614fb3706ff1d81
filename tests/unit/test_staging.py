"""`staged_dir`: a directory appears whole or not at all, and a failure leaves no trace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from deceptwatch._errors import InputError
from deceptwatch._staging import staged_dir


def _fail_inside(
    target: Path, stop: type[BaseException], meanwhile: Callable[[], object] = lambda: None
) -> None:
    """Write a file into `target`'s staged directory, run `meanwhile`, then raise `stop`."""
    with staged_dir(target) as work:
        (work / "half").write_text("h")
        meanwhile()
        raise stop("stopped")


def test_a_finished_block_renames_its_work_into_place(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    with staged_dir(out) as work:
        assert work.parent == out.parent
        assert work.name.endswith(".partial")
        (work / "weights").write_text("w")
    assert [p.name for p in out.iterdir()] == ["weights"]
    assert [p.name for p in out.parent.iterdir()] == ["out"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_failed_block_removes_the_parents_it_created(
    tmp_path: Path, stop: type[BaseException]
) -> None:
    # it used to leave a/b/ behind, empty, after a failed or interrupted `--out a/b/out`
    (tmp_path / "kept").mkdir()
    with pytest.raises(stop):
        _fail_inside(tmp_path / "kept" / "a" / "b" / "out", stop)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_created_parent_that_gained_other_files_is_left(tmp_path: Path) -> None:
    theirs = tmp_path / "a" / "theirs"
    with pytest.raises(RuntimeError):
        _fail_inside(tmp_path / "a" / "b" / "out", RuntimeError, lambda: theirs.write_text("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["theirs"]


def test_a_parent_that_cannot_be_created_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot create the directory"):
        _fail_inside(tmp_path / "file" / "sub" / "out", RuntimeError)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
