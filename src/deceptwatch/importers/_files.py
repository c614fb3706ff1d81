"""Files in, files out, for the importers: the visible files of a directory tree, and a set of
output files written all together or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deceptwatch._errors import InputError, blocked_path, mkdir_failure
from deceptwatch._staging import missing_dirs, remove_empty, usual_mode


def visible_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under `root` whose names end with one of `suffixes`, sorted. Hidden files
    and directories (names starting with '.', such as ``.ipynb_checkpoints`` or ``.git``)
    are skipped: they hold copies and tools' state, not data to import. A directory that
    cannot be read is an error, never a silent gap."""

    def fail(exc: OSError) -> None:
        where = exc.filename if exc.filename is not None else root
        raise InputError(
            f"{where}: cannot read this directory: {exc.strerror or exc}",
            hint="give files and directories that this user may read",
        )

    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and name.endswith(suffixes) and path.is_file():
                out.append(path)
    return sorted(out)


def _obstacle(target: Path) -> str | None:
    """Why `target` cannot be replaced by a new file, or None."""
    if target.is_dir():
        return "it is a directory"
    if os.path.lexists(target) and not target.is_file() and not target.is_symlink():
        return "it is not a regular file"
    return blocked_path(target)


def write_all(out: Path, files: Sequence[tuple[str, str]], option: str = "--out") -> list[Path]:
    """Write each (relative name, text) under `out`: all of them, or, if anything fails, none
    (files that were there before are kept as they were, directories made here are removed
    again). Every target is checked before the first write; an OSError on the way becomes an
    InputError that names the path. Returns the paths written."""
    hint = f"move it out of the way, or give {option} another directory"
    targets = [out / name for name, _ in files]
    for target in targets:
        why = _obstacle(target)
        if why is not None:
            raise InputError(f"{option} {out}: cannot write {target}: {why}", hint=hint)
    created: list[Path] = []  # directories made here, deepest first
    temps: list[Path] = []
    backups: dict[Path, Path] = {}  # target -> its former file, kept until the end
    placed: list[Path] = []
    target = out
    try:
        for target, (_, text) in zip(targets, files, strict=True):
            missing = missing_dirs(target.parent)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(
                    f"{option} {out}: cannot create {target.parent}: "
                    f"{mkdir_failure(target.parent, exc)}",
                    hint=f"give {option} a directory that can be created",
                ) from None
            created = missing + created
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=".import-", suffix=".tmp")
            temps.append(Path(name))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            usual_mode(Path(name))  # mkstemp's is owner-only (0600)
        for target, tmp in zip(targets, temps, strict=True):
            if os.path.lexists(target):
                backup = tmp.with_suffix(".old")
                try:
                    os.link(target, backup, follow_symlinks=False)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, backup, follow_symlinks=False)
                backups[target] = backup
            os.replace(tmp, target)
            placed.append(target)
    except BaseException as exc:
        for done in reversed(placed):
            with contextlib.suppress(OSError):
                if done in backups:
                    os.replace(backups.pop(done), done)
                else:
                    done.unlink()
        for leftover in [*temps, *backups.values()]:
            with contextlib.suppress(OSError):
                leftover.unlink()
        remove_empty(created)
        if isinstance(exc, OSError):
            where = exc.filename if exc.filename is not None else target
            raise InputError(
                f"{option} {out}: cannot write {where}: {exc.strerror or exc}; nothing was written",
                hint=hint,
            ) from None
        raise
    for backup in backups.values():
        with contextlib.suppress(OSError):
            backup.unlink()
    return targets
