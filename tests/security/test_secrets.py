"""The FHIR access token and the client JWT appear in no output: not the logs (at DEBUG),
not stdout/stderr, not the audit database, not a response body, not an export.

One app serves a run of calls that exercise every path a secret could take (fetches that
succeed, servers that fail and echo the token back, rejected JWTs); then every output
is searched for the secrets.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, select

from service.audit._documents import DocumentReader
from service.audit.models import AuditDocument
from service.sandbox.synthetic import SyntheticPatient
from tests.api.conftest import started
from tests.security.conftest import (
    FHIR_TOKEN,
    HOOK_PATH,
    Answer,
    CountingServer,
    SeenRequest,
    SigningKey,
    bearer,
    client_config,
    fhir_responder,
    json_answer,
    sign,
    with_fhir_server,
)

EXPORT_TOKEN = "exp0rt-Secret-Wq4"
RequestFor = Callable[..., dict[str, Any]]


def _outcome_echoing(request: SeenRequest) -> dict[str, Any]:
    """What a careless FHIR server says: it repeats the credential it was given."""
    said = request.headers.get("authorization", "")
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "security", "diagnostics": f"token {said} is not valid"}],
    }


class MisbehavingFhir:
    """A FHIR server whose behaviour the test switches between calls."""

    def __init__(self, patient: SyntheticPatient) -> None:
        self.normal = fhir_responder(patient)
        self.mode = "ok"

    def __call__(self, request: SeenRequest) -> Answer:
        if self.mode == "echo-401":
            return json_answer(_outcome_echoing(request), 401, "application/fhir+json")
        if self.mode == "echo-html-500":
            said = request.headers.get("authorization", "")
            return 500, {"Content-Type": "text/html"}, f"<h1>bad {said}</h1>".encode()
        if self.mode == "echo-in-bundle" and "/Observation" in request.path:
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": _outcome_echoing(request)}],
            }
            return json_answer(bundle, content_type="application/fhir+json")
        return self.normal(request)


def _dump_sqlite(url: str) -> str:
    """Every statement of the database, and the audit store's compressed documents as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            reader = DocumentReader(connection)
            addresses = connection.execute(select(AuditDocument.address)).scalars().all()
            documents = [reader.text(address, "document").decode("utf-8") for address in addresses]
    finally:
        engine.dispose()
    assert documents, "no audit documents were written, so the search would prove nothing"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return "\n".join([*connection.iterdump(), *documents])


async def test_the_access_token_and_the_jwt_reach_no_output(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
    patients: dict[str, SyntheticPatient],
    audit_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    fhir_behaviour = MisbehavingFhir(patients["til-lung-eligible"])
    fhir = serve(fhir_behaviour)
    server = f"{fhir.url}/fhir"
    app = make_app(
        dev=True,  # plain http to the loopback test server; authentication stays on (clients are set)
        audit_export_token=EXPORT_TOKEN,
        clients=[client_config(jwks={"keys": [es384.public_jwk()]}, fhir_servers=[server])],
    )
    # The audit routes read the process-wide settings dependency; point it at this app's.
    jwts: list[str] = []
    bodies: list[str] = []

    async def call(body: dict[str, Any], token: str | None = None) -> httpx.Response:
        jwt = token or sign(es384, HOOK_PATH)
        jwts.append(jwt)
        response = await client.post(HOOK_PATH, json=body, headers=bearer(jwt))
        bodies.append(response.text)
        return response

    async for client in started(app):
        fetched = await call(with_fhir_server(request_for(prefetch="none"), server))
        assert fetched.status_code == 200, fetched.text
        prefetched = await call(with_fhir_server(request_for(), server))
        assert prefetched.status_code == 200

        for mode in ("echo-401", "echo-html-500"):
            fhir_behaviour.mode = mode
            failed = await call(with_fhir_server(request_for(prefetch="none"), server))
            assert failed.status_code == 412, failed.text

        fhir_behaviour.mode = "echo-in-bundle"
        partly = with_fhir_server(request_for(), server)
        del partly["prefetch"]["observations-chemistry"]
        noted = await call(partly)
        assert noted.status_code == 200
        assert "the FHIR server reported" in noted.text  # the problem is shown, the token is not

        rejected = sign(es384, HOOK_PATH, aud="https://elsewhere.example/cds-services/til-trials")
        assert (await call(with_fhir_server(request_for(), server), rejected)).status_code == 401
        replayed = jwts[0]
        assert (await call(with_fhir_server(request_for(), server), replayed)).status_code == 401
        invalid = with_fhir_server(request_for(), server)
        invalid["fhirAuthorization"]["token_type"] = "MAC"
        assert (await call(invalid)).status_code == 400

        exports = [
            await client.get("/audit/export", params={"format": f}, headers=bearer(EXPORT_TOKEN))
            for f in ("ndjson", "csv", "fhir")
        ]
        exports.append(await client.get("/audit/counts", headers=bearer(EXPORT_TOKEN)))
        assert all(e.status_code == 200 for e in exports)
        assert "til-lung-eligible" in exports[0].text  # the export is not trivially empty

    assert {r.headers["authorization"] for r in fhir.requests} == {f"Bearer {FHIR_TOKEN}"}
    captured = capsys.readouterr()
    outputs = {
        "log records": "\n".join(r.getMessage() for r in caplog.records),
        "formatted log": caplog.text,
        "stdout": captured.out,
        "stderr": captured.err,
        "audit database": _dump_sqlite(audit_url),
        "response bodies": "\n".join(bodies),
        "exports": "\n".join(e.text for e in exports),
    }
    secrets = {"FHIR access token": FHIR_TOKEN}
    for n, jwt in enumerate(jwts):
        secrets[f"JWT {n}"] = jwt
        secrets[f"JWT {n} signature"] = jwt.rsplit(".", 1)[1]
    leaks = [
        f"{secret} in {where}"
        for where, text in outputs.items()
        for secret, value in secrets.items()
        if value in text
    ]
    assert not leaks
    assert "[redacted]" in outputs["response bodies"]
