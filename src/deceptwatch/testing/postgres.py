"""A throwaway PostgreSQL cluster, for tests and benchmarks of a PostgreSQL store.

`PostgresCluster` runs initdb and pg_ctl from Debian's /usr/lib/postgresql/VERSION/bin (as the
`postgres` user when the tests run as root) in a fresh temp dir, listening only on 127.0.0.1
on a free port, with its socket in that dir; `stop` removes it all. The system cluster, if
any, is never touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from deceptwatch.testing.openai_stub import free_port

PG_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/VERSION/bin holding initdb and pg_ctl, if any."""
    found = []
    for d in glob.glob(PG_GLOB):
        p = Path(d)
        if (p / "initdb").is_file() and (p / "pg_ctl").is_file():
            version = p.parent.name
            found.append((int(version) if version.isdigit() else 0, p))
    return max(found)[1] if found else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster; `create_database` gives a fresh database's URL."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="deceptwatch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_root = os.geteuid() == 0
        self.port = 0
        self._n = 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self, durable: bool = False) -> None:
        """Create and start the cluster. Not `durable` (for tests), it skips fsync and waits
        for no commit to reach the disk; `durable`, it keeps PostgreSQL's defaults."""
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8", "-N",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                "-c max_connections=200"
            )
            if not durable:
                opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            done = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                "-o", opts, "start",
            )  # fmt: skip
            if done.returncode == 0:
                return
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{log[-2000:]}")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        import psycopg

        self._n += 1
        name = f"{prefix}_{self._n}"
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
