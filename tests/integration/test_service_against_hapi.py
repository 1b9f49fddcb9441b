"""The service against a real HAPI FHIR server: full, partial and no prefetch give the same cards.

The synthetic patients are loaded once into the session's HAPI server (tests/integration/
conftest.py starts it); the service is called in-process and over HTTP (a real uvicorn).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.main import create_app
from service.mappings import Mappings
from service.sandbox.hapi import HapiServer, free_port
from service.sandbox.synthetic import SyntheticPatient, generate_patients, hook_request
from service.settings import Settings
from tests.api.conftest import SERVICE_URL, started
from tests.integration.conftest import load_patients

pytestmark = pytest.mark.integration

PATIENTS = generate_patients(datetime.now(UTC).date())
_EVALUATED_LINE = re.compile(r"\nCriteria version `[^`]*`, evaluated [^\n]*")
_VERSION = re.compile(r"/_history/\d+")


@pytest.fixture(scope="module")
def loaded_fhir(hapi_server: HapiServer) -> str:
    return load_patients(hapi_server, PATIENTS)


def comparable(cards: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Cards without what legitimately differs between calls: the uuid, the evaluation minute,
    and resource versions (a server adds meta.versionId; our synthetic prefetch has none)."""
    return [
        (
            c["source"]["topic"]["code"],
            c["summary"],
            _VERSION.sub("", _EVALUATED_LINE.sub("", c.get("detail", ""))),
        )
        for c in cards
    ]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(dev=True, audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    async for client in started(create_app(settings)):
        yield client


async def _cards(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(SERVICE_URL, json=body)
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


@pytest.mark.parametrize("patient", PATIENTS, ids=lambda p: p.id)
async def test_full_partial_and_no_prefetch_give_the_same_cards(
    patient: SyntheticPatient, loaded_fhir: str, service: httpx.AsyncClient, mappings: Mappings
) -> None:
    full = await _cards(service, hook_request(patient, mappings, prefetch="full", fhir_server=loaded_fhir))
    partial = await _cards(
        service, hook_request(patient, mappings, prefetch="partial", fhir_server=loaded_fhir)
    )
    fetched = await _cards(service, hook_request(patient, mappings, prefetch="none", fhir_server=loaded_fhir))
    assert {c["source"]["topic"]["code"] for c in full} == patient.expected_cards
    assert comparable(full) == comparable(partial) == comparable(fetched)


async def test_a_server_that_pages_at_five_results(
    loaded_fhir: str, tmp_path: Path, mappings: Mappings
) -> None:
    settings = Settings(
        dev=True,
        audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        fhir_page_size=5,
        fhir_max_pages=200,
        fhir_timeout_seconds=60,
    )
    patient = next(p for p in PATIENTS if p.id == "til-many-observations")
    async for client in started(create_app(settings)):
        discovery = (await client.get("/cds-services")).json()
        assert "_count=5" in discovery["services"][0]["prefetch"]["observations-blood-counts"]
        fetched = await _cards(
            client, hook_request(patient, mappings, prefetch="none", fhir_server=loaded_fhir)
        )
        full = await _cards(client, hook_request(patient, mappings, prefetch="full", fhir_server=loaded_fhir))
    assert comparable(fetched) == comparable(full)
    assert "stopped after" not in str(fetched)


async def test_a_patient_unknown_to_the_server_is_412(
    loaded_fhir: str, service: httpx.AsyncClient, mappings: Mappings
) -> None:
    ghost = SyntheticPatient(
        "til-not-on-the-server",
        "never loaded",
        set(),
        [{"resourceType": "Patient", "id": "til-not-on-the-server"}],
    )
    response = await service.post(
        SERVICE_URL, json=hook_request(ghost, mappings, prefetch="none", fhir_server=loaded_fhir)
    )
    assert response.status_code == 412
    assert "Patient/til-not-on-the-server" in response.json()["issue"][0]["diagnostics"]


async def test_a_patient_with_no_data_gets_no_cards_in_every_mode(
    loaded_fhir: str, service: httpx.AsyncClient, mappings: Mappings
) -> None:
    patient = next(p for p in PATIENTS if p.id == "til-no-data")
    for mode in ("full", "partial", "none"):
        assert (
            await _cards(service, hook_request(patient, mappings, prefetch=mode, fhir_server=loaded_fhir))
            == []
        )


async def test_a_fhir_server_that_is_down_is_412_with_no_prefetch(
    service: httpx.AsyncClient, mappings: Mappings
) -> None:
    down = f"http://127.0.0.1:{free_port()}/fhir"
    response = await service.post(
        SERVICE_URL, json=hook_request(PATIENTS[0], mappings, prefetch="none", fhir_server=down)
    )
    assert response.status_code == 412
    assert "could not be reached" in response.json()["issue"][0]["diagnostics"]
    with_prefetch = await _cards(
        service, hook_request(PATIENTS[0], mappings, prefetch="full", fhir_server=down)
    )
    assert {c["source"]["topic"]["code"] for c in with_prefetch} == PATIENTS[0].expected_cards


@pytest.fixture(scope="module")
def service_over_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    audit = tmp_path_factory.mktemp("http-audit") / "audit.sqlite3"
    env = {**os.environ, "TIL_CDS_AUDIT_DATABASE_URL": f"sqlite:///{audit}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--dev", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize(
    "patient",
    [p for p in PATIENTS if p.id in {"til-lung-eligible", "til-gastric", "til-kidney-transplant"}],
    ids=lambda p: p.id,
)
def test_over_http_the_fetch_path_matches_prefetch(
    patient: SyntheticPatient, loaded_fhir: str, service_over_http: str, mappings: Mappings
) -> None:
    with httpx.Client(base_url=service_over_http, timeout=60) as client:
        fetched = client.post(
            SERVICE_URL, json=hook_request(patient, mappings, prefetch="none", fhir_server=loaded_fhir)
        ).json()["cards"]
        full = client.post(
            SERVICE_URL, json=hook_request(patient, mappings, prefetch="full", fhir_server=loaded_fhir)
        ).json()["cards"]
    assert comparable(fetched) == comparable(full)
    assert {c["source"]["topic"]["code"] for c in full} == patient.expected_cards
