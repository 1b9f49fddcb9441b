"""Issue 18: the pre-screen's verdicts are the hook's, for every patient and trial, at one evaluation time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cdshooks import HookRequest
from service.criteria import CriteriaSet
from service.gather import FetchLimits, prefetch_templates
from service.mappings import Mappings
from service.pipeline import Runtime, run_hook

from .conftest import AT, SYNTHEA, exported_patients

_KEYS = {
    "Condition": "conditions",
    "MedicationStatement": "medications",
    "MedicationRequest": "medication-requests",
    "MedicationAdministration": "medication-administrations",
    "Procedure": "procedures",
    "Immunization": "immunizations",
    "Observation": "all-observations",  # a key of the client's own naming: harvested by type
}


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not resources:
        return None
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _request(patient_id: str, resources: list[dict[str, Any]], mappings: Mappings) -> HookRequest:
    """A patient-view call whose prefetch holds every resource of the patient that the hook reads."""
    prefetch: dict[str, Any] = {k: None for k in prefetch_templates(mappings)}
    by_key: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        kind = resource["resourceType"]
        if kind == "Patient":
            prefetch["patient"] = resource
        elif kind in _KEYS:
            by_key.setdefault(_KEYS[kind], []).append(resource)
    prefetch.update({key: _searchset(found) for key, found in by_key.items()})
    return HookRequest.model_validate(
        {
            "hook": "patient-view",
            "hookInstance": "00000000-0000-4000-8000-000000000018",
            "context": {"userId": "Practitioner/1", "patientId": patient_id},
            "prefetch": prefetch,
        }
    )


async def test_every_patient_and_trial_gets_the_hooks_verdict(
    prescreen_rows: list[dict[str, Any]], criteria: CriteriaSet, mappings: Mappings
) -> None:
    patients = exported_patients()
    rows = {(row["patient"], row["trial"]): row for row in prescreen_rows}
    assert len(rows) == len(patients) * len(criteria.trials)
    async with httpx.AsyncClient() as http:
        runtime = Runtime(mappings, criteria, prefetch_templates(mappings), http, FetchLimits())
        for patient_id, resources in patients.items():
            outcome = await run_hook(_request(patient_id, resources, mappings), runtime, AT, may_fetch=False)
            for result in outcome.decision.trials:
                row = rows[(f"Patient/{patient_id}", result.trial_id)]
                assert (row["suggested"], row["state"], row["reason"]) == (
                    result.suggested,
                    result.status,
                    result.reason,
                ), f"{patient_id} {result.trial_id}"


def test_the_export_holds_both_populations(prescreen_rows: list[dict[str, Any]]) -> None:
    """Guards the test above against passing on an empty or one-sided export."""
    patients = {row["patient"] for row in prescreen_rows}
    assert "Patient/til-lung-eligible" in patients
    if not SYNTHEA.is_dir():
        pytest.skip(f"real-data bundles not found at {SYNTHEA}: only the synthetic patients were compared")
    assert len(patients) == 48 + len(list(SYNTHEA.glob("*.json.gz")))
    assert any(row["suggested"] for row in prescreen_rows if not row["patient"].startswith("Patient/til-"))


def test_a_near_miss_is_one_measurement_short_of_its_limit(prescreen_rows: list[dict[str, Any]]) -> None:
    rows = {(row["patient"], row["trial"]): row for row in prescreen_rows}
    low_anc = rows[("Patient/til-low-anc", "NCT06538012")]
    assert low_anc["near_miss"] is True
    assert low_anc["near_miss_detail"].startswith("Absolute neutrophil count: "), "labels, not ids"
    assert "needs ≥ 1.5" in low_anc["near_miss_detail"]
    transplant = rows[("Patient/til-kidney-transplant", "NCT06538012")]
    assert transplant["state"] == "ruled_out" and transplant["near_miss"] is False  # not a measurement
    assert not any(row["near_miss"] for row in prescreen_rows if row["suggested"])


def test_a_washout_gives_the_date_it_ends(prescreen_rows: list[dict[str, Any]], prescreen_out: Path) -> None:
    """Docetaxel ended 10 days ago: the card is shown, and the worklist says from when the trial is possible."""
    rows = {(row["patient"], row["trial"]): row for row in prescreen_rows}
    washout = rows[("Patient/til-recent-docetaxel", "NCT06538012")]
    assert washout["suggested"] is True
    assert AT.date() < washout["not_before"] <= AT.date() + timedelta(days=30)
    summary = (prescreen_out / "summary.html").read_text(encoding="utf-8")
    washouts = summary[summary.index("Washouts ending") : summary.index("Near misses:")]
    assert f"<td>{washout['not_before'].isoformat()}</td><td>Patient/til-recent-docetaxel</td>" in washouts
