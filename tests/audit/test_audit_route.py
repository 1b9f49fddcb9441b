"""``/audit/export`` and ``/audit/counts`` behind their bearer token, in a minimal app served
by a real uvicorn server on a free port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fhir.resources.R4B.bundle import Bundle
from pydantic import SecretStr

from service.api.routes.audit import router
from service.audit import AuditStore
from service.settings import Settings

from .conftest import closed_port_url, free_port

DecisionFactory = Callable[..., dict[str, Any]]
TOKEN = "audit-export-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(store: AuditStore, **settings: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.state.audit_store = store
    configured = Settings(dev=True, **{"audit_export_token": SecretStr(TOKEN), **settings})
    app.state.settings = configured
    return app


@contextmanager
def serve(app: FastAPI) -> Iterator[httpx.Client]:
    """Run ``app`` under uvicorn in a thread; yield a client for it; shut it down after."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        base_url = f"http://127.0.0.1:{server.config.port}"
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(store: AuditStore, make_decision: DecisionFactory) -> Iterator[httpx.Client]:
    store.append_decision(make_decision(patient_ref="Patient/pat-1"))
    store.append_decision(make_decision(patient_ref="Patient/pat-2", suggested={"NCT-B": False}))
    with serve(_app(store)) as http_client:
        yield http_client


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
@pytest.mark.parametrize("path", ["/audit/export", "/audit/counts"])
def test_without_the_token_is_401(client: httpx.Client, path: str, headers: dict[str, str]) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in response.text


def test_export_disabled_without_a_configured_token(store: AuditStore) -> None:
    with serve(_app(store, audit_export_token=None)) as test_client:
        response = test_client.get("/audit/export", headers=AUTH)
    assert response.status_code == 403
    assert "audit export is disabled" in response.json()["detail"]


@pytest.mark.parametrize(
    ("export_format", "media_type"),
    [("ndjson", "application/x-ndjson"), ("csv", "text/csv"), ("fhir", "application/fhir+json")],
)
def test_export_streams_each_format(client: httpx.Client, export_format: str, media_type: str) -> None:
    with client.stream("GET", f"/audit/export?format={export_format}", headers=AUTH) as response:
        body = "".join(response.iter_text())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    if export_format == "ndjson":
        assert len(body.splitlines()) == 2
    elif export_format == "csv":
        assert len(body.splitlines()) == 3
    else:
        assert len(Bundle.model_validate(json.loads(body)).entry or []) == 2


def test_export_filters(client: httpx.Client) -> None:
    response = client.get(
        "/audit/export", params={"patient": "Patient/pat-2", "since": "2024-05-01"}, headers=AUTH
    )
    lines = response.text.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["patient_ref"] == "Patient/pat-2"


def test_export_pseudonymises_when_configured(store: AuditStore, make_decision: DecisionFactory) -> None:
    store.append_decision(make_decision(patient_ref="Patient/pat-1"))
    app = _app(store, audit_pseudonymise_exports=True, audit_pseudonym_key=SecretStr("pseudonym-key"))
    with serve(app) as test_client:
        response = test_client.get("/audit/export?format=csv", headers=AUTH)
    assert response.status_code == 200
    assert "pat-1" not in response.text and "pseudo:" in response.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("format=xml", "unknown format 'xml'"),
        ("since=yesterday", "since is not an ISO 8601 timestamp"),
        ("until=2024-13-01", "until is not an ISO 8601 timestamp"),
        ("outcome=maybe", "unknown outcome 'maybe'"),
        ("kind=note", "unknown kind 'note'"),
    ],
)
def test_bad_query_is_400(client: httpx.Client, query: str, message: str) -> None:
    response = client.get(f"/audit/export?{query}", headers=AUTH)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_counts(client: httpx.Client) -> None:
    response = client.get("/audit/counts", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == [
        {
            "month": "2024-05",
            "trial_id": "NCT05727904",
            "cards_shown": 1,
            "accepted": 0,
            "overridden": 0,
            "override_reasons": [],
        }
    ]


def test_unavailable_store_is_503() -> None:
    store = AuditStore.from_url(closed_port_url())
    try:
        with serve(_app(store)) as test_client:
            export = test_client.get("/audit/export", headers=AUTH)
            counts = test_client.get("/audit/counts", headers=AUTH)
    finally:
        store.close()
    assert export.status_code == 503 and counts.status_code == 503
    assert "audit store unavailable" in export.json()["detail"]


def test_openapi_documents_media_types_and_ids(store: AuditStore) -> None:
    schema = _app(store).openapi()
    export = schema["paths"]["/audit/export"]["get"]
    assert export["operationId"] == "audit_export"
    assert set(export["responses"]["200"]["content"]) >= {
        "application/x-ndjson",
        "text/csv",
        "application/fhir+json",
    }
    assert schema["paths"]["/audit/counts"]["get"]["operationId"] == "audit_counts"
