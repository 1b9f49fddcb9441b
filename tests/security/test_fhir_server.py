"""The FHIR server a request names is called only when that client may send us there.

Every "not contacted" below is a real loopback server whose connection count stays at zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.sandbox.synthetic import SyntheticPatient
from tests.api.conftest import started
from tests.security.conftest import (
    FHIR_TOKEN,
    HOOK_PATH,
    CountingServer,
    SigningKey,
    bearer,
    client_config,
    fhir_responder,
    json_answer,
    sign,
    with_fhir_server,
)

RequestFor = Callable[..., dict[str, Any]]
Serve = Callable[..., CountingServer]


async def _post(app: FastAPI, body: dict[str, Any], signing: SigningKey) -> httpx.Response:
    async for client in started(app):
        return await client.post(HOOK_PATH, json=body, headers=bearer(sign(signing, HOOK_PATH)))
    raise AssertionError("unreachable")


def _app_allowing(make_app: Callable[..., FastAPI], es384: SigningKey, *servers: str, dev: bool) -> FastAPI:
    """A client whose allowlist is ``servers``; ``dev`` only relaxes https (authentication stays on)."""
    return make_app(
        dev=dev, clients=[client_config(jwks={"keys": [es384.public_jwk()]}, fhir_servers=list(servers))]
    )


@pytest.mark.parametrize("dev", [False, True])
async def test_a_server_off_the_allowlist_is_never_contacted(
    dev: bool,
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Serve,
    patients: dict[str, SyntheticPatient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fhir = serve(fhir_responder(patients["til-lung-eligible"]))
    app = _app_allowing(make_app, es384, "https://fhir.hospital.example/r4", dev=dev)

    complete = await _post(app, with_fhir_server(request_for(), f"{fhir.url}/fhir"), es384)
    assert complete.status_code == 200, complete.text
    assert complete.json()["cards"]

    no_chemistry = with_fhir_server(request_for(), f"{fhir.url}/fhir")
    del no_chemistry["prefetch"]["observations-chemistry"]
    missing = await _post(app, no_chemistry, es384)
    assert missing.status_code == 200  # only an Observation group is missing: its criteria become unknown
    partial = await _post(app, with_fhir_server(request_for(prefetch="partial"), f"{fhir.url}/fhir"), es384)
    assert partial.status_code == 412  # MedicationStatements are required
    nothing = await _post(app, with_fhir_server(request_for(prefetch="none"), f"{fhir.url}/fhir"), es384)
    assert nothing.status_code == 412, nothing.text
    assert "no FHIR server may be queried" in nothing.json()["issue"][0]["diagnostics"]

    assert fhir.connections == 0 and fhir.requests == []
    assert "not contacted" in caplog.text or "https is required" in caplog.text


async def test_plain_http_is_not_contacted_for_a_production_client_even_if_allowlisted(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Serve,
    patients: dict[str, SyntheticPatient],
) -> None:
    fhir = serve(fhir_responder(patients["til-lung-eligible"]))
    app = _app_allowing(make_app, es384, f"{fhir.url}/fhir", dev=False)
    response = await _post(app, with_fhir_server(request_for(prefetch="none"), f"{fhir.url}/fhir"), es384)
    assert response.status_code == 412
    assert fhir.connections == 0


async def test_an_allowlisted_server_is_read_with_the_access_token(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Serve,
    patients: dict[str, SyntheticPatient],
) -> None:
    """The positive control for the tests above: the same server, allowlisted, in --dev."""
    fhir = serve(fhir_responder(patients["til-lung-eligible"]))
    app = _app_allowing(make_app, es384, f"{fhir.url}/fhir/", dev=True)
    response = await _post(app, with_fhir_server(request_for(prefetch="none"), f"{fhir.url}/fhir"), es384)
    assert response.status_code == 200, response.text
    assert fhir.requests
    assert {r.headers["authorization"] for r in fhir.requests} == {f"Bearer {FHIR_TOKEN}"}


@pytest.mark.parametrize("body_kind", ["empty", "json"])
async def test_a_redirect_is_not_followed(
    body_kind: str,
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Serve,
    patients: dict[str, SyntheticPatient],
) -> None:
    """Not to another host (SSRF, token leak), and a 3xx body is never read as data."""
    patient = patients["til-lung-eligible"]
    elsewhere = serve(fhir_responder(patient))
    serve_real = fhir_responder(patient)

    def redirect(request: Any) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = serve_real(request)
        headers = {**headers, "Location": f"{elsewhere.url}{request.path}"}
        return 302, headers, body if body_kind == "json" else b""

    redirecting = serve(redirect)
    app = _app_allowing(make_app, es384, f"{redirecting.url}/fhir", dev=True)
    response = await _post(
        app, with_fhir_server(request_for(prefetch="none"), f"{redirecting.url}/fhir"), es384
    )
    assert response.status_code == 412, response.text
    assert "HTTP 302" in response.json()["issue"][0]["diagnostics"]
    assert redirecting.requests
    assert elsewhere.connections == 0


async def test_a_next_link_to_another_host_is_not_contacted(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Serve,
    patients: dict[str, SyntheticPatient],
) -> None:
    patient = patients["til-lung-eligible"]
    allowed = serve(fhir_responder(patient))
    other = serve(lambda r: json_answer({"resourceType": "Bundle", "type": "searchset"}))
    body = with_fhir_server(request_for(), f"{allowed.url}/fhir")
    body["prefetch"]["conditions"]["link"] = [
        {"relation": "next", "url": f"{other.url}/fhir/Condition?page=2"}
    ]
    response = await _post(_app_allowing(make_app, es384, f"{allowed.url}/fhir", dev=True), body, es384)
    assert response.status_code == 200
    assert other.connections == 0
    assert "refused to follow a link to another server" in response.json()["cards"][0]["detail"]
