"""Issue 13: a rule never answers *met* when a source it reads could not be obtained.

Every rule of every criteria file (children of ``all``/``any`` included) is evaluated
for synthetic patients who meet most criteria, once with all data and once with every
source that :func:`sources_read` names for it marked unavailable.  The guard lives in
one place (:func:`evaluate_rule`), so these tests also pin that every rule kind the
engine can evaluate declares what it reads.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from functools import cache
from typing import Any

import pytest

from service.criteria import (
    AgeRule,
    AllRule,
    AnyRule,
    CriteriaSet,
    HistologyRule,
    LabRule,
    NegativeTestRule,
    NoConditionRule,
    NoDriverAlterationRule,
    NoMedicationRule,
    NoResultRule,
    OnMedicationRule,
    PerformanceStatusRule,
    StageRule,
    SteroidDoseRule,
    WashoutRule,
    walk_rules,
)
from service.engine.context import EvaluationContext
from service.engine.results import RuleOutcome, State
from service.engine.rules import _EVALUATORS, evaluate_rule
from service.engine.sources import sources_read
from service.facts import (
    ADMINISTRATIONS,
    IMMUNIZATIONS,
    MEDICATION_REQUESTS,
    PROCEDURES,
    PatientFacts,
    build_facts,
    registry,
)
from service.mappings import Mappings
from service.sandbox.synthetic import generate_patients
from tests.conftest import EVALUATED_AT

PATIENTS = ("til-lung-eligible", "til-live-vaccine")
LOST = "the FHIR server did not answer within 8 s"


@cache
def _resources(patient_id: str) -> list[dict[str, Any]]:
    """A synthetic patient's resources, generated relative to the evaluation day."""
    return {p.id: p for p in generate_patients(EVALUATED_AT.date())}[patient_id].resources


def _facts(patient_id: str, mappings: Mappings, unavailable: dict[str, str] | None = None) -> PatientFacts:
    return build_facts(patient_id, _resources(patient_id), mappings, unavailable=unavailable)


def _state(rule: Any, facts: PatientFacts, mappings: Mappings, at: datetime = EVALUATED_AT) -> State:
    return evaluate_rule(rule, EvaluationContext(facts=facts, mappings=mappings, at=at)).state


def _every_rule(criteria: CriteriaSet) -> list[tuple[str, Any]]:
    """(trial/criterion, rule) for every rule and nested child in every criteria file."""
    found = []
    for trial in criteria.trials:
        for criterion in trial.all_criteria():
            if criterion.rule is not None:
                for number, rule in enumerate(walk_rules(criterion.rule)):
                    found.append((f"{trial.id}/{criterion.id}#{number}", rule))
    return found


def _every_source(mappings: Mappings) -> list[str]:
    """Everything ``PatientFacts.unavailable`` can name: each Observation definition and every
    optional source of the registry (a source added there is covered here by itself)."""
    return [*mappings.observation_definitions, *(s.key for s in registry.SOURCES if not s.required)]


def _outcome(rule: Any, facts: PatientFacts, mappings: Mappings) -> RuleOutcome:
    return evaluate_rule(rule, EvaluationContext(facts=facts, mappings=mappings, at=EVALUATED_AT))


def _rightly_met(rule: Any, facts: PatientFacts, mappings: Mappings) -> bool:
    """Met without its sources: it does not apply to the patient (a man's pregnancy test), or it
    is an ``any`` met by one child that read nothing it lacked (an age, a histology)."""
    outcome = _outcome(rule, facts, mappings)
    if outcome.not_applicable:
        return True
    return isinstance(rule, AnyRule) and any(
        (not sources_read(child, mappings) or _outcome(child, facts, mappings).not_applicable)
        and _state(child, facts, mappings) is State.MET
        for child in rule.rules
    )


