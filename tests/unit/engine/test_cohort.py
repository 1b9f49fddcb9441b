"""The synthetic cohort: adding unrelated data never changes a verdict (hypothesis).

That each patient gets exactly the cards and verdicts its file expects is
``tests/unit/sandbox/test_patient_files.py``."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.criteria import CriteriaSet
from service.engine import State, decide
from service.facts import build_facts
from service.mappings import Mappings
from service.sandbox.synthetic import generate_patients
from tests.conftest import EVALUATED_AT

PATIENTS = generate_patients(EVALUATED_AT.date())


def _verdicts(
    resources: list[dict[str, Any]],
    patient_id: str,
    criteria: CriteriaSet,
    mappings: Mappings,
    at: datetime = EVALUATED_AT,
) -> dict[str, tuple[str, tuple[tuple[str, str], ...]]]:
    results = decide(build_facts(patient_id, resources, mappings), criteria, mappings, at).trials
    return {
        r.trial_id: (
            r.status,
            tuple((c.id, c.state.value) for c in [*r.criteria, *(x for a in r.cohorts for x in a.criteria)]),
        )
        for r in results
    }


def test_every_verdict_carries_fingerprints_and_every_computed_state_its_reason(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    patient = PATIENTS[0]
    decision = decide(build_facts(patient.id, patient.resources, mappings), criteria, mappings, EVALUATED_AT)
    assert decision.criteria_fingerprint == criteria.fingerprint
    assert decision.input_fingerprint.startswith("sha256:")
    for result in decision.trials:
        for criterion in result.criteria:
            assert criterion.reason
            if criterion.state in (State.MET, State.NOT_MET) and criterion.id.startswith(
                ("absolute", "hemoglobin", "platelet")
            ):
                assert criterion.evidence and criterion.evidence[0].source and criterion.evidence[0].date


def test_the_engine_never_reads_the_clock(criteria: CriteriaSet, mappings: Mappings) -> None:
    patient = next(p for p in PATIENTS if p.id == "til-recent-docetaxel")
    early = _verdicts(patient.resources, patient.id, criteria, mappings)
    assert early == _verdicts(patient.resources, patient.id, criteria, mappings)
    later = _verdicts(patient.resources, patient.id, criteria, mappings, EVALUATED_AT.replace(year=2027))
    assert later != early  # the washout has lifted, the labs have gone stale


UNRELATED = st.sampled_from(
    [
        {
            "resourceType": "Observation",
            "id": "x-obs",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "effectiveDateTime": "2026-11-20",
            "valueQuantity": {"value": 130, "unit": "mm[Hg]", "code": "mm[Hg]"},
        },
        {
            "resourceType": "Condition",
            "id": "x-cond",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]},
        },
        {
            "resourceType": "MedicationStatement",
            "id": "x-med",
            "status": "active",
            "medicationCodeableConcept": {"text": "amlodipine 5 mg"},
            "effectivePeriod": {"start": "2025-01-01"},
        },
        {"resourceType": "Procedure", "id": "x-proc", "status": "completed"},
        {
            "resourceType": "Observation",
            "id": "x-obs2",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "effectiveDateTime": "2026-11-21",
            "valueQuantity": {"value": 95, "unit": "mg/dL", "code": "mg/dL"},
        },
    ]
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    patient=st.sampled_from(PATIENTS),
    extra=st.lists(UNRELATED, min_size=1, max_size=3, unique_by=lambda r: r["id"]),
)
def test_unrelated_resources_never_change_a_verdict(
    patient: Any, extra: list[dict[str, Any]], criteria: CriteriaSet, mappings: Mappings
) -> None:
    before = _verdicts(patient.resources, patient.id, criteria, mappings)
    after = _verdicts([*copy.deepcopy(patient.resources), *extra], patient.id, criteria, mappings)
    assert {k: v[1] for k, v in before.items()} == {k: v[1] for k, v in after.items()}
    assert {k: v[0] for k, v in before.items()} == {k: v[0] for k, v in after.items()}
