"""What to do when the PostgreSQL server is missing; the cluster itself is
`deceptwatch.testing.postgres.PostgresCluster`."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from deceptwatch.testing.postgres import PG_GLOB, PostgresCluster, postgres_bindir

__all__ = ["PG_GLOB", "PostgresCluster", "missing_postgres", "postgres_bindir"]


def missing_postgres(reason: str) -> NoReturn:
    """In CI a missing server fails the run (it must never skip); elsewhere skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run installs it)")
    pytest.skip(f"{reason}; install it with `apt-get install -y postgresql` to run these tests")
