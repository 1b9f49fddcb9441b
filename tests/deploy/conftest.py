"""Real service processes (``til-cds serve``, as the container runs it) on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from service.mappings import Mappings
from service.sandbox.synthetic import SyntheticPatient, generate_patients, hook_request
from tests.conftest import REPO, free_port

SERVICE_PATH = "/cds-services/til-trials"
PUBLIC_BASE_URL = "https://til-cds.test"
ISSUER = "https://ehr.test"
START_TIMEOUT_SECONDS = 90.0


@dataclass
class ServiceProcess:
    """One ``til-cds serve`` process (and its workers), its URL and its log file."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every log line, each of which must be one JSON object."""
        records = []
        for line in self.log_text().splitlines():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def send_signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def start_service(log_dir: Path, name: str, env: dict[str, str], *, workers: int = 1) -> ServiceProcess:
    """Start ``python -m service.cli serve --dev`` and wait until ``/healthz`` answers."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TIL_CDS_", "PROMETHEUS_"))}
    # Unbuffered, so that a failing test finds every line the service wrote in its log.
    # faulthandler: a crash in a C extension leaves the threads' tracebacks there too.
    environment.update(
        {
            "TIL_CDS_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",
            **env,
        }
    )
    command = [sys.executable, "-m", "service.cli", "serve", "--dev", "--port", str(port)]
    command += ["--workers", str(workers)]
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO)
    service = ServiceProcess(process, f"http://127.0.0.1:{port}", log_path)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{service.log_text()[-3000:]}")
        try:
            return httpx.get(service.base_url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, START_TIMEOUT_SECONDS, f"{name} to answer /healthz")
    except BaseException:
        service.stop()
        raise
    return service


@dataclass(frozen=True)
class Signer:
    """Signs CDS Hooks client JWTs for ``ISSUER`` with an ES384 key the services know."""

    key: ECKey

    def client_settings(self) -> str:
        """``TIL_CDS_CLIENTS``: the issuer with its static JWKS."""
        public = dict(self.key.as_dict(private=False))
        return json.dumps([{"issuer": ISSUER, "jwks": {"keys": [public]}}])

    def token(self, *, jti: str | None = None, path: str = SERVICE_PATH) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "ehr-client",
            "aud": PUBLIC_BASE_URL + path,
            "iat": now,
            "exp": now + 300,
            "jti": jti or str(uuid.uuid4()),
        }
        header = {"alg": "ES384", "kid": str(self.key.kid), "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=["ES384"])


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer(ECKey.generate_key("P-384", parameters={"kid": "deploy-test"}, private=True))


@pytest.fixture(scope="session")
def synthetic_patients() -> dict[str, SyntheticPatient]:
    return {p.id: p for p in generate_patients(datetime.now(UTC).date())}


@pytest.fixture
def hook_body(
    synthetic_patients: dict[str, SyntheticPatient], mappings: Mappings
) -> Callable[..., dict[str, Any]]:
    """A full-prefetch ``patient-view`` request for a synthetic patient, with a fresh hookInstance."""

    def make(patient_id: str = "til-lung-eligible", **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("hook_instance", str(uuid.uuid4()))
        return hook_request(synthetic_patients[patient_id], mappings, **kwargs)

    return make


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "logs"
    folder.mkdir()
    yield folder
