"""Cards an oncologist reads in seconds: the budget, the wording, the suggestions.

Every synthetic patient's cards are measured and searched as rendered text: within
the detail budget, no criterion id, no UCUM annotation, no "recorded on record", no
internal source tag, no double space, no warning twice; and every suggestion's draft
resources validate as R4 ServiceRequests.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from service.audit import AuditStore
from service.cards import DETAIL_BUDGET, SUMMARY_LIMIT, rendered_text
from service.criteria import CriteriaSet
from service.sandbox.synthetic import SyntheticPatient
from service.settings import Settings
from tests.api.conftest import SERVICE_URL, started

REPO = Path(__file__).resolve().parents[2]
CardsByPatient = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def all_cards(
    tmp_path_factory: pytest.TempPathFactory, patients: dict[str, SyntheticPatient]
) -> CardsByPatient:
    """patient-view with full prefetch for every synthetic patient, through the HTTP route."""
    import asyncio

    from service.api.main import create_app
    from service.mappings import load_mappings
    from service.sandbox.synthetic import hook_request

    mappings = load_mappings(REPO / "mappings")
    settings = Settings(
        dev=True,
        audit_database_url=f"sqlite:///{tmp_path_factory.mktemp('cards') / 'audit.sqlite3'}",
        public_base_url="http://testserver",
    )

    async def call_all() -> CardsByPatient:
        found: CardsByPatient = {}
        async for client in started(create_app(settings)):
            for patient in patients.values():
                response = await client.post(SERVICE_URL, json=hook_request(patient, mappings))
                assert response.status_code == 200, (patient.id, response.text)
                found[patient.id] = response.json()["cards"]
        return found

    return asyncio.run(call_all())


def _every_card(all_cards: CardsByPatient) -> list[tuple[str, dict[str, Any]]]:
    return [(patient, card) for patient, cards in all_cards.items() for card in cards]


def test_every_card_is_within_the_budget_and_names_its_trial(
    all_cards: CardsByPatient, criteria: CriteriaSet
) -> None:
    trials = {t.id: t for t in criteria.trials}
    shown = _every_card(all_cards)
    assert len(shown) > 40, "the synthetic patients give many cards"
    for patient, card in shown:
        text = rendered_text(card["detail"])
        assert len(text) <= DETAIL_BUDGET, (patient, len(text), text)
        assert len(card["summary"]) <= SUMMARY_LIMIT
        trial = trials[card["source"]["topic"]["code"]]
        assert trial.id in card["summary"], (patient, card["summary"])
        assert trial.short_title in card["summary"] or len(f"{trial.short_title} {trial.id}") > 80


def test_no_card_speaks_like_a_log_file(all_cards: CardsByPatient, criteria: CriteriaSet) -> None:
    ids = {c.id for t in criteria.trials for c in t.all_criteria()} | {
        a.id for t in criteria.trials for a in t.arms
    }
    hyphenated = {i for i in ids if "-" in i}  # plain words ("stage") may be English too
    for patient, card in _every_card(all_cards):
        text = rendered_text(card["detail"])
        for criterion_id in hyphenated:
            assert not re.search(rf"(?<![\w-]){re.escape(criterion_id)}(?![\w-])", text), (
                patient,
                criterion_id,
            )
        assert not re.search(r"\{[^}]*\}", text), (patient, "a UCUM annotation in braces", text)
        assert "10*" not in text, (patient, "a UCUM power of ten", text)
        assert "recorded on record" not in text
        assert not re.search(r"\(S\d+\)", text), (patient, "an internal source tag", text)
        assert "  " not in text, (patient, "a double space", text)
        warnings = [line for line in text.split("\n") if "⚠" in line]
        assert len(warnings) == len(set(warnings)), (patient, "a warning twice")
        assert "eligible for" not in card["summary"].lower()


def test_the_recruitment_status_is_a_dated_statement_of_its_source(all_cards: CardsByPatient) -> None:
    iov = next(c for c in all_cards["til-lung-eligible"] if c["source"]["topic"]["code"] == "NCT04614103")
    assert "Recruiting per registry record of 2022-10-21" in rendered_text(iov["detail"])


def test_suggestions_draft_valid_service_requests(all_cards: CardsByPatient) -> None:
    offered = 0
    for patient, card in _every_card(all_cards):
        if not card.get("suggestions"):
            continue
        assert card["selectionBehavior"] == "any", "cds-resp-6: suggestions need a selectionBehavior"
        for suggestion in card["suggestions"]:
            assert suggestion["uuid"] and suggestion["label"]
            for action in suggestion["actions"]:
                assert action["type"] == "create" and action["description"]
                request = ServiceRequest.model_validate(action["resource"])
                assert request.intent in ("proposal", "order") and request.status == "draft"
                assert request.subject.reference == f"Patient/{patient}"
                offered += 1
    assert offered


def test_missing_labs_are_ordered_by_loinc_and_a_suggested_trial_offers_a_referral(
    all_cards: CardsByPatient,
) -> None:
    card = next(c for c in all_cards["til-missing-data"] if c["source"]["topic"]["code"] == "NCT06538012")
    labels = [s["label"] for s in card["suggestions"]]
    assert labels == ["Order the missing tests", "Refer to the trial team"]
    orders = card["suggestions"][0]["actions"]
    codes = {a["resource"]["code"]["coding"][0]["code"] for a in orders}
    assert {a["resource"]["code"]["coding"][0]["system"] for a in orders} == {"http://loinc.org"}
    assert "57021-8" in codes, "a CBC with differential for the missing ANC"
    referral = card["suggestions"][1]["actions"][0]["resource"]
    assert referral["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "3457005",
        "display": "Patient referral",
    }
    assert "NCT06538012" in referral["code"]["text"]
    lung = next(c for c in all_cards["til-lung-eligible"] if c["source"]["topic"]["code"] == "NCT06538012")
    assert [s["label"] for s in lung["suggestions"]] == ["Refer to the trial team"], "nothing to order"


async def test_an_accepted_suggestion_is_recorded(
    client: httpx.AsyncClient, request_for: Callable[..., Any], settings: Settings
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-missing-data"))
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    accepted = card["suggestions"][0]["uuid"]
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": accepted}],
                "outcomeTimestamp": "2026-11-28T10:00:00Z",
            }
        ]
    }
    assert (await client.post(f"{SERVICE_URL}/feedback", json=feedback)).status_code == 200
    store = AuditStore.from_url(settings.audit_database_url)
    try:
        [record] = [r for r in store.iter_records() if r["kind"] == "feedback"]
    finally:
        store.close()
    assert record["content"]["feedback"]["acceptedSuggestions"] == [{"id": accepted}]
    assert record["trial_ids"] == ["NCT06538012"]


async def test_a_suggestion_that_does_not_validate_is_left_off_and_the_record_says_why(
    app_factory: Callable[..., Any], request_for: Callable[..., Any], settings: Settings, tmp_path: Path
) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings)
    analytes = mappings / "analytes.yaml"
    # A code with two spaces inside is not a FHIR code: the ServiceRequest cannot validate.
    analytes.write_text(analytes.read_text().replace('loinc: "57021-8"', 'loinc: "57021  8"'))
    async for client in started(app_factory(mappings_dir=mappings)):
        response = await client.post(SERVICE_URL, json=request_for("til-missing-data"))
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    assert [s["label"] for s in card["suggestions"]] == ["Refer to the trial team"]
    store = AuditStore.from_url(settings.audit_database_url)
    try:
        record = store.find_decision_by_card(card["uuid"])
    finally:
        store.close()
    assert record is not None
    assert any("Order the missing tests' left off" in p for p in record["content"]["card_problems"])


async def test_the_audit_record_keeps_no_working_review_token(
    client: httpx.AsyncClient, request_for: Callable[..., Any], settings: Settings
) -> None:
    """The card's review link carries a signed token valid for days; the trail keeps the bare link."""
    response = await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))
    card = response.json()["cards"][0]
    review = next(link["url"] for link in card["links"] if "/review/" in link["url"])
    assert "?token=" in review, "the clinician's card opens the page"
    token = review.split("?token=", 1)[1]
    store = AuditStore.from_url(settings.audit_database_url)
    try:
        record = store.find_decision_by_card(card["uuid"])
        exported = "".join(store_text for store_text in (str(r) for r in store.iter_records()))
    finally:
        store.close()
    assert record is not None
    stored = [link["url"] for c in record["content"]["cards"] for link in c.get("links", [])]
    assert review.split("?token=", 1)[0] in stored
    assert token not in str(record) and token not in exported
