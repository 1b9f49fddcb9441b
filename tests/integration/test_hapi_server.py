"""The HAPI sandbox behaves like the FHIR server the service will prefetch from.

These checks pin the server behaviour the rest of the integration suite relies on:
token search with ``system|code`` (raw ``|`` in the query), ``_sort=-date`` with
``_count`` paging through ``next`` links, transactions with client-assigned ids, and
no stale cached search results right after a write.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.sandbox.hapi import HapiServer

pytestmark = pytest.mark.integration

LOINC = "http://loinc.org"
HEMOGLOBIN = "718-7"
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def fhir(hapi_server: HapiServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=hapi_server.base_url,
        headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
        timeout=60.0,
    ) as client:
        yield client


def _observation(patient_id: str, day: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": HEMOGLOBIN}], "text": "Hemoglobin"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2024-03-{day:02d}T08:00:00Z",
        "valueQuantity": {
            "value": 10 + day / 10,
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
    }


def _entry(resource: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": resource,
        "request": {"method": method, "url": url},
    }


@pytest.fixture(scope="module")
def patient_id(fhir: httpx.Client) -> str:
    """A patient with 12 hemoglobin results (1..12 March 2024), a condition and a medication."""
    pid = f"til-{uuid.uuid4().hex[:16]}"
    entries = [_entry({"resourceType": "Patient", "id": pid}, "PUT", f"Patient/{pid}")]
    entries += [_entry(_observation(pid, day), "POST", "Observation") for day in range(1, 13)]
    entries.append(
        _entry(
            {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "372244006"}]},
            },
            "POST",
            "Condition",
        )
    )
    entries.append(
        _entry(
            {
                "resourceType": "MedicationStatement",
                "status": "active",
                "subject": {"reference": f"Patient/{pid}"},
                "medicationCodeableConcept": {"text": "pembrolizumab"},
            },
            "POST",
            "MedicationStatement",
        )
    )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = fhir.post("", json=bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    return pid


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            url: str = link["url"]
            return url
    return None


def _dates(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["effectiveDateTime"] for e in bundle.get("entry", [])]


def test_search_sorted_and_paged_with_raw_pipe(fhir: httpx.Client, patient_id: str) -> None:
    # A string URL keeps the '|' unencoded, exercising Tomcat's relaxed-query-chars.
    first = fhir.get(
        f"Observation?patient=Patient/{patient_id}&code={LOINC}|{HEMOGLOBIN}&_count=5&_sort=-date"
    )
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["resourceType"] == "Bundle"
    assert page["type"] == "searchset"
    dates = _dates(page)
    assert len(dates) == 5
    assert dates[0] == "2024-03-12T08:00:00Z"
    assert dates == sorted(dates, reverse=True)

    seen = list(dates)
    next_url = _next_link(page)
    assert next_url is not None
    pages = 1
    while next_url is not None:
        pages += 1
        assert pages <= 5, "paging does not terminate"
        response = fhir.get(next_url)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += _dates(page)
        next_url = _next_link(page)

    assert pages == 3
    assert len(seen) == 12
    assert len(set(seen)) == 12
    assert seen == sorted(seen, reverse=True)


def test_search_with_encoded_params(fhir: httpx.Client, patient_id: str) -> None:
    response = fhir.get(
        "Observation",
        params={
            "patient": f"Patient/{patient_id}",
            "code": f"{LOINC}|{HEMOGLOBIN}",
            "_count": "100",
        },
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["entry"]) == 12

    other_system = fhir.get(
        "Observation", params={"patient": f"Patient/{patient_id}", "code": f"http://x|{HEMOGLOBIN}"}
    )
    assert other_system.status_code == 200
    assert other_system.json().get("entry", []) == []


def test_new_write_is_visible_immediately(fhir: httpx.Client, patient_id: str) -> None:
    query = {"patient": f"Patient/{patient_id}", "code": f"{LOINC}|{HEMOGLOBIN}", "_count": "100"}
    before = fhir.get("Observation", params=query)
    assert before.status_code == 200
    count_before = len(before.json().get("entry", []))

    created = fhir.post("Observation", json=_observation(patient_id, 20))
    assert created.status_code == 201, created.text

    # the identical search URL again: must not be served from a cached result set
    after = fhir.get("Observation", params=query)
    assert after.status_code == 200
    assert len(after.json()["entry"]) == count_before + 1


def test_condition_and_medication_statement_by_patient(fhir: httpx.Client, patient_id: str) -> None:
    for resource_type in ("Condition", "MedicationStatement"):
        response = fhir.get(resource_type, params={"patient": f"Patient/{patient_id}"})
        assert response.status_code == 200, response.text
        entries = response.json().get("entry", [])
        assert len(entries) == 1, resource_type
        assert entries[0]["resource"]["resourceType"] == resource_type

    unknown = fhir.get("Condition", params={"patient": "Patient/does-not-exist"})
    assert unknown.status_code == 200
    assert unknown.json().get("entry", []) == []


def test_client_assigned_id_read_back(fhir: httpx.Client, patient_id: str) -> None:
    response = fhir.get(f"Patient/{patient_id}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == patient_id