@pytest.mark.parametrize("patient_id", PATIENTS)
def test_issue_13_no_rule_is_met_when_a_source_it_reads_is_lost(
    patient_id: str, criteria: CriteriaSet, mappings: Mappings
) -> None:
    complete = _facts(patient_id, mappings)
    flipped = []
    for where, rule in _every_rule(criteria):
        sources = sources_read(rule, mappings)
        if not sources:
            continue
        lost = _facts(patient_id, mappings, dict.fromkeys(sources, LOST))
        state = _state(rule, lost, mappings)
        if state is State.MET:
            assert _rightly_met(rule, lost, mappings), f"{where} is met without {sources}"
        elif _state(rule, complete, mappings) is State.MET:
            flipped.append(where)
    # Not vacuous: with every source read, the patient meets many of these rules.
    assert len(flipped) >= 20, flipped


@pytest.mark.parametrize("patient_id", PATIENTS)
def test_issue_13_a_lost_source_a_rule_does_not_read_changes_nothing(
    patient_id: str, criteria: CriteriaSet, mappings: Mappings
) -> None:
    """The guard is precise: losing the other sources leaves each rule's state as it was."""
    complete = _facts(patient_id, mappings)
    for where, rule in _every_rule(criteria):
        read = set(sources_read(rule, mappings))
        others = {s: LOST for s in _every_source(mappings) if s not in read}
        before = _state(rule, complete, mappings)
        assert _state(rule, _facts(patient_id, mappings, others), mappings) is before, where


MINIMAL_RULES: dict[type[Any], Any] = {
    AgeRule: AgeRule(kind="age"),
    LabRule: LabRule(kind="lab", analyte="hemoglobin", comparison="ge", value=9.0, unit="g/dL"),
    NoResultRule: NoResultRule(kind="no_result", analyte="hemoglobin"),
    NegativeTestRule: NegativeTestRule(kind="negative_test", test="hiv_antibody_antigen"),
    NoConditionRule: NoConditionRule(kind="no_condition", value_sets=["organ_transplant"]),
    HistologyRule: HistologyRule(kind="histology", required_value_sets=["non_small_cell_lung_cancer"]),
    NoMedicationRule: NoMedicationRule(kind="no_medication", classes=["live_vaccine"]),
    OnMedicationRule: OnMedicationRule(kind="on_medication", classes=["systemic_corticosteroid"]),
    WashoutRule: WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28),
    SteroidDoseRule: SteroidDoseRule(kind="steroid_dose", comparison="le", prednisone_mg_per_day=10),
    NoDriverAlterationRule: NoDriverAlterationRule(
        kind="no_driver_alteration",
        tests=["egfr_mutation"],
        positive_value_sets=[],
        negative_value_sets=["egfr_wild_type"],
    ),
    PerformanceStatusRule: PerformanceStatusRule(kind="performance_status", ecog_max=1),
    StageRule: StageRule(kind="stage", met_from=3),
    AllRule: AllRule(kind="all", rules=[AgeRule(kind="age")]),
    AnyRule: AnyRule(kind="any", rules=[AgeRule(kind="age")]),
}


