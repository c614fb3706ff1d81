"""Where the store is: ``--db`` (a path or a SQLAlchemy URL), ``$DECEPTWATCH_DB``, or the
default path, resolved to one URL, with every value that cannot be a store refused."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from deceptwatch._errors import InputError

DB_ENV = "DECEPTWATCH_DB"


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/deceptwatch/deceptwatch.db`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "deceptwatch" / "deceptwatch.db"


def resolve_db_url(db: str | os.PathLike[str] | None) -> str:
    """A SQLAlchemy URL from ``--db`` (URL or path), ``$DECEPTWATCH_DB``, or the default path."""
    if db is not None and not isinstance(db, str):
        if not isinstance(db, os.PathLike):
            raise InputError(
                f"--db must be a path or a database URL, got {db!r}",
                hint="e.g. db='runs.db' or db='postgresql+psycopg://user@host:5432/name'",
            )
        db = os.fspath(db)
    if db is not None and not db.strip():
        raise InputError(
            "--db is empty",
            hint=f"give a path or a database URL, or leave --db out for ${DB_ENV} or the default",
        )
    value = db or os.environ.get(DB_ENV) or str(default_db_path())
    if "\x00" in value:
        raise InputError("--db holds a NUL character", hint="give a path or a database URL")
    if not value.isascii():
        try:  # a name that is not UTF-8 reads with lone surrogates ("r\udcff.db")
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"--db {value!r}: the name is not UTF-8, and SQLite and database URLs take "
                "only UTF-8",
                hint="rename the file or its directory, or give --db another path",
            ) from None
    if "://" in value:
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):  # ValueError: e.g. a malformed IPv6 host
            raise InputError(
                f"--db {_masked(value)!r} is not a valid database URL",
                hint="use a path, or a URL such as sqlite:///runs.db or "
                "postgresql+psycopg://user@host:5432/name",
            ) from None
        if url.get_backend_name() == "sqlite" and (
            url.host or url.database in (None, "", ":memory:")
        ):
            raise InputError(
                f"--db {url.render_as_string(hide_password=True)!r} does not name a SQLite file",
                hint="an in-memory store would lose every trial; give a file: sqlite:///runs.db "
                "(three slashes, then the path) or just the path",
            )
        return value
    if value == ":memory:":
        raise InputError(
            "--db ':memory:' would keep the store in memory and lose every trial",
            hint="give a file path, e.g. --db runs.db",
        )
    # Quoted, so that the URL names the path's own file: pasted in as it stands, "x%41.db"
    # read as xA.db, and "a?b.db" as a file `a` with URL options.
    path = str(Path(value).expanduser())
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def _masked(value: str) -> str:
    """A URL that SQLAlchemy cannot parse, for a message, with its password as ``***``: the
    user information is what comes before the last ``@`` after the scheme."""
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return value
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"
