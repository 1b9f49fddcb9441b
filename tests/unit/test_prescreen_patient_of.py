"""Which patient a bulk-exported line belongs to: the reference read as the hook reads it."""

from __future__ import annotations

from typing import Any

import pytest

from service.prescreen.read import patient_of


@pytest.mark.parametrize(
    ("resource", "patient"),
    [
        ({"resourceType": "Patient", "id": "p1"}, "p1"),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}, "p1"),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/p1/_history/4"}}, "p1"),
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "https://ehr.example.org/fhir/Patient/p1"},
            },
            "p1",
        ),
        ({"resourceType": "Immunization", "patient": {"reference": "Patient/p2"}}, "p2"),
        ({"resourceType": "Condition", "subject": {"reference": "Group/g1"}}, None),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/"}}, None),
        ({"resourceType": "Condition", "subject": {"display": "no reference"}}, None),
        ({"resourceType": "Observation"}, None),
        ({"resourceType": "Patient", "id": 7}, None),
    ],
)
def test_the_patient_a_line_belongs_to(resource: dict[str, Any], patient: str | None) -> None:
    assert patient_of(resource) == patient
