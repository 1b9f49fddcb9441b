"""The service as a real uvicorn subprocess on loopback, with a temporary audit database."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from service.sandbox.hapi import free_port

__all__ = ["ServiceProcess", "start_service"]


@dataclass
class ServiceProcess:
    """A running service: its base URL, the uvicorn process and the folder of its audit database."""

    base_url: str
    process: subprocess.Popen[bytes]
    folder: tempfile.TemporaryDirectory[str]
    log_path: Path

    @property
    def hook_url(self) -> str:
        return f"{self.base_url}/cds-services/til-trials"

    def worker_pids(self) -> list[int]:
        """The worker processes: uvicorn's children with ``--workers``, else the process itself."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            found = [int(pid) for pid in children.read_text(encoding="utf-8").split()]
        except OSError:
            found = []
        return found or [self.process.pid]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.folder.cleanup()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_service(
    workers: int | None = None,
    audit_url: str | None = None,
    timeout: float = 60,
    uvicorn_args: tuple[str, ...] = (),
) -> ServiceProcess:
    """Start ``uvicorn service.api.main:create_app`` in dev mode; ``workers=None`` runs one in-process worker.

    The environment is cleaned of ``TIL_CDS_*`` so a developer's settings file or clients do
    not change what is measured; the audit database is ``audit_url`` or a temporary SQLite file.
    """
    folder = tempfile.TemporaryDirectory(prefix="til-cds-bench-")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIL_CDS_")}
    env.update(
        TIL_CDS_DEV="true",
        TIL_CDS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        TIL_CDS_AUDIT_DATABASE_URL=audit_url or f"sqlite:///{Path(folder.name) / 'audit.sqlite3'}",
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.api.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        # what `til-cds serve` runs: TCP_NODELAY on every connection (service/api/server.py)
        "--http",
        "service.api.server:NoDelayH11Protocol",
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    command += uvicorn_args
    log_path = Path(folder.name) / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    service = ServiceProcess(f"http://127.0.0.1:{port}", process, folder, log_path)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            if process.poll() is not None:
                log_text = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                service.stop()
                raise RuntimeError(f"the service exited with code {process.returncode}:\n{log_text}")
            try:
                if client.get(f"{service.base_url}/readyz").status_code == 200 and (
                    workers is None or len(service.worker_pids()) >= workers
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                service.stop()
                raise RuntimeError(f"the service did not become ready within {timeout:g} s")
            time.sleep(0.2)
    return service
