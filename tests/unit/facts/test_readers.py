"""One reader per FHIR resource type: each on a minimal valid resource, one missing a
field, and one holding a field of the wrong type (left out and named as a data problem)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from service.facts import (
    Diagnosis,
    DrugExposure,
    ImmunizationFact,
    PatientFacts,
    ProcedureFact,
    build_facts,
)
from service.mappings import Mappings

LOINC = "http://loinc.org"
DAY = "2026-11-01"
WHEN = datetime(2026, 11, 1, tzinfo=UTC)


def _read(mappings: Mappings, *resources: dict[str, Any]) -> PatientFacts:
    return build_facts("p1", list(resources), mappings)


def _observation(code: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "effectiveDateTime": DAY,
        **fields,
    }


# Patient


def test_patient_gives_birth_date_sex_and_vital_status(mappings: Mappings) -> None:
    facts = _read(
        mappings, {"resourceType": "Patient", "id": "p1", "birthDate": "1935-11", "gender": "female"}
    )
    assert (facts.birth_date, facts.birth_date_latest, facts.sex, facts.deceased) == (
        date(1935, 11, 1),
        date(1935, 11, 30),
        "female",
        False,
    )
    assert facts.data_problems == ()


def test_patient_without_birth_date_has_no_age(mappings: Mappings) -> None:
    facts = _read(mappings, {"resourceType": "Patient", "id": "p1", "deceasedDateTime": "2026-01-01"})
    assert (facts.birth_date, facts.sex, facts.deceased) == (None, None, True)


def test_patient_with_a_numeric_gender_keeps_the_rest(mappings: Mappings) -> None:
    facts = _read(mappings, {"resourceType": "Patient", "id": "p1", "birthDate": "1968-03-01", "gender": 1})
    assert (facts.birth_date, facts.sex) == (date(1968, 3, 1), None)
    assert facts.data_problems == ("Patient/p1: gender: expected text, got a whole number; ignored",)


# Observation: numeric


def test_numeric_observation_is_a_lab_result(mappings: Mappings) -> None:
    resource = _observation("751-8", valueQuantity={"value": 2, "unit": "10*9/L", "code": "10*9/L"})
    (result,) = _read(mappings, resource).labs["absolute_neutrophil_count"]
    assert (result.value, result.unit, result.when, str(result.source)) == (
        2.0,
        "10*9/L",
        WHEN,
        "Observation/o1",
    )


def test_numeric_observation_without_a_value_is_a_data_problem(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("751-8", valueQuantity={"unit": "10*9/L"}))
    assert "absolute_neutrophil_count" not in facts.labs
    assert facts.data_problems == ("Observation/o1 has no numeric value; ignored",)


def test_numeric_observation_with_a_text_value_names_the_path(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("751-8", valueQuantity={"value": "2.1", "unit": "10*9/L"}))
    assert "absolute_neutrophil_count" not in facts.labs
    assert "Observation/o1: valueQuantity.value: expected a number, got text; ignored" in facts.data_problems


def test_a_boolean_is_not_a_number(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("751-8", valueQuantity={"value": True, "unit": "10*9/L"}))
    assert "absolute_neutrophil_count" not in facts.labs
    assert (
        facts.data_problems[0]
        == "Observation/o1: valueQuantity.value: expected a number, got true or false; ignored"
    )


@pytest.mark.parametrize("before", [1, 300])
def test_issue_17_one_wrong_typed_observation_among_many_costs_only_itself(
    mappings: Mappings, before: int
) -> None:
    """Observations are decoded a chunk at a time; one that does not decode sends its chunk
    field by field, which must read the others as before, in order, and name only the bad one
    (300 puts it past the first chunk)."""
    good = [
        {**_observation("751-8", valueQuantity={"value": i, "unit": "10*9/L"}), "id": f"o{i}"}
        for i in range(before + 2)
    ]
    bad = {**_observation("751-8", valueQuantity={"value": "2.1", "unit": "10*9/L"}), "id": "bad"}
    resources = [*good[:before], bad, *good[before:]]
    facts = _read(mappings, *resources)
    read = facts.labs["absolute_neutrophil_count"]
    assert [(r.source.id, r.value) for r in read] == [(f"o{i}", float(i)) for i in range(before + 2)]
    assert facts.data_problems == (
        "Observation/bad: valueQuantity.value: expected a number, got text; ignored",
        "Observation/bad has no numeric value; ignored",
    )
    assert [source.id for source in facts.inputs] == [r["id"] for r in resources]


def test_a_coding_with_a_numeric_code_is_left_out_not_the_observation(mappings: Mappings) -> None:
    resource = _observation("751-8", valueQuantity={"value": 2, "unit": "10*9/L"})
    resource["code"]["coding"].insert(0, {"system": LOINC, "code": 751})
    facts = _read(mappings, resource)
    assert facts.labs["absolute_neutrophil_count"][0].code == "751-8"
    assert facts.data_problems == (
        "Observation/o1: code.coding[0].code: expected text, got a whole number; ignored",
    )


def test_scored_assessment_reads_its_answer_code(mappings: Mappings) -> None:
    resource = _observation(
        "89247-1", valueCodeableConcept={"coding": [{"system": LOINC, "code": "LA9623-5"}]}
    )
    assert _read(mappings, resource).labs["ecog_performance_status"][0].value == 1.0


# Observation: differential percentages (and the absolute counts derived from them)


def test_differential_percentage_with_a_wbc_gives_the_absolute_count(mappings: Mappings) -> None:
    wbc = _observation("6690-2", id="wbc", valueQuantity={"value": 5, "unit": "10*9/L", "code": "10*9/L"})
    percent = _observation("770-8", id="pct", valueQuantity={"value": 40, "unit": "%", "code": "%"})
    (result,) = _read(mappings, wbc, percent).labs["absolute_neutrophil_count"]
    assert (result.value, result.unit) == (2.0, "10*9/L")
    assert result.derivation is not None and "Observation/wbc" in result.derivation


def test_differential_percentage_without_a_value_derives_nothing(mappings: Mappings) -> None:
    wbc = _observation("6690-2", id="wbc", valueQuantity={"value": 5, "unit": "10*9/L", "code": "10*9/L"})
    facts = _read(mappings, wbc, _observation("770-8", id="pct"))
    assert "absolute_neutrophil_count" not in facts.labs and facts.data_problems == ()


def test_differential_percentage_in_another_unit_is_a_data_problem(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("770-8", valueQuantity={"value": 0.4, "unit": "1", "code": "1"}))
    assert facts.data_problems == ("Observation/o1: differential percentage in '1', not %; ignored",)


# Observation: staging


def test_staging_observation_gives_a_stage(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("21908-9", valueCodeableConcept={"text": "Stage IIIB"}))
    assert [(s.stage, s.text) for s in facts.stages] == [(3, "Stage IIIB")]


def test_staging_observation_without_a_value_gives_no_stage(mappings: Mappings) -> None:
    assert _read(mappings, _observation("21908-9")).stages == ()


def test_staging_observation_with_a_list_for_a_concept_keeps_its_text(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("21908-9", valueCodeableConcept=["IV"], valueString="stage IV"))
    assert [s.stage for s in facts.stages] == [4]
    assert "valueCodeableConcept: expected an object, got a list" in facts.data_problems[0]


# Observation: qualitative tests and genomics


def test_qualitative_observation_gives_a_polarity(mappings: Mappings) -> None:
    resource = _observation("56888-1", valueCodeableConcept={"coding": [{"code": "LA6577-6"}]})
    assert _read(mappings, resource).tests["hiv_antibody_antigen"][0].polarity == "negative"


def test_qualitative_observation_without_a_value_has_no_polarity(mappings: Mappings) -> None:
    (result,) = _read(mappings, _observation("56888-1")).tests["hiv_antibody_antigen"]
    assert (result.polarity, result.text) == (None, "")


def test_qualitative_observation_reads_one_interpretation_or_a_list(mappings: Mappings) -> None:
    single = _observation("56888-1", interpretation={"text": "Negative"})
    listed = _observation("56888-1", id="o2", interpretation=[{"text": "Positive"}])
    facts = _read(mappings, single, listed)
    assert sorted(r.polarity or "" for r in facts.tests["hiv_antibody_antigen"]) == ["negative", "positive"]


def test_qualitative_observation_with_a_numeric_text_is_left_out(mappings: Mappings) -> None:
    facts = _read(mappings, _observation("56888-1", valueString=5, valueBoolean=False))
    assert facts.tests["hiv_antibody_antigen"][0].polarity == "negative"
    assert facts.data_problems == ("Observation/o1: valueString: expected text, got a whole number; ignored",)


def _variant_panel(gene: Any) -> dict[str, Any]:
    return _observation(
        "69548-6",
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "48018-6"}]}, "valueCodeableConcept": gene},
        ],
        valueCodeableConcept={"coding": [{"code": "LA9633-4"}]},
    )


def test_variant_panel_is_a_result_of_the_gene_studied(mappings: Mappings) -> None:
    facts = _read(mappings, _variant_panel({"coding": [{"code": "HGNC:3236"}]}))
    assert facts.tests["egfr_mutation"][0].polarity == "positive"


def test_variant_panel_without_a_known_gene_is_no_result(mappings: Mappings) -> None:
    assert _read(mappings, _variant_panel({"text": "TP53"})).tests == {}


def test_variant_panel_with_a_text_gene_is_a_data_problem(mappings: Mappings) -> None:
    facts = _read(mappings, _variant_panel("EGFR"))
    assert facts.tests == {}
    assert "component[0].valueCodeableConcept: expected an object, got text" in facts.data_problems[0]


# Observation: a panel whose results are components


def test_panel_components_are_results_of_their_own(mappings: Mappings) -> None:
    panel = _observation(
        "58410-2",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "6690-2"}]},
                "valueQuantity": {"value": 4, "code": "10*9/L"},
            },
            {"code": {"coding": [{"system": LOINC, "code": "777-3"}]}},
            "not a component",
        ],
    )
    facts = _read(mappings, panel)
    assert [r.value for r in facts.labs["white_blood_cell_count"]] == [4.0]
    assert "platelet_count" not in facts.labs
    assert facts.data_problems == ("Observation/o1: component[2]: expected an object, got text; ignored",)


# Condition


def test_condition_is_a_diagnosis(mappings: Mappings) -> None:
    resource = {
        "resourceType": "Condition",
        "id": "c1",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007", "display": "NSCLC"}]},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "onsetDateTime": "2026-01-10",
    }
    (diagnosis,) = _read(mappings, resource).diagnoses
    assert isinstance(diagnosis, Diagnosis)
    assert (diagnosis.display, diagnosis.is_active, diagnosis.onset) == (
        "NSCLC",
        True,
        datetime(2026, 1, 10, tzinfo=UTC),
    )


def test_condition_without_a_status_is_active_until_it_abates(mappings: Mappings) -> None:
    resource = {"resourceType": "Condition", "id": "c1", "abatementPeriod": {"end": "2025-01-01"}}
    (diagnosis,) = _read(mappings, resource).diagnoses
    assert (diagnosis.display, diagnosis.clinical_status, diagnosis.is_active) == ("condition", None, False)


def test_condition_with_a_text_stage_list_keeps_the_diagnosis(mappings: Mappings) -> None:
    resource = {"resourceType": "Condition", "id": "c1", "code": {"text": "Melanoma"}, "stage": "IV"}
    facts = _read(mappings, resource)
    assert [d.display for d in facts.diagnoses] == ["Melanoma"] and facts.stages == ()
    assert facts.data_problems == ("Condition/c1: stage: expected a list, got text; ignored",)


def test_refuted_condition_is_not_a_diagnosis(mappings: Mappings) -> None:
    resource = {
        "resourceType": "Condition",
        "id": "c1",
        "verificationStatus": {"coding": [{"code": "refuted"}]},
    }
    assert _read(mappings, resource).diagnoses == ()


# MedicationStatement and MedicationRequest


def _statement(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "m1",
        "status": "active",
        "medicationCodeableConcept": {"text": "prednisone 5 MG Oral Tablet"},
        "effectivePeriod": {"start": "2026-10-01"},
        **fields,
    }


def test_statement_gives_a_drug_exposure_with_its_daily_dose(mappings: Mappings) -> None:
    dosage = [
        {
            "doseAndRate": [{"doseQuantity": {"value": 10, "code": "mg"}}],
            "timing": {"code": {"coding": [{"code": "BID"}]}},
        }
    ]
    (drug,) = _read(mappings, _statement(dosage=dosage)).drugs
    assert isinstance(drug, DrugExposure)
    assert (drug.text, drug.status, drug.dose_mg_per_day, drug.start) == (
        "prednisone 5 MG Oral Tablet",
        "active",
        20.0,
        datetime(2026, 10, 1, tzinfo=UTC),
    )


def test_statement_without_a_dosage_says_so(mappings: Mappings) -> None:
    (drug,) = _read(mappings, _statement()).drugs
    assert (drug.dose_mg_per_day, drug.dose_problem) == (None, "no dosage recorded")


def test_statement_with_a_text_dosage_reads_as_without_one(mappings: Mappings) -> None:
    facts = _read(mappings, _statement(dosage="twice daily"))
    assert facts.drugs[0].dose_problem == "no dosage recorded"
    assert facts.data_problems == ("MedicationStatement/m1: dosage: expected a list, got text; ignored",)


def test_request_refers_to_an_included_medication(mappings: Mappings) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "authoredOn": "2026-10-01",
        "medicationReference": {"reference": "Medication/pembro"},
    }
    included = {"resourceType": "Medication", "id": "pembro", "code": {"text": "pembrolizumab"}}
    (drug,) = _read(mappings, request, included).drugs
    assert (drug.text, drug.start, drug.unidentified, drug.last_evidence) == (
        "pembrolizumab",
        datetime(2026, 10, 1, tzinfo=UTC),
        None,
        (datetime(2026, 10, 1, tzinfo=UTC), "authored"),
    )


def test_request_to_a_medication_not_in_the_data_is_unidentified(mappings: Mappings) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "medicationReference": {"reference": "Medication/x"},
    }
    (drug,) = _read(mappings, request).drugs
    assert (drug.status, drug.unidentified) == (
        "unknown",
        "it refers to Medication/x, which is not in the data",
    )


def test_request_with_a_numeric_authored_date_is_undated(mappings: Mappings) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "authoredOn": 2026,
        "medicationCodeableConcept": {"text": "x"},
    }
    facts = _read(mappings, request)
    assert facts.drugs[0].start is None
    assert facts.data_problems == (
        "MedicationRequest/r1: authoredOn: expected text, got a whole number; ignored",
    )


# MedicationAdministration


def _administration(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationAdministration",
        "id": "a1",
        "status": "completed",
        "medicationCodeableConcept": {"text": "carboplatin"},
        "effectiveDateTime": DAY,
        **fields,
    }


def test_administration_is_a_dose_given_that_dates_its_order(mappings: Mappings) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "authoredOn": "2026-06-01",
        "medicationCodeableConcept": {"text": "carboplatin"},
    }
    facts = _read(mappings, request, _administration(request={"reference": "MedicationRequest/r1"}))
    order, given = facts.drugs
    assert (given.start, given.end, given.last_evidence) == (WHEN, WHEN, (WHEN, "given"))
    assert order.last_evidence == (WHEN, "given")


def test_administration_without_a_date_is_undated(mappings: Mappings) -> None:
    facts = _read(mappings, _administration(effectiveDateTime=None))
    assert (facts.drugs[0].start, facts.drugs[0].last_evidence) == (None, None)


def test_administration_with_a_list_for_its_dosage_keeps_the_dose(mappings: Mappings) -> None:
    facts = _read(mappings, _administration(dosage=[{"route": {"text": "IV"}}]))
    assert (facts.drugs[0].text, facts.drugs[0].route) == ("carboplatin", "")
    assert facts.data_problems == (
        "MedicationAdministration/a1: dosage: expected an object, got a list; ignored",
    )


# Procedure


def test_procedure_is_a_procedure_fact(mappings: Mappings) -> None:
    resource = {
        "resourceType": "Procedure",
        "id": "x1",
        "status": "completed",
        "code": {"text": "Radiotherapy"},
        "performedPeriod": {"start": "2026-10-20", "end": "2026-10-01"},
    }
    (procedure,) = _read(mappings, resource).procedures
    assert isinstance(procedure, ProcedureFact)
    assert (procedure.start, procedure.end, procedure.is_active, procedure.clinical_status) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 10, 20, tzinfo=UTC),
        False,
        "procedure completed",
    )


def test_procedure_in_progress_is_active_with_no_end(mappings: Mappings) -> None:
    resource = {"resourceType": "Procedure", "id": "x1", "status": "in-progress", "performedDateTime": DAY}
    (procedure,) = _read(mappings, resource).procedures
    assert (procedure.is_active, procedure.onset, procedure.abatement, procedure.display) == (
        True,
        WHEN,
        None,
        "procedure",
    )


def test_procedure_with_a_numeric_status_reads_as_of_unknown_status(mappings: Mappings) -> None:
    facts = _read(
        mappings, {"resourceType": "Procedure", "id": "x1", "status": 3, "code": {"text": "Dialysis"}}
    )
    assert facts.procedures[0].status == "unknown"
    assert facts.data_problems == ("Procedure/x1: status: expected text, got a whole number; ignored",)


# Immunization


def test_immunization_is_an_immunization_fact(mappings: Mappings) -> None:
    resource = {
        "resourceType": "Immunization",
        "id": "i1",
        "status": "completed",
        "vaccineCode": {
            "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "03", "display": "MMR"}]
        },
        "occurrenceDateTime": DAY,
    }
    (immunization,) = _read(mappings, resource).immunizations
    assert isinstance(immunization, ImmunizationFact)
    assert (immunization.text, immunization.start, immunization.end) == ("MMR", WHEN, WHEN)


def test_immunization_without_a_date_is_undated(mappings: Mappings) -> None:
    facts = _read(mappings, {"resourceType": "Immunization", "id": "i1", "vaccineCode": {"text": "MMR"}})
    assert (facts.immunizations[0].given, facts.immunizations[0].status) == (None, "unknown")


def test_immunization_with_an_object_for_a_date_is_undated(mappings: Mappings) -> None:
    resource = {
        "resourceType": "Immunization",
        "id": "i1",
        "vaccineCode": {"text": "MMR"},
        "occurrenceDateTime": {},
    }
    facts = _read(mappings, resource)
    assert facts.immunizations[0].given is None
    assert facts.data_problems == (
        "Immunization/i1: occurrenceDateTime: expected text, got an object; ignored",
    )


# Every reader


@pytest.mark.parametrize(
    "resource_type",
    [
        "Patient",
        "Observation",
        "Condition",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "Procedure",
        "Immunization",
    ],
)
def test_a_resource_of_only_type_and_id_reads_without_problems(
    mappings: Mappings, resource_type: str
) -> None:
    facts = _read(mappings, {"resourceType": resource_type, "id": "r1"})
    assert facts.data_problems == ()
    assert [str(s) for s in facts.inputs] == [f"{resource_type}/r1"]
