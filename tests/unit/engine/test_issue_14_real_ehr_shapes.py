"""Issue 14: records as real EHRs write them, each class from a minimal record of its shape."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from service.criteria import (
    CriteriaSet,
    HistologyRule,
    LabRule,
    NegativeTestRule,
    NoConditionRule,
    NoMedicationRule,
    PerformanceStatusRule,
    SteroidDoseRule,
    WashoutRule,
)
from service.engine import decide
from service.engine.context import EvaluationContext
from service.engine.results import State
from service.engine.rules import evaluate_rule
from service.facts import build_facts
from service.gather import prefetch_templates
from service.mappings import Mappings
from tests.conftest import EVALUATED_AT, condition, medication, observation, patient

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def run(rule: Any, resources: list[dict[str, Any]], mappings: Mappings) -> Any:
    facts = build_facts("p1", [patient(), *resources], mappings)
    return evaluate_rule(rule, EvaluationContext(facts=facts, mappings=mappings, at=EVALUATED_AT))


def tentative(resource: dict[str, Any], status: str) -> dict[str, Any]:
    resource["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": status}]}
    return resource


def days_before(days: float) -> str:
    return (EVALUATED_AT - timedelta(days=days)).isoformat()


# --- tentative diagnoses -------------------------------------------------------------------


@pytest.mark.parametrize("status", ["unconfirmed", "provisional", "differential"])
def test_a_tentative_exclusion_is_a_question_not_an_exclusion(status: str, mappings: Mappings) -> None:
    hiv = tentative(condition(SNOMED, "86406008", "HIV infection"), status)
    outcome = run(NoConditionRule(kind="no_condition", value_sets=["hiv_infection"]), [hiv], mappings)
    assert outcome.state is State.UNKNOWN
    assert "confirm" in outcome.reason
    tested = NegativeTestRule(kind="negative_test", test="hiv_antibody_antigen", value_sets=["hiv_infection"])
    assert run(tested, [hiv], mappings).state is State.UNKNOWN


@pytest.mark.parametrize("status", ["unconfirmed", "provisional", "differential"])
def test_a_tentative_cancer_neither_establishes_the_disease_nor_the_histology(
    status: str, mappings: Mappings, criteria: CriteriaSet
) -> None:
    nsclc = tentative(condition(SNOMED, "254637007", "Non-small cell lung cancer"), status)
    histology = HistologyRule(
        kind="histology",
        required_value_sets=["non_small_cell_lung_cancer"],
        excluded_value_sets=["small_cell_lung_cancer"],
    )
    outcome = run(histology, [nsclc], mappings)
    assert outcome.state is State.UNKNOWN and "confirm the histology" in outcome.reason
    facts = build_facts("p1", [patient(), nsclc], mappings)
    verdicts = decide(facts, criteria, mappings, EVALUATED_AT).trials
    assert {v.trial_id: v.status for v in verdicts}["NCT04614103"] == "not_applicable"


def test_a_confirmed_cancer_still_establishes_the_disease(mappings: Mappings, criteria: CriteriaSet) -> None:
    nsclc = tentative(condition(SNOMED, "254637007", "Non-small cell lung cancer"), "confirmed")
    facts = build_facts("p1", [patient(), nsclc], mappings)
    verdicts = decide(facts, criteria, mappings, EVALUATED_AT).trials
    assert {v.trial_id: v.status for v in verdicts}["NCT04614103"] != "not_applicable"


# --- medications the service cannot name ---------------------------------------------------


def referenced_request(medication_id: str, *, id: str = "mr-1", status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "medicationReference": {"reference": f"Medication/{medication_id}"},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": days_before(10),
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 20, "unit": "mg", "code": "mg"}}],
            }
        ],
    }


PREDNISONE = {
    "resourceType": "Medication",
    "id": "pred-20",
    "code": {"coding": [{"system": RXNORM, "code": "8640", "display": "prednisone"}]},
}


def test_an_unresolvable_medication_reference_makes_drug_criteria_unknown(mappings: Mappings) -> None:
    request = referenced_request("not-in-the-data")
    steroid = run(
        SteroidDoseRule(kind="steroid_dose", comparison="lt", prednisone_mg_per_day=10), [request], mappings
    )
    assert steroid.state is State.UNKNOWN
    assert "Medication/not-in-the-data" in steroid.reason and "not in the data" in steroid.reason
    washout = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    assert run(washout, [request], mappings).state is State.UNKNOWN
    never = NoMedicationRule(kind="no_medication", classes=["cell_therapy"])
    assert run(never, [request], mappings).state is State.UNKNOWN


def test_an_included_medication_is_read_through_its_reference(mappings: Mappings) -> None:
    outcome = run(
        SteroidDoseRule(kind="steroid_dose", comparison="lt", prednisone_mg_per_day=10),
        [referenced_request("pred-20"), PREDNISONE],
        mappings,
    )
    assert outcome.state is State.NOT_MET
    assert "20 mg/day" in outcome.evidence[0].description


def test_the_templates_ask_for_the_referenced_medications(mappings: Mappings) -> None:
    templates = prefetch_templates(mappings)
    assert "_include=MedicationRequest:medication" in templates["medication-requests"]
    assert "_include=MedicationStatement:medication" in templates["medications"]
    assert "_include=MedicationAdministration:medication" in templates["medication-administrations"]


# --- every dosage line ---------------------------------------------------------------------


def two_line_prednisone(sequences: tuple[int | None, int | None]) -> dict[str, Any]:
    resource = medication("prednisone", status="active", end=None)
    lines = []
    for sequence, when in zip(sequences, ("MORN", "EVE"), strict=True):
        line: dict[str, Any] = {
            "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "when": [when]}},
            "doseAndRate": [{"doseQuantity": {"value": 6, "unit": "mg", "code": "mg"}}],
        }
        if sequence is not None:
            line["sequence"] = sequence
        lines.append(line)
    resource["dosage"] = lines
    return resource


@pytest.mark.parametrize("sequences", [(None, None), (1, 1)])
def test_concurrent_dosage_lines_add_up_across_a_limit(
    sequences: tuple[int | None, int | None], mappings: Mappings
) -> None:
    rule = SteroidDoseRule(kind="steroid_dose", comparison="lt", prednisone_mg_per_day=10)
    outcome = run(rule, [two_line_prednisone(sequences)], mappings)
    assert outcome.state is State.NOT_MET  # 6 mg morning + 6 mg evening = 12 mg/day
    assert "12.0 mg/day" in outcome.reason


def test_sequential_dosage_lines_are_a_taper_to_confirm(mappings: Mappings) -> None:
    rule = SteroidDoseRule(kind="steroid_dose", comparison="lt", prednisone_mg_per_day=10)
    outcome = run(rule, [two_line_prednisone((1, 2))], mappings)
    assert outcome.state is State.UNKNOWN
    assert "changes over time" in outcome.reason


# --- panels --------------------------------------------------------------------------------


def test_the_searches_ask_for_the_panels_that_carry_results_as_components(mappings: Mappings) -> None:
    templates = prefetch_templates(mappings)
    assert "http://loinc.org|57021-8" in templates["observations-blood-counts"]
    assert "http://loinc.org|24323-8" in templates["observations-chemistry"]


# --- stale "active" orders -----------------------------------------------------------------


def docetaxel_order(authored: str, *, status: str = "active", id: str = "mr-doc") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": "72962", "display": "docetaxel"}]
        },
        "subject": {"reference": "Patient/p1"},
        "authoredOn": authored,
    }


def test_a_decades_old_active_order_is_stale_not_ongoing(mappings: Mappings) -> None:
    washout = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    outcome = run(washout, [docetaxel_order("1998-04-02")], mappings)
    assert outcome.state is State.MET
    assert any("looks stale" in flag and "1998-04-02" in flag for flag in outcome.flags)


def test_a_recent_active_order_is_still_ongoing(mappings: Mappings) -> None:
    washout = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    outcome = run(washout, [docetaxel_order(days_before(60))], mappings)
    assert outcome.state is State.NOT_YET and "ongoing" in outcome.reason


def test_the_horizon_is_data(mappings: Mappings) -> None:
    assert mappings.active_order_horizon_days == 365
    washout = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    just_inside = run(washout, [docetaxel_order(days_before(364))], mappings)
    just_outside = run(washout, [docetaxel_order(days_before(366))], mappings)
    assert (just_inside.state, just_outside.state) == (State.NOT_YET, State.MET)


# --- MedicationAdministration ---------------------------------------------------------------


def administration(given: str, *, request: str | None = None, id: str = "ma-1") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": id,
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "2555", "display": "cisplatin"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": given,
    }
    if request:
        resource["request"] = {"reference": request}
    return resource


def test_the_last_administration_starts_the_washout(mappings: Mappings) -> None:
    washout = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    given = EVALUATED_AT - timedelta(days=5)
    outcome = run(washout, [administration(given.isoformat())], mappings)
    assert outcome.state is State.NOT_YET
    assert outcome.until == (given + timedelta(days=28)).date()


@pytest.mark.parametrize(
    "request_reference",
    [
        "MedicationRequest/mr-cis",
        "MedicationRequest/mr-cis/_history/3",
        "https://ehr.example.org/fhir/MedicationRequest/mr-cis",
    ],
)
def test_an_administration_keeps_an_old_order_current(request_reference: str, mappings: Mappings) -> None:
    order = docetaxel_order("2020-01-01", id="mr-cis")
    given = administration(days_before(20), request=request_reference)
    washout = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    outcome = run(washout, [order, given], mappings)
    assert outcome.state is State.NOT_YET
    assert not any("stale" in flag for flag in outcome.flags)


# --- windows that say what they dropped -----------------------------------------------------


def test_a_weight_outside_its_window_is_named_not_denied(mappings: Mappings) -> None:
    rule = LabRule(
        kind="lab",
        analyte="creatinine_clearance",
        comparison="ge",
        value=50,
        unit="mL/min",
        derive_cockcroft_gault=True,
        max_plausible_weight_kg=250,
    )
    weight = observation("29463-7", 88.2, "kg", days_ago=92, id="w-1")
    creatinine = observation("2160-0", 1.0, "mg/dL", days_ago=3, id="cr-1")
    outcome = run(rule, [weight, creatinine], mappings)
    assert outcome.state is State.UNKNOWN
    day = (EVALUATED_AT - timedelta(days=92)).date().isoformat()
    assert f"weight 88.2 kg of {day} is older than 90 days" in outcome.reason
    assert "no body weight on record" not in outcome.reason


def test_a_performance_status_outside_its_window_is_named(mappings: Mappings) -> None:
    ecog = observation("89247-1", None, None, days_ago=120, id="e-1")
    ecog["valueInteger"] = 1
    outcome = run(PerformanceStatusRule(kind="performance_status", ecog_max=1), [ecog], mappings)
    assert outcome.state is State.UNKNOWN
    assert "ECOG 1 {score} of" in outcome.reason and "older than 90 days" in outcome.reason


# --- neoplasm codes that may be malignancies -----------------------------------------------


def test_a_neoplasm_of_prostate_weighs_as_another_malignancy_to_confirm(
    mappings: Mappings, criteria: CriteriaSet
) -> None:
    nsclc = condition(SNOMED, "254637007", "Non-small cell lung cancer", id="c-lung")
    prostate = condition(SNOMED, "126906006", "Neoplasm of prostate", id="c-prostate", onset="2025-02-01")
    facts = build_facts("p1", [patient(), nsclc, prostate], mappings)
    verdict = next(
        v for v in decide(facts, criteria, mappings, EVALUATED_AT).trials if v.trial_id == "NCT04614103"
    )
    other = next(c for c in verdict.criteria if c.id == "other-malignancy")
    assert other.state is State.UNKNOWN
    assert "Neoplasm of prostate (126906006)" in other.reason


def test_a_stale_active_order_does_not_silence_the_order_select_warning(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """Drafting a drug the patient "already takes" restarts nothing, and "already takes" is the
    rules' own test: an order left active since 1998 is not current, so drafting it again warns."""
    from service.facts import draft_order_exposures
    from service.sandbox.synthetic import draft_order_context, find_patient

    patient = find_patient("til-lung-eligible", EVALUATED_AT.date())
    drafts = draft_order_context(patient, mappings, "docetaxel")
    draft_orders = draft_order_exposures(drafts["draftOrders"], drafts["selections"])

    def warning(order_authored: str) -> Any:
        old_order = {**docetaxel_order(order_authored), "subject": {"reference": f"Patient/{patient.id}"}}
        facts = build_facts(patient.id, [*patient.resources, old_order], mappings, draft_orders=draft_orders)
        return decide(facts, criteria, mappings, EVALUATED_AT).order_warning

    stale = warning("1998-04-02")
    assert stale is not None and stale.drugs == ("docetaxel",)