def test_issue_13_every_rule_kind_the_engine_evaluates_declares_its_sources(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    assert set(MINIMAL_RULES) == set(_EVALUATORS), "a new rule kind needs a minimal instance here"
    for rule in MINIMAL_RULES.values():
        assert isinstance(sources_read(rule, mappings), list)
    in_use = {type(rule) for _, rule in _every_rule(criteria)}
    assert in_use <= set(_EVALUATORS)


def test_a_rule_kind_without_a_source_declaration_is_refused_loudly(mappings: Mappings) -> None:
    class UndeclaredRule:
        kind = "undeclared"

    with pytest.raises(TypeError, match="no source declaration for rule kind UndeclaredRule"):
        sources_read(UndeclaredRule(), mappings)


def test_issue_13_sources_read_names_what_each_kind_reads(mappings: Mappings) -> None:
    roles = mappings.roles
    assert sources_read(MINIMAL_RULES[AgeRule], mappings) == []
    assert sources_read(MINIMAL_RULES[LabRule], mappings) == ["hemoglobin"]
    assert sources_read(MINIMAL_RULES[NoConditionRule], mappings) == [PROCEDURES]
    assert sources_read(MINIMAL_RULES[NoMedicationRule], mappings) == [
        MEDICATION_REQUESTS,
        ADMINISTRATIONS,
        IMMUNIZATIONS,
    ]
    assert sources_read(MINIMAL_RULES[SteroidDoseRule], mappings) == [MEDICATION_REQUESTS, ADMINISTRATIONS]
    assert sources_read(MINIMAL_RULES[PerformanceStatusRule], mappings) == [
        roles.analytes.ecog_performance_status,
        roles.analytes.karnofsky_performance_status,
    ]
    assert sources_read(MINIMAL_RULES[StageRule], mappings) == ["staging"]
    clearance = LabRule(
        kind="lab",
        analyte="creatinine_clearance",
        comparison="ge",
        value=50,
        unit="mL/min",
        derive_cockcroft_gault=True,
    )
    cockcroft_gault = mappings.derivations("cockcroft_gault")["creatinine_clearance"]
    assert sources_read(clearance, mappings) == [
        "creatinine_clearance",
        cockcroft_gault.inputs["creatinine"],
        cockcroft_gault.inputs["weight"],
    ]


LIVE_VACCINES = NoMedicationRule(kind="no_medication", classes=["live_vaccine"], within_days=28)


def test_issue_13_no_live_vaccine_is_unknown_when_the_immunizations_were_not_read(mappings: Mappings) -> None:
    """The case from the issue: ``no_medication`` over a class that includes Immunizations."""
    assert mappings.drug_classes["live_vaccine"].includes_immunizations
    without = _facts("til-lung-eligible", mappings, {IMMUNIZATIONS: LOST})
    outcome = evaluate_rule(
        LIVE_VACCINES, EvaluationContext(facts=without, mappings=mappings, at=EVALUATED_AT)
    )
    assert outcome.state is State.UNKNOWN
    assert "the Immunizations could not be read" in outcome.reason
    assert _state(LIVE_VACCINES, _facts("til-lung-eligible", mappings), mappings) is State.MET
    vaccinated = _facts("til-live-vaccine", mappings)
    assert _state(LIVE_VACCINES, vaccinated, mappings) is State.NOT_MET


def test_issue_13_a_class_without_immunizations_ignores_their_loss(mappings: Mappings) -> None:
    steroids = NoMedicationRule(kind="no_medication", classes=["systemic_corticosteroid"])
    assert not mappings.drug_classes["systemic_corticosteroid"].includes_immunizations
    facts = _facts("til-lung-eligible", mappings, {IMMUNIZATIONS: LOST})
    assert _state(steroids, facts, mappings) is State.MET


def test_issue_13_lost_medication_requests_make_the_steroid_dose_unknown(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    steroid_rules = [
        (where, rule) for where, rule in _every_rule(criteria) if isinstance(rule, SteroidDoseRule)
    ]
    assert len(steroid_rules) >= 2
    complete = _facts("til-lung-eligible", mappings)
    lost = _facts("til-lung-eligible", mappings, {MEDICATION_REQUESTS: LOST})
    for where, rule in steroid_rules:
        assert _state(rule, complete, mappings) is State.MET, where
        outcome = evaluate_rule(rule, EvaluationContext(facts=lost, mappings=mappings, at=EVALUATED_AT))
        assert outcome.state is State.UNKNOWN, where
        assert "the MedicationRequests could not be read" in outcome.reason
        assert outcome.resolve_hint


def test_issue_13_a_test_that_does_not_apply_to_the_patient_is_not_made_unknown_by_its_loss(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """A man's pregnancy criterion reads no pregnancy test, so losing that search changes nothing."""
    pregnancy = next(
        rule
        for _, rule in _every_rule(criteria)
        if isinstance(rule, NegativeTestRule) and rule.only_for_sex == "female"
    )
    facts = _facts("til-lung-eligible", mappings, {pregnancy.test: LOST})
    assert facts.sex == "male"
    outcome = evaluate_rule(pregnancy, EvaluationContext(facts=facts, mappings=mappings, at=EVALUATED_AT))
    assert outcome.state is State.MET
    assert outcome.reason == "not applicable (male)"
    facts = replace(facts, sex="female")
    assert _state(pregnancy, facts, mappings) is State.UNKNOWN
