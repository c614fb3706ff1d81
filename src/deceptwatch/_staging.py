"""Directories that appear whole or not at all, and files with the mode the user expects.

Work that writes many files into one new directory (activation shards, a trained organism
and its checkpoints) writes them into a hidden directory beside the target, which is
renamed to the target only when the work has finished. If the work fails or is interrupted
(Ctrl-C), the hidden directory is removed: a directory at the target is always complete,
never the first files of one that a rerun would then refuse as "not empty".
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deceptwatch._errors import InputError, mkdir_failure


def check_new_dir(path: Path, option: str = "--out") -> None:
    """Refuse `path` unless it is absent or an empty directory, before any work is spent."""
    hint = f"give {option} a new or empty directory"
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path}: exists and is not a directory", hint=hint)
        if any(path.iterdir()):
            raise InputError(f"{path}: not a new or empty directory", hint=hint)


@contextmanager
def staged_dir(target: Path, option: str = "--out") -> Iterator[Path]:
    """Yield a hidden directory beside `target` to write into; when the block ends, rename
    it to `target` (absent or an empty directory), and when it raises, remove it."""
    check_new_dir(target, option)
    final = target.resolve()
    # the parents this call creates (deepest first), removed again if the work fails, so
    # that a failed `--out a/b/c` leaves the tree as it found it
    created = missing_dirs(final.parent)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # mkdir, not mkdtemp: the directory is renamed into place, so it gets the mode a
        # new directory gets (the umask's), not mkdtemp's owner-only 0700
        work = final.parent / f".{final.name}.{secrets.token_hex(6)}.partial"
        work.mkdir()
    except OSError as exc:
        remove_empty(created)
        raise InputError(
            f"{target}: cannot create the directory: {mkdir_failure(final.parent, exc)}",
            hint=f"give {option} a directory you can write to",
        ) from exc
    try:
        yield work
        if final.exists():
            final.rmdir()  # empty, as checked; rename(2) would also replace it on POSIX
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        remove_empty(created)
        raise


def missing_dirs(path: Path) -> list[Path]:
    """`path` and those of its ancestors that do not exist yet, deepest first."""
    missing: list[Path] = []
    try:
        while not path.exists() and path != path.parent:
            missing.append(path)
            path = path.parent
    except OSError:  # a parent this user may not search: mkdir will say so
        pass
    return missing


def remove_empty(dirs: list[Path]) -> None:
    """Remove `dirs` (deepest first) while they are empty: one that something else has
    written into meanwhile is left, with its parents."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def umask() -> int:
    """The process's umask, read without changing it where Linux says it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not atomic across threads)
    os.umask(mask)
    return mask


def usual_mode(*paths: Path) -> None:
    """Give files the mode a new file gets (0666 less the umask). safetensors writes its
    files owner-only (0600), so a probe's arrays, unlike its JSON beside them, could not be
    read by the rest of a team sharing the directory."""
    mode = 0o666 & ~umask()
    for path in paths:
        os.chmod(path, mode)
