"""The Bulk Data client's error paths (the working flow runs against real HAPI in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from service.errors import FhirResponseError, FhirUnavailableError
from service.prescreen.bulk import BulkLimits, bulk_export

BASE = "http://fhir.test/fhir"
TOKEN = "secret-token-18"
FAST = BulkLimits(default_retry_seconds=0.1, total_seconds=5)


async def _export(handler: httpx.MockTransport, tmp_path: Path) -> None:
    async with httpx.AsyncClient(transport=handler) as client:
        await bulk_export(BASE, tmp_path, token=TOKEN, limits=FAST, client=client)


def _outcome(text: str) -> dict[str, object]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": text}]}


async def test_a_server_without_bulk_export_is_named_with_its_answer(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["prefer"] == "respond-async"
        assert request.url.params["_type"].startswith("Patient,Condition")
        return httpx.Response(400, json=_outcome(f"Unknown operation $export (token {TOKEN})"))

    with pytest.raises(FhirResponseError) as caught:
        await _export(httpx.MockTransport(handler), tmp_path)
    assert "HTTP 400 to the bulk export kick-off" in str(caught.value)
    assert "Unknown operation $export" in str(caught.value)
    assert TOKEN not in str(caught.value)


async def test_a_manifest_pointing_to_another_server_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("$export"):
            return httpx.Response(202, headers={"Content-Location": f"{BASE}/status/1"})
        if request.url.path.endswith("/status/1"):
            output = [{"type": "Patient", "url": "http://elsewhere.test/Patient.ndjson"}]
            return httpx.Response(200, json={"transactionTime": "2026-11-29T00:00:00Z", "output": output})
        raise AssertionError(f"unexpected request {request.url}")

    with pytest.raises(FhirResponseError, match="points to another server"):
        await _export(httpx.MockTransport(handler), tmp_path)


async def test_polling_waits_while_the_export_runs_then_downloads(tmp_path: Path) -> None:
    polls = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        if request.url.path.endswith("$export"):
            return httpx.Response(202, headers={"Content-Location": "status/1"})
        if request.url.path.endswith("/status/1"):
            polls.append(1)
            if len(polls) < 3:
                return httpx.Response(202, headers={"Retry-After": "0.1", "X-Progress": "running"})
            output = [{"type": "Patient", "url": f"{BASE}/files/1"}]
            return httpx.Response(200, json={"transactionTime": "2026-11-29T00:00:00Z", "output": output})
        return httpx.Response(200, content=b'{"resourceType":"Patient","id":"p1"}\n')

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        export = await bulk_export(BASE, tmp_path, token=TOKEN, limits=FAST, client=client)
    assert len(polls) == 3
    assert [p.name for p in export.files] == ["Patient.0000.ndjson"]
    assert export.files[0].read_bytes() == b'{"resourceType":"Patient","id":"p1"}\n'


async def test_an_unreachable_server_is_an_unavailable_error(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(FhirUnavailableError, match="could not be reached"):
        await _export(httpx.MockTransport(handler), tmp_path)
