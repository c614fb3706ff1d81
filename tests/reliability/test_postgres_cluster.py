"""The session's private PostgreSQL cluster: loopback only, in its own temp dir; and in CI a
missing server fails the run instead of skipping it."""

from __future__ import annotations

import pytest
from _helpers import query

from _postgres import PostgresCluster, missing_postgres


def test_the_cluster_is_private_and_on_loopback(
    postgres_cluster: PostgresCluster, pg_url: str
) -> None:
    [(listen,)] = query(pg_url, "SHOW listen_addresses")
    [(port,)] = query(pg_url, "SHOW port")
    [(data,)] = query(pg_url, "SHOW data_directory")
    assert listen == "127.0.0.1"
    assert int(port) == postgres_cluster.port != 5432
    assert data.startswith(str(postgres_cluster.root))
    assert "deceptwatch-pg-" in data


def test_a_missing_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the PostgreSQL tests"):
        missing_postgres("no PostgreSQL server binaries")


def test_a_missing_server_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y postgresql"):
        missing_postgres("no PostgreSQL server binaries")
