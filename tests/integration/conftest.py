"""Fixtures for integration tests that need a real HAPI FHIR R4 server.

One server is started per test session (start-up takes ~20 s), on a free loopback port,
with an in-memory H2 database that disappears with it. Tests therefore share data: give
resources ids unique to the test (e.g. a uuid) instead of assuming an empty server.

Environment:

* ``TIL_CDS_HAPI_URL`` — base URL (``http://host:port/fhir``) of a server that is already
  running; it is used as is and left running. Handy for a fast edit-test loop.
* ``TIL_CDS_HAPI_JAVA_OPTS`` — JVM options replacing the defaults (e.g. ``-Xmx1g``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Iterator

import pytest

from service.sandbox.hapi import (
    HapiServer,
    build_server,
    free_port,
    start_server,
    wait_until_ready,
)
from service.sandbox.loader import load_bundles
from service.sandbox.synthetic import SyntheticPatient, transaction_bundle


@pytest.fixture(scope="session")
def hapi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HapiServer]:
    """A running HAPI FHIR R4 server (``.base_url`` ends in ``/fhir``) for the session."""
    external = os.environ.get("TIL_CDS_HAPI_URL", "").strip()
    if external:
        server = HapiServer(base_url=external.rstrip("/"))
        wait_until_ready(server, timeout=30)
        yield server
        return

    jar = build_server()
    opts_env = os.environ.get("TIL_CDS_HAPI_JAVA_OPTS")
    java_opts = shlex.split(opts_env) if opts_env else None
    log_path = tmp_path_factory.mktemp("hapi") / "hapi.log"
    server = start_server(free_port(), jar=jar, log_path=log_path, java_opts=java_opts)
    try:
        yield server
    finally:
        server.stop()


def load_patients(server: HapiServer, patients: Iterable[SyntheticPatient]) -> str:
    """Load synthetic patients into the HAPI server (each as its transaction Bundle); its base URL."""
    report = load_bundles(
        ((p.id, transaction_bundle(p)) for p in patients), server.base_url, show_progress=False
    )
    assert not report.failed, report.failed
    return server.base_url
