"""``/metrics`` counts hook calls, cards, FHIR fetches and audit refusals (Prometheus text format)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from service.api.main import create_app
from service.audit import AuditStore
from service.settings import Settings
from tests.api.conftest import started
from tests.conftest import closed_port_url
from tests.deploy.conftest import SERVICE_PATH

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        dev=True,
        audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        public_base_url="http://testserver",
    )


async def _samples(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_a_hook_call_is_counted_with_its_cards_and_latency(
    tmp_path: Path, hook_body: Callable[..., dict[str, Any]]
) -> None:
    async for client in started(create_app(_settings(tmp_path))):
        before = await _samples(client)
        response = await client.post(SERVICE_PATH, json=hook_body())
        after = await _samples(client)
    assert response.status_code == 200
    assert _delta(before, after, "til_cds_hook_calls_total", hook="patient-view", status="200") == 1
    assert _delta(before, after, "til_cds_hook_duration_seconds_count", hook="patient-view") == 1
    route = {"method": "POST", "route": "/cds-services/{service_id}"}
    assert _delta(before, after, "til_cds_http_requests_total", **route, status="200") == 1
    assert _delta(before, after, "til_cds_http_request_duration_seconds_count", **route) == 1
    counted = {
        dict(labels)["trial"]
        for (name, labels), value in after.items()
        if name == "til_cds_cards_total" and value - before.get((name, labels), 0.0) == 1
    }
    assert len(counted) == len(response.json()["cards"]) >= 1


async def test_a_repeat_open_finds_the_charts_facts_unless_the_memo_is_off(
    tmp_path: Path, hook_body: Callable[..., dict[str, Any]]
) -> None:
    """The same chart opened twice reads its resources once; with ``facts_memo_resources``
    at 0 it reads them each time, and the cards are the same either way."""
    body = hook_body()
    for memo_resources, hits in ((50_000, 1), (0, 0)):
        settings = _settings(tmp_path / str(memo_resources)).model_copy(
            update={"facts_memo_resources": memo_resources}
        )
        async for client in started(create_app(settings)):
            before = await _samples(client)
            first = await client.post(SERVICE_PATH, json=body)
            second = await client.post(SERVICE_PATH, json=body)
            after = await _samples(client)
        assert first.status_code == second.status_code == 200
        titles = [[card["summary"] for card in answer.json()["cards"]] for answer in (first, second)]
        assert titles[0] == titles[1] and titles[0]
        assert _delta(before, after, "til_cds_facts_memo_total", result="hit") == hits
        assert _delta(before, after, "til_cds_facts_memo_total", result="miss") == 2 - hits


async def test_failed_fhir_fetches_are_counted_by_error_class(
    tmp_path: Path, hook_body: Callable[..., dict[str, Any]]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app = create_app(_settings(tmp_path), transport=httpx.MockTransport(refuse))
    body = hook_body(prefetch="none", fhir_server="http://127.0.0.1:9/fhir")
    async for client in started(app):
        before = await _samples(client)
        response = await client.post(SERVICE_PATH, json=body)
        after = await _samples(client)
    assert response.status_code == 412
    fetches = _delta(before, after, "til_cds_fhir_fetch_duration_seconds_count")
    assert fetches >= 3, "one per required search at least"
    assert _delta(before, after, "til_cds_fhir_fetch_errors_total", error="FhirUnavailableError") == fetches
    assert _delta(before, after, "til_cds_hook_calls_total", hook="patient-view", status="412") == 1


async def test_calls_refused_for_an_unavailable_audit_store_are_counted(
    tmp_path: Path, hook_body: Callable[..., dict[str, Any]]
) -> None:
    app = create_app(_settings(tmp_path))
    async for client in started(app):
        app.state.audit_store = AuditStore.from_url(closed_port_url())
        before = await _samples(client)
        response = await client.post(SERVICE_PATH, json=hook_body())
        after = await _samples(client)
    assert response.status_code == 503
    assert _delta(before, after, "til_cds_audit_unavailable_total") == 1
    assert _delta(before, after, "til_cds_hook_calls_total", hook="patient-view", status="503") == 1
