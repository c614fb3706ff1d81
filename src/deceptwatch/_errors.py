"""Exception types shared by the whole package.

`InputError` is raised for anything the user can fix (bad YAML, an unknown backend,
a malformed option). The CLI turns it into a message on stderr and exit code 2, and it
is always raised before anything is written to the store.
"""

from __future__ import annotations

from pathlib import Path


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of `exc`'s message, cut at `limit` characters ("" when it has none):
    enough to say what a library raised, inside one of our own messages."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""


def blocked_path(path: Path) -> str | None:
    """Why `path` could never be created, checked before any work is spent on what it is
    to hold: its nearest existing ancestor is a file, not a directory. None otherwise."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else _not_a_directory(parent)
    return None


def _not_a_directory(path: Path) -> str:
    return f"{path} is a file" if path.is_file() else f"{path} is not a directory"


def mkdir_failure(path: Path, exc: OSError) -> str:
    """Why ``path.mkdir(parents=True)`` failed, in words: mkdir says "File exists" or "Not
    a directory" when a file sits where a directory should be, so that file is named."""
    if path.exists() and not path.is_dir():
        return _not_a_directory(path)
    return blocked_path(path) or str(exc.strerror or exc)


class DeceptwatchError(Exception):
    """Base class for errors raised by deceptwatch."""


class InputError(DeceptwatchError):
    """Bad user input: names the file, field or line, and how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


def denied(exc: PermissionError) -> InputError:
    """The input error for a path this user may not read, write or search: the path as
    the system named it, and the fix."""
    where = exc.filename if exc.filename is not None else "a file or directory"
    return InputError(
        f"{where}: {exc.strerror or 'permission denied'}",
        hint="give a path that this user may read and write (a directory on the way to it "
        "may be closed to this user too)",
    )


class MissingExtraError(DeceptwatchError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed.\n"
            f"  hint: pip install 'deceptwatch[{extra}]' -c constraints.txt"
        )
        self.package = package
        self.extra = extra


class StoreError(DeceptwatchError):
    """The store failed while a run was recording trials. What was committed is kept; the
    trials that were not run again when the same command is rerun."""

    @classmethod
    def of(cls, cause: BaseException, doing: str = "") -> StoreError:
        """The error for `cause`, a failure of the store (`doing` says when, e.g. " while
        recording trials")."""
        return cls(
            f"the store failed{doing} ({type(cause).__name__}: {first_line(cause)}); "
            "what was committed is kept: rerun the same command to resume"
        )


class BackendError(DeceptwatchError):
    """A backend call failed.

    `retryable` says whether the runner may try again; `retry_after` (seconds) is the
    server's own hint, e.g. from a `Retry-After` header. `kind` is a short machine-readable
    reason (``http_500``, ``timeout``, ``connection``, ``malformed_json``, ...), and `raw`
    is the verbatim body, kept for the record.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "error",
        retryable: bool = False,
        retry_after: float | None = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after
        self.raw = raw


def require(module: str, extra: str, purpose: str) -> None:
    """Raise MissingExtraError if `module` cannot be imported (without importing it)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(module, extra, purpose)
