"""A real uvicorn server on loopback for the fuzzers, with outbound FHIR calls answered locally.

The fuzzers are synchronous (Hypothesis drives them), so the app runs in its own thread
and event loop, exactly as in production; a 5xx or a hang there is what they look for.
Outbound HTTP goes to an httpx.MockTransport: fuzzed ``fhirServer`` URLs never reach
the network.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.api.main import create_app
from service.settings import Settings

EXPORT_TOKEN = "fuzz-export-token"


def _fhir_server_that_finds_nothing(request: httpx.Request) -> httpx.Response:
    if "/Patient/" in request.url.path:
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}
        return httpx.Response(404, json=outcome, headers={"content-type": "application/fhir+json"})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": 0}
    return httpx.Response(200, json=bundle, headers={"content-type": "application/fhir+json"})


@pytest.fixture(scope="session")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app in --dev (no client JWT, so fuzzed bodies reach the pipeline) behind uvicorn."""
    directory: Path = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        dev=True,
        public_base_url="http://127.0.0.1",
        audit_database_url=f"sqlite:///{directory / 'audit.sqlite3'}",
        audit_export_token=EXPORT_TOKEN,
        max_body_bytes=200_000,
        fhir_timeout_seconds=2.0,
    )
    app = create_app(settings, transport=httpx.MockTransport(_fhir_server_that_finds_nothing))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def http(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        yield client
