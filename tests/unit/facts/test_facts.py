"""FHIR -> facts: statuses, dates, values, reference ranges, doses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.criteria import CriteriaSet
from service.engine import decide
from service.facts import build_facts, parse_fhir_datetime
from service.mappings import Mappings
from tests.conftest import EVALUATED_AT, condition, medication, observation, patient


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-17", datetime(2024, 5, 17, tzinfo=UTC)),
        ("2024-05-17T10:00:00Z", datetime(2024, 5, 17, 10, tzinfo=UTC)),
        ("2024-05-17T10:00:00", datetime(2024, 5, 17, 10, tzinfo=UTC)),
        ("garbage", None),
        ("2026-13-45", None),  # found by tests/fuzz once the blanket except in the readers was gone
        ("2026-02-30", None),
        (None, None),
    ],
)
def test_fhir_dates(text: str | None, expected: datetime | None) -> None:
    assert parse_fhir_datetime(text) == expected


def test_observation_becomes_a_lab_result_with_unit_reference_and_version(mappings: Mappings) -> None:
    resource = observation("751-8", 2.1, "10*3/uL", ref_high=7.5)
    resource["meta"] = {"versionId": "3"}
    facts = build_facts("p1", [patient(), resource], mappings)
    result = facts.labs["absolute_neutrophil_count"][0]
    assert (result.value, result.unit, result.reference_high) == (2.1, "10*3/uL", (7.5, "10*3/uL"))
    assert str(result.source) == "Observation/obs-1/_history/3"


@pytest.mark.parametrize("version", [-1e308, 3, {"v": 1}, ""])
def test_a_version_id_that_is_not_a_string_is_dropped_not_a_server_error(
    mappings: Mappings, criteria: CriteriaSet, version: object
) -> None:
    """Found by tests/fuzz: a numeric meta.versionId reached the Decision, which refused it (a 500)."""
    resource = observation("751-8", 2.1, "10*3/uL")
    resource["meta"] = {"versionId": version}
    facts = build_facts("p1", [patient(), resource], mappings)
    assert str(facts.labs["absolute_neutrophil_count"][0].source) == "Observation/obs-1"
    decision = decide(facts, criteria, mappings, EVALUATED_AT)
    assert "Observation/obs-1" in {str(i) for i in decision.inputs}


def test_lab_free_text_units_are_mapped_by_the_alias_table(mappings: Mappings) -> None:
    resource = observation("751-8", 2.1, None)
    resource["valueQuantity"] = {"value": 2.1, "unit": "K/uL"}
    facts = build_facts("p1", [resource], mappings)
    assert facts.labs["absolute_neutrophil_count"][0].unit == "10*3/uL"


def test_malformed_values_are_data_problems_not_crashes(mappings: Mappings) -> None:
    bad_value = observation("751-8", None, None, id="bad")
    bad_value["valueQuantity"] = {"value": "lots", "unit": "10*9/L"}
    bad_shape = {"resourceType": "Observation", "id": "weird", "status": "final", "code": "751-8"}
    bad_dosage = medication("prednisone", status="active", end=None)
    bad_dosage["dosage"] = "twice daily"
    facts = build_facts("p1", [bad_value, bad_shape, bad_dosage], mappings)
    assert "absolute_neutrophil_count" not in facts.labs
    assert any("Observation/bad" in problem for problem in facts.data_problems)
    assert facts.drugs[0].dose_mg_per_day is None and facts.drugs[0].dose_problem == "no dosage recorded"


def test_ecog_from_answer_codes_and_integers(mappings: Mappings) -> None:
    coded = observation("89247-1", None, None, id="e1", days_ago=1)
    coded["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": "LA9624-3"}]}
    integer = observation("89247-1", None, None, id="e2", days_ago=5)
    integer["valueInteger"] = 1
    facts = build_facts("p1", [coded, integer], mappings)
    assert [r.value for r in facts.labs["ecog_performance_status"]] == [2.0, 1.0]


def test_condition_status_and_verification(mappings: Mappings) -> None:
    entered_in_error = condition("http://snomed.info/sct", "254637007", "NSCLC", id="e")
    entered_in_error["verificationStatus"] = {"coding": [{"code": "entered-in-error"}]}
    remission = condition("http://snomed.info/sct", "254637007", "NSCLC", status="remission", id="r")
    no_status = condition("http://snomed.info/sct", "254637007", "NSCLC", id="n")
    del no_status["clinicalStatus"]
    facts = build_facts("p1", [entered_in_error, remission, no_status], mappings)
    assert [(d.source.id, d.is_active) for d in facts.diagnoses] == [("r", False), ("n", True)]


@pytest.mark.parametrize(
    ("timing", "per_day"),
    [
        ({"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}, 2),
        ({"repeat": {"frequency": 1, "period": 12, "periodUnit": "h"}}, 2),
        ({"repeat": {"frequency": 1, "period": 2, "periodUnit": "d"}}, 0.5),
        ({"code": {"coding": [{"code": "TID"}]}}, 3),
    ],
)
def test_daily_dose_from_timing(timing: dict[str, object], per_day: float, mappings: Mappings) -> None:
    statement = medication("prednisone", status="active", end=None, dose_mg=10)
    statement["dosage"][0]["timing"] = timing
    facts = build_facts("p1", [statement], mappings)
    assert facts.drugs[0].dose_mg_per_day == pytest.approx(10 * per_day)


def test_dose_in_grams_is_converted_and_non_mass_doses_are_refused(mappings: Mappings) -> None:
    grams = medication("methylprednisolone", status="active", end=None, dose_mg=1)
    grams["dosage"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 0.04, "unit": "g", "code": "g"}
    tablets = medication("prednisone", status="active", end=None, dose_mg=1, id="tabs")
    tablets["dosage"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 2, "unit": "tablet", "code": "{tbl}"}
    facts = build_facts("p1", [grams, tablets], mappings)
    assert facts.drugs[0].dose_mg_per_day == pytest.approx(40)
    assert facts.drugs[1].dose_mg_per_day is None and "not a mass" in (facts.drugs[1].dose_problem or "")
