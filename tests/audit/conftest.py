"""Fixtures for the audit tests: a real PostgreSQL server, stores on SQLite and PostgreSQL,
and builders of decision records shaped like the ones the hook route writes.

``PostgresServer`` and the ``postgres_server`` / ``postgres_url`` fixtures are self-contained;
move them to ``tests/conftest.py`` to share them with other test packages.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from service.audit import AuditStore

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


def closed_port_url() -> str:
    """A PostgreSQL URL where nothing listens, to stand for an unreachable audit database."""
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/audit"


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temporary directory, listening on 127.0.0.1.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres``
    system user and every server command runs through ``runuser``.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
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
        options = (
            f"-p {self.port} -k {self.base_dir} -h 127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
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
            connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def require_postgres_bin() -> Path:
    """The bin directory, or fail under CI (where PostgreSQL must be installed), else skip."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        message = (
            f"PostgreSQL server binaries not found in {POSTGRES_BIN_GLOB} or on PATH: "
            "install them with `apt-get install -y postgresql` (or set TIL_CDS_PG_BIN)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session, stopped and removed at the end."""
    server = PostgresServer(require_postgres_bin())
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server, so tests never see each other's rows."""
    return postgres_server.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The audit database URL, once for a SQLite file and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[AuditStore]:
    """A migrated store on each backend."""
    audit_store = AuditStore.from_url(database_url)
    audit_store.migrate()
    yield audit_store
    audit_store.close()


DecisionFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_decision() -> DecisionFactory:
    """Build a decision record as the hook route would, overridable per field."""

    def build(
        *,
        patient_ref: str = "Patient/pat-1",
        user_ref: str = "Practitioner/doc-7",
        suggested: dict[str, bool] | None = None,
        recorded_at: str = "2024-05-14T09:30:00.250Z",
        **overrides: Any,
    ) -> dict[str, Any]:
        suggested = suggested if suggested is not None else {"NCT05727904": True}
        patient_id = patient_ref.split("/")[-1]
        verdicts = [
            {
                "trial_id": trial_id,
                "suggested": is_suggested,
                "status": "eligible" if is_suggested else "not_eligible",
                "arms": [{"id": "arm-a", "suggested": is_suggested}],
                "criteria": [
                    {
                        "id": "ecog",
                        "state": "met",
                        "evidence": [{"resource": "Observation/ecog-1/_history/2", "value": 1}],
                    },
                    {
                        "id": "anc",
                        "state": "met" if is_suggested else "not_met",
                        "evidence": [{"resource": "Observation/anc-1/_history/1", "value": 1.9}],
                    },
                ],
            }
            for trial_id, is_suggested in suggested.items()
        ]
        cards = [
            {
                "uuid": str(uuid.uuid4()),
                "summary": f"Consider TIL trial {trial_id}",
                "indicator": "info",
                "source": {"label": "til-cds"},
                "extension": {"trial_id": trial_id},
            }
            for trial_id, is_suggested in suggested.items()
            if is_suggested
        ]
        record: dict[str, Any] = {
            "decision_id": str(uuid.uuid4()),
            "recorded_at": recorded_at,
            "hook": "patient-view",
            "hook_instance": str(uuid.uuid4()),
            "service_id": "til-trials",
            "user_ref": user_ref,
            "patient_ref": patient_ref,
            "fhir_server": "https://ehr.example.org/fhir",
            "criteria_fingerprint": "sha256:criteria-v1",
            "input_fingerprint": "sha256:inputs-1",
            "evaluated_at": recorded_at,
            "inputs": [
                {"resourceType": "Patient", "id": patient_id, "versionId": "3"},
                {"resourceType": "Observation", "id": "anc-1", "versionId": "1"},
            ],
            "input_resources": [
                {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "meta": {"versionId": "3"},
                    "name": [{"family": "Realname", "given": ["Jo"]}],
                    "birthDate": "1961-02-03",
                },
                {
                    "resourceType": "Observation",
                    "id": "anc-1",
                    "meta": {"versionId": "1"},
                    "status": "final",
                    "subject": {"reference": patient_ref},
                    "valueQuantity": {"value": 1.9, "unit": "10*9/L"},
                },
            ],
            "verdicts": verdicts,
            "cards": cards,
            "timing_ms": 41.5,
            "errors": [],
        }
        record.update(overrides)
        return record

    return build
