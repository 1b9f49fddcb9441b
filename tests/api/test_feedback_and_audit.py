"""Feedback is kept with its decision, idempotently; every hook call is recorded before the answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from service.audit import stored_decision
from service.audit.replay import compare_decisions, replay_decision
from service.audit.store import AuditStore
from service.engine.replay import evaluate_recorded
from tests.api.conftest import SERVICE_URL, started
from tests.api.test_hooks import assert_outcome

FEEDBACK_URL = SERVICE_URL + "/feedback"


async def _card(
    client: httpx.AsyncClient, request_for: Callable[..., Any], patient: str = "til-lung-eligible"
) -> dict[str, Any]:
    response = await client.post(SERVICE_URL, json=request_for(patient))
    card: dict[str, Any] = response.json()["cards"][0]
    return card


async def test_overridden_feedback_is_recorded_once(
    client: httpx.AsyncClient, request_for: Callable[..., Any]
) -> None:
    card = await _card(client, request_for)
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
        "overrideReason": {"reason": card["overrideReasons"][0], "userComment": "prefers standard care"},
    }
    first = await client.post(FEEDBACK_URL, json={"feedback": [item]})
    assert first.status_code == 200 and first.json() == {"recorded": 1, "duplicates": 0}
    again = await client.post(FEEDBACK_URL, json={"feedback": [item]})
    assert again.json() == {"recorded": 0, "duplicates": 1}


async def test_bare_coding_override_reason_from_early_clients(
    client: httpx.AsyncClient, request_for: Callable[..., Any]
) -> None:
    card = await _card(client, request_for)
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-23T11:00:00Z",
        "overrideReason": {"code": "patient-declined", "system": "urn:til-cds:override-reason"},
    }
    assert (await client.post(FEEDBACK_URL, json={"feedback": [item]})).json()["recorded"] == 1


async def test_feedback_for_an_unknown_card_or_bad_outcome(client: httpx.AsyncClient) -> None:
    unknown = {
        "card": "00000000-0000-4000-8000-00000000dead",
        "outcome": "accepted",
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
    }
    assert_outcome(await client.post(FEEDBACK_URL, json={"feedback": [unknown]}), 404, "dead")
    wrong = {**unknown, "outcome": "ignored"}
    assert_outcome(await client.post(FEEDBACK_URL, json={"feedback": [wrong]}), 400, "outcome")
    naive = {**unknown, "outcomeTimestamp": "2026-11-23T10:00:00"}
    assert_outcome(await client.post(FEEDBACK_URL, json={"feedback": [naive]}), 400, "time zone")
    assert_outcome(await client.post(FEEDBACK_URL, json={"feedback": []}), 400, "feedback")


async def test_every_call_is_recorded_with_inputs_verdicts_and_cards_and_replays(
    app_factory: Callable[..., Any], settings: Any, request_for: Callable[..., Any]
) -> None:
    async for client in started(app_factory()):
        body = request_for("til-recent-docetaxel")
        body["hookInstance"] = "9a1b6f7e-0000-4000-8000-000000000001"
        cards = (await client.post(SERVICE_URL, json=body)).json()["cards"]
    store = AuditStore.from_url(settings.audit_database_url)
    record = store.find_decision_by_card(cards[0]["uuid"])
    assert record is not None
    content = record["content"] if isinstance(record["content"], dict) else json.loads(record["content"])
    assert content["hook_instance"] == body["hookInstance"]
    assert content["patient_ref"] == "Patient/til-recent-docetaxel"
    assert {c["uuid"] for c in content["cards"]} == {c["uuid"] for c in cards}
    assert {v["trial_id"] for v in content["decision"]["trials"]} == {
        "NCT06538012",
        "NCT04614103",
        "essen-til-gastroesophageal",
    }
    assert any(i["resource_type"] == "Observation" for i in content["decision"]["inputs"])
    assert content["decision"]["criteria_fingerprint"].startswith("sha256:")
    report = replay_decision(store, content["decision_id"], evaluate_recorded)
    assert report.agrees, [d.describe() for d in report.differences]
    assert store.verify().ok
    store.close()


async def test_a_decision_made_with_data_missing_replays_with_the_same_verdicts(
    app_factory: Callable[..., Any], settings: Any, request_for: Callable[..., Any]
) -> None:
    """What could not be obtained is recorded: replayed without it, unknowns would turn into met."""
    async for client in started(app_factory()):
        body = request_for("til-lung-eligible")
        del body["prefetch"]["procedures"], body["prefetch"]["observations-cardiopulmonary"]
        cards = (await client.post(SERVICE_URL, json=body)).json()["cards"]
    store = AuditStore.from_url(settings.audit_database_url)
    record = store.find_decision_by_card(cards[0]["uuid"])
    assert record is not None
    content = record["content"] if isinstance(record["content"], dict) else json.loads(record["content"])
    assert "procedures" in content["decision"]["unavailable"]
    assert "left_ventricular_ejection_fraction" in content["decision"]["unavailable"]
    report = replay_decision(store, content["decision_id"], evaluate_recorded)
    assert report.agrees, [d.describe() for d in report.differences]
    without = evaluate_recorded(
        store.get_criteria_version(content["decision"]["criteria_fingerprint"]) or {},
        store.input_resources(record),
        content["decision"]["evaluated_at"],
        {},
    )
    assert compare_decisions(stored_decision(content), without), "the recorded unavailability matters"
    store.close()


async def test_an_unavailable_audit_store_refuses_the_call_and_loses_nothing(
    app_factory: Callable[..., Any], settings: Any, request_for: Callable[..., Any]
) -> None:
    app = app_factory()
    async for client in started(app):
        assert (await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))).status_code == 200
        healthy = app.state.audit_store
        app.state.audit_store = AuditStore.from_url("postgresql+psycopg://nobody@127.0.0.1:1/none")
        response = await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))
        assert_outcome(response, 503, "audit store is unavailable")
        assert response.headers["retry-after"]
        app.state.audit_store = healthy
    store = AuditStore.from_url(settings.audit_database_url)
    assert store.verify().ok and store.verify().records_checked == 1
    store.close()
