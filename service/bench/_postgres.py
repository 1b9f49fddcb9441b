"""A throwaway PostgreSQL cluster for tests and the audit benchmark.

Moved here from ``tests/conftest.py`` so ``til-cds bench --parts audit`` can start the same
server the tests use; the tests import it from here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["POSTGRES_BIN_GLOB", "PostgresServer", "find_postgres_bin", "free_port"]

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin directory, ``$TIL_CDS_PG_BIN``, or initdb on PATH."""
    override = os.environ.get("TIL_CDS_PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    candidates = [Path(path) for path in Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/"))]
    candidates = [path for path in candidates if (path / "initdb").exists()]
    if candidates:
        return max(candidates, key=lambda path: int(path.parent.name.split(".")[0]))
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory, listening on 127.0.0.1.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres``
    system user and every server command runs through ``runuser``. ``durable`` keeps
    PostgreSQL's default fsync and synchronous commit (for benchmarks of commit-bound work);
    tests turn both off for speed.
    """

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.base_dir = Path(tempfile.mkdtemp(prefix="til-cds-pg-"))
        self.data_dir = self.base_dir / "data"
        self.port = free_port()
        self.is_running = False
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.base_dir, user="postgres", group="postgres")
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if completed.returncode != 0:
            log = self.base_dir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({completed.returncode}): {completed.stderr}\n{tail}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.base_dir} -h 127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.base_dir / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        self.is_running = True

    def stop(self) -> None:
        """Stop the server immediately (fast shutdown)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        self.is_running = False

    def remove(self) -> None:
        """Stop the server if it runs, then delete the cluster's directory."""
        if self.is_running:
            self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"audit_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"
