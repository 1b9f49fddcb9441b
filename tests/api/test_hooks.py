"""POST /cds-services/til-trials: what the cards say, and every kind of bad input.

Each synthetic patient's expected cards are checked in ``tests/unit/sandbox/test_patient_files.py``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.audit import AuditStore
from service.settings import Settings
from tests.api.conftest import ORDER_SELECT_URL, SERVICE_URL, criterion, recorded_decision, started

RequestFor = Callable[..., dict[str, Any]]


def assert_outcome(response: httpx.Response, status: int, *phrases: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    diagnostics = body["issue"][0]["diagnostics"]
    for phrase in phrases:
        assert phrase in diagnostics, diagnostics
    return body


async def test_a_card_is_short_true_and_useful(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-recent-docetaxel"))
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    assert card["summary"].startswith("May be eligible: ") and "NCT06538012" in card["summary"]
    assert len(card["summary"]) < 140
    assert "not before" in card["summary"]
    assert card["indicator"] == "info"
    assert card["uuid"] and card["source"]["url"] == "https://clinicaltrials.gov/study/NCT06538012"
    assert {link["type"] for link in card["links"]} == {"absolute"}
    assert {r["code"] for r in card["overrideReasons"]} >= {"patient-declined", "not-cell-therapy-candidate"}
    detail = card["detail"]
    assert "Only the trial team can confirm eligibility" in detail
    assert "**Not before 20" in detail and "Anticancer therapy stopped 28 days" in detail
    assert "criteria met from the record" in detail and "need the trial team" in detail
    assert "eligible for" not in card["summary"].lower()


async def test_missing_labs_are_unknown_with_what_to_order(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-missing-data"))
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    next_line = next(line for line in card["detail"].split("\n\n") if line.startswith("**Next:**"))
    assert "Order a CBC with differential" in next_line
    assert "absolute-neutrophil-count" not in card["detail"], "labels, not ids"


async def test_essen_gastro_card_says_its_criteria_are_incomplete(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-gastric"))
    (card,) = response.json()["cards"]
    assert "essen-til-gastroesophageal" in card["summary"] and "criteria incomplete" in card["summary"]
    assert "criteria incomplete in our source" in card["detail"]


async def test_nothing_to_say_is_an_empty_card_list(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-no-data"))
    assert response.status_code == 200 and response.json() == {"cards": []}


async def test_null_prefetch_means_no_data_not_missing(
    client: httpx.AsyncClient, request_for: RequestFor, settings: Settings
) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["observations-blood-counts"] = None
    response = await client.post(SERVICE_URL, json=body)
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    anc = criterion(recorded_decision(settings, card["uuid"]), "NCT06538012", "absolute-neutrophil-count")
    assert anc.state == "unknown"
    assert "no Absolute neutrophil count (ANC) in the last 30 days" in anc.reason


async def test_order_select_warns_about_a_new_anticancer_therapy(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    body = request_for("til-lung-eligible", hook="order-select")
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "72962",
                    "display": "docetaxel",
                }
            ]
        },
        "subject": {"reference": "Patient/til-lung-eligible"},
    }
    body["context"].update(
        selections=["MedicationRequest/draft-1"],
        draftOrders={"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]},
    )
    cards = (await client.post(ORDER_SELECT_URL, json=body)).json()["cards"]
    assert len(cards) == 1, "order-select speaks only about the order"
    assert cards[0]["indicator"] == "warning"
    assert "docetaxel" in cards[0]["summary"] and "washout" in cards[0]["summary"]
    assert "28-day washout" in cards[0]["detail"]
    assert len(cards[0]["summary"]) < 140

    contained = {
        **order,
        "contained": [
            {"resourceType": "Medication", "id": "m1", "code": {"text": "pemetrexed 500 MG Injection"}}
        ],
    }
    del contained["medicationCodeableConcept"]
    contained["medicationReference"] = {"reference": "#m1"}
    body["context"]["draftOrders"]["entry"] = [{"resource": contained}]
    cards = (await client.post(ORDER_SELECT_URL, json=body)).json()["cards"]
    assert cards[0]["indicator"] == "warning" and "pemetrexed" in cards[0]["summary"], (
        "a contained Medication counts"
    )
    body["context"]["draftOrders"]["entry"] = [{"resource": order}]

    order["medicationCodeableConcept"] = {"text": "amlodipine 5 mg"}
    response = await client.post(ORDER_SELECT_URL, json=body)
    assert response.json() == {"cards": []}, "an order that restarts no washout gets no card"


async def test_order_select_for_an_ineligible_patient_gives_no_warning(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    body = request_for("til-kidney-transplant", hook="order-select")
    body["context"].update(
        selections=[],
        draftOrders={
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {
                    "resource": {
                        "resourceType": "MedicationRequest",
                        "id": "d",
                        "status": "draft",
                        "intent": "order",
                        "medicationCodeableConcept": {"text": "docetaxel"},
                    }
                }
            ],
        },
    )
    assert (await client.post(ORDER_SELECT_URL, json=body)).json() == {"cards": []}


async def test_order_select_is_its_own_service(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    """CDS clients replace earlier cards of the same service id: each hook has its own."""
    body = request_for("til-lung-eligible", hook="order-select")
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "til-trials-order-select")
    view = request_for("til-lung-eligible")
    assert_outcome(await client.post(ORDER_SELECT_URL, json=view), 400, "call 'til-trials' for patient-view")


# --- bad input -------------------------------------------------------------------------


async def test_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SERVICE_URL, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_outcome(response, 400, "not valid JSON")


async def test_a_truncated_body_is_called_truncated_not_nan(client: httpx.AsyncClient) -> None:
    """Issue 16: the message blamed NaN and Infinity for a body cut short."""
    response = await client.post(
        SERVICE_URL,
        content=b'{"hook": "patient-view", "hookIns',
        headers={"content-type": "application/json"},
    )
    body = assert_outcome(response, 400, "not valid JSON", "truncated")
    assert "NaN" not in body["issue"][0]["diagnostics"]


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SERVICE_URL,
        content=b"hook=patient-view",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_outcome(response, 415, "must be JSON")


async def test_unknown_hook(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible", hook="order-sign")
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "order-sign", "serves patient-view")


async def test_unknown_service(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    response = await client.post("/cds-services/nope", json=request_for("til-lung-eligible"))
    assert_outcome(response, 404, "no CDS service 'nope'")


async def test_missing_patient_id(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible")
    del body["context"]["patientId"]
    body = assert_outcome(await client.post(SERVICE_URL, json=body), 400, "context.patientId")
    assert body["issue"][0]["expression"] == ["context.patientId"]


async def test_missing_hook_instance(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible")
    del body["hookInstance"]
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "hookInstance")


async def test_prefetch_of_the_wrong_type(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["conditions"]["entry"][0]["resource"] = copy.deepcopy(body["prefetch"]["patient"])
    assert_outcome(
        await client.post(SERVICE_URL, json=body), 400, "prefetch.conditions.entry[0].resource is a Patient"
    )


async def test_prefetch_for_another_patient(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["observations-blood-counts"]["entry"][0]["resource"]["subject"]["reference"] = (
        "Patient/someone-else"
    )
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "Patient/someone-else")
    body = request_for("til-lung-eligible")
    body["prefetch"]["patient"]["id"] = "someone-else"
    assert_outcome(
        await client.post(SERVICE_URL, json=body), 400, "not the context's Patient/til-lung-eligible"
    )


async def test_malformed_fhir_patient(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["patient"]["birthDate"] = "last spring"
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "not a valid FHIR R4 Patient", "birthDate")


async def test_prefetch_that_is_not_a_resource(client: httpx.AsyncClient, request_for: RequestFor) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["conditions"] = ["not", "a", "bundle"]
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "prefetch.conditions must be")


async def test_an_operation_outcome_without_a_fhir_server_is_412(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["conditions"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    assert_outcome(await client.post(SERVICE_URL, json=body), 412, "conditions")
    body = request_for("til-lung-eligible")
    body["prefetch"]["medications"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "exception"}],
                },
                "search": {"mode": "outcome"},
            }
        ],
    }
    assert_outcome(await client.post(SERVICE_URL, json=body), 412, "medications")


async def test_no_prefetch_and_no_fhir_server_is_412(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    assert_outcome(
        await client.post(SERVICE_URL, json=request_for("til-lung-eligible", prefetch="none")), 412, "patient"
    )


async def test_fhir_authorization_without_fhir_server(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    body = request_for("til-lung-eligible")
    body["fhirAuthorization"] = {
        "access_token": "t",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "til",
    }
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "fhirServer is required")


async def test_oversized_body_is_413(app_factory: Callable[..., Any], request_for: RequestFor) -> None:
    async for client in started(app_factory(max_body_bytes=10_000)):
        response = await client.post(SERVICE_URL, json=request_for("til-many-observations"))
        assert_outcome(response, 413, "larger than the limit")


async def test_too_many_prefetched_resources_is_a_clear_400(
    app_factory: Callable[..., Any], request_for: RequestFor
) -> None:
    async for client in started(app_factory(max_prefetch_resources=100)):
        response = await client.post(SERVICE_URL, json=request_for("til-many-observations"))
        assert_outcome(response, 400, "more than the limit of 100")


@pytest.mark.parametrize("patient_id", ["til-lung-eligible"])
async def test_discovery_lists_each_hook_under_its_own_id(client: httpx.AsyncClient, patient_id: str) -> None:
    body = (await client.get("/cds-services")).json()
    assert [(s["hook"], s["id"]) for s in body["services"]] == [
        ("patient-view", "til-trials"),
        ("order-select", "til-trials-order-select"),
    ]
    usage = body["services"][0]["usageRequirements"]
    for resource_type in ("MedicationRequest", "Procedure", "Immunization", "Observation"):
        assert resource_type in usage, "the usage text is derived from the prefetch templates"
    for service in body["services"]:
        prefetch = service["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        assert {
            "conditions",
            "medications",
            "observations-blood-counts",
            "observations-cardiopulmonary",
            "observations-body-and-performance",
        } <= set(prefetch)
        observation_templates = [v for k, v in prefetch.items() if k.startswith("observations-")]
        assert all(
            "_sort=-date" in t and "_count=" in t and "category" not in t for t in observation_templates
        )
        assert "89247-1" in prefetch["observations-body-and-performance"]  # ECOG, filed under survey
        assert "10230-1" in prefetch["observations-cardiopulmonary"]  # LVEF, filed under imaging
        assert service["usageRequirements"]


async def test_prefetch_under_the_clients_own_key_names_is_used_by_type(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    ours = request_for("til-lung-eligible")["prefetch"]
    observations = [e for k, v in ours.items() if k.startswith("observations-") and v for e in v["entry"]]
    body = request_for("til-lung-eligible", prefetch="none")
    body["prefetch"] = {
        "Patient": ours["patient"],
        "problems": ours["conditions"],
        "meds": ours["medications"],
        "all-observations": {"resourceType": "Bundle", "type": "searchset", "entry": observations},
        "medication-requests": ours["medication-requests"],  # null under our own key: none
        "procedures": ours["procedures"],  # null under our own keys: the EHR found none
        "immunizations": ours["immunizations"],
        "medication-administrations": ours["medication-administrations"],
    }
    response = await client.post(SERVICE_URL, json=body)
    assert response.status_code == 200, response.text
    reference = await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))
    assert [c["summary"] for c in response.json()["cards"]] == [
        c["summary"] for c in reference.json()["cards"]
    ]
    body["prefetch"]["all-observations"]["entry"][0]["resource"]["subject"]["reference"] = "Patient/other"
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "Patient/other")


async def test_card_markdown_renders_units_literally(
    client: httpx.AsyncClient, request_for: RequestFor, settings: Settings
) -> None:
    from markdown_it import MarkdownIt

    response = await client.post(SERVICE_URL, json=request_for("til-unusual-units"))
    for card in response.json()["cards"]:
        html = MarkdownIt("commonmark", {"html": False}).render(card["detail"])
        assert "<em>" not in html.replace("<em>Only the trial team can confirm eligibility.</em>", "")
    decision = recorded_decision(settings, response.json()["cards"][0]["uuid"])
    anc = criterion(decision, "NCT06538012", "absolute-neutrophil-count")
    assert "×10⁹/L" in anc.reason and "10*9" not in anc.reason, "units as a lab report prints them"


async def test_order_select_tolerates_draft_orders_that_are_not_medications(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    """Found by fuzzing: a draft order whose medicationCodeableConcept is not an object was a 500."""
    body = request_for("til-lung-eligible")
    body["hook"] = "order-select"
    body["context"]["selections"] = []
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "MedicationRequest", "id": "a", "medicationCodeableConcept": True}},
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "b",
                    "medicationCodeableConcept": {"coding": 7},
                }
            },
            True,
        ],
    }
    response = await client.post(ORDER_SELECT_URL, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}, "unreadable drafts restart no washout"


async def test_an_immunization_of_another_patient_is_a_400_naming_it(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    """Found by an independent test set: an Immunization has `patient`, not `subject`; this was a 500."""
    body = request_for("til-lung-eligible")
    body["prefetch"]["immunizations"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "Immunization",
                    "id": "imm-x",
                    "status": "completed",
                    "vaccineCode": {"text": "MMR"},
                    "patient": {"reference": "Patient/someone-else"},
                    "occurrenceDateTime": "2026-11-01",
                }
            }
        ],
    }
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "Patient/someone-else")


async def test_issue_14_an_included_medication_in_a_prefetch_bundle_is_read_not_refused(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["medication-requests"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "mr-included",
                    "status": "active",
                    "intent": "order",
                    "medicationReference": {"reference": "Medication/pred-20"},
                    "subject": {"reference": f"Patient/{body['context']['patientId']}"},
                    "authoredOn": "2026-11-01",
                    "dosageInstruction": [
                        {
                            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                            "doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg", "code": "mg"}}],
                        }
                    ],
                },
                "search": {"mode": "match"},
            },
            {
                "resource": {
                    "resourceType": "Medication",
                    "id": "pred-20",
                    "code": {
                        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "8640"}],
                        "text": "prednisone 20 mg tablet",
                    },
                },
                "search": {"mode": "include"},
            },
        ],
    }
    response = await client.post(SERVICE_URL, json=body)
    assert response.status_code == 200, response.text
    reference = await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))
    # 40 mg/day prednisone, named only by the included Medication, rules the trials out
    assert "NCT04614103" in reference.text and "NCT04614103" not in response.text


async def test_issue_17_a_bundle_entry_that_is_not_a_list_is_a_clear_400(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    body = request_for("til-lung-eligible")
    body["prefetch"]["conditions"]["entry"] = 5
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "prefetch.conditions.entry must be a list")
    body = request_for("til-lung-eligible")
    body["prefetch"]["all-observations"] = {
        "resourceType": "Bundle",
        "entry": 5,
    }  # a key of the client's naming
    assert_outcome(
        await client.post(SERVICE_URL, json=body), 400, "prefetch.all-observations.entry must be a list"
    )


async def test_issue_17_entries_off_the_fast_path_are_still_checked_in_full(
    client: httpx.AsyncClient, request_for: RequestFor
) -> None:
    """The common entry (an id, subject ``Patient/<id>``) is accepted at a glance; any other is
    checked as before: a full URL of the patient is hers, a missing id is refused by its path."""
    body = request_for("til-lung-eligible")
    entries = body["prefetch"]["observations-blood-counts"]["entry"]
    entries[0]["resource"]["subject"]["reference"] = "https://ehr.example/fhir/Patient/til-lung-eligible"
    assert (await client.post(SERVICE_URL, json=body)).status_code == 200
    del entries[1]["resource"]["id"]
    assert_outcome(
        await client.post(SERVICE_URL, json=body),
        400,
        "prefetch.observations-blood-counts.entry[1].resource has no id",
    )


async def test_a_resource_nested_too_deep_to_record_is_a_400_and_records_nothing(
    client: httpx.AsyncClient, request_for: RequestFor, settings: Settings
) -> None:
    """JSON parses to 1,024 levels but is written to 254; a decision that cannot be recorded
    is not shown, and the client is told which data is at fault, not answered 500."""
    nested: dict[str, Any] = {"url": "https://example.org/deep"}
    for _ in range(300):
        nested = {"url": "https://example.org/deep", "extension": [nested]}
    body = request_for("til-lung-eligible")
    body["prefetch"]["observations-blood-counts"]["entry"][0]["resource"]["extension"] = [nested]
    assert (await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))).status_code == 200
    assert_outcome(await client.post(SERVICE_URL, json=body), 400, "not plain JSON", "nested that deep")
    deep_patient = request_for("til-lung-eligible")
    deep_patient["prefetch"]["patient"]["extension"] = [nested]
    assert_outcome(
        await client.post(SERVICE_URL, json=deep_patient), 400, "prefetch.patient", "nested too deep"
    )
    store = AuditStore.from_url(settings.audit_database_url)
    try:
        assert len(list(store.iter_records())) == 1  # the first call's decision, and nothing else
    finally:
        store.close()
