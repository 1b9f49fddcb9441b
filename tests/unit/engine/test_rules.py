"""Conditions, medications, tests, age and the three-valued combinators."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from service.criteria import (
    AgeRule,
    AllRule,
    AnyRule,
    CriteriaSet,
    HistologyRule,
    NegativeTestRule,
    NoConditionRule,
    NoDriverAlterationRule,
    NoMedicationRule,
    OnMedicationRule,
    PerformanceStatusRule,
    StageRule,
    SteroidDoseRule,
    WashoutRule,
)
from service.engine import decide
from service.engine.context import EvaluationContext
from service.engine.results import State
from service.engine.rules import evaluate_rule
from service.facts import build_facts
from service.mappings import Mappings
from tests.conftest import EVALUATED_AT, LUNG_CANCER, condition, medication, observation, patient

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def run(rule: Any, resources: list[dict[str, Any]], mappings: Mappings, **patient_fields: str) -> Any:
    facts = build_facts("p1", [patient(**patient_fields), *resources], mappings)
    return evaluate_rule(rule, EvaluationContext(facts=facts, mappings=mappings, at=EVALUATED_AT))


@pytest.mark.parametrize(
    ("birth", "state"),
    [
        ("2010-11-24", State.NOT_MET),  # 15, a day before the 16th birthday
        ("2010-11-23", State.MET),  # 16 on the evaluation day
        ("1936-11-24", State.MET),  # 89... 90 tomorrow
        ("1935-11-23", State.NOT_MET),  # 91 today
    ],
)
def test_age_limits_are_inclusive_in_completed_years(birth: str, state: State, mappings: Mappings) -> None:
    rule = AgeRule(kind="age", min_years=16, max_years=90)
    assert run(rule, [], mappings, birth_date=birth).state is state


def test_age_above_max_can_be_a_review_item(mappings: Mappings) -> None:
    rule = AgeRule(
        kind="age", min_years=18, max_years=70, above_max="needs_review", above_max_note="Medical Monitor"
    )
    outcome = run(rule, [], mappings, birth_date="1950-01-01")
    assert outcome.state is State.NEEDS_REVIEW and "Medical Monitor" in outcome.reason


def test_missing_birth_date_is_unknown(mappings: Mappings) -> None:
    facts = build_facts("p1", [{"resourceType": "Patient", "id": "p1"}], mappings)
    outcome = evaluate_rule(
        AgeRule(kind="age", min_years=16), EvaluationContext(facts, mappings, EVALUATED_AT)
    )
    assert outcome.state is State.UNKNOWN


def test_no_condition_ignores_refuted_resolved_and_entered_in_error(mappings: Mappings) -> None:
    rule = NoConditionRule(kind="no_condition", value_sets=["hiv_infection"])
    refuted = condition(SNOMED, "86406008", "HIV")
    refuted["verificationStatus"] = {"coding": [{"code": "refuted"}]}
    resolved = condition(SNOMED, "86406008", "HIV", status="resolved", id="c2")
    assert run(rule, [refuted, resolved], mappings).state is State.MET
    assert run(rule, [condition(SNOMED, "86406008", "HIV")], mappings).state is State.NOT_MET


def test_history_counts_when_the_rule_says_so(mappings: Mappings) -> None:
    rule = NoConditionRule(kind="no_condition", value_sets=["organ_transplant"], include_history=True)
    old = condition(ICD10, "Z94.0", "Kidney transplant status", status="inactive")
    assert run(rule, [old], mappings).state is State.NOT_MET


def test_other_primary_malignancy_window_and_exception(mappings: Mappings) -> None:
    rule = NoConditionRule(
        kind="no_condition",
        value_sets=["malignant_neoplasm"],
        unless_value_sets=["lung_cancer"],
        include_history=True,
        onset_within_days=1096,
    )
    recent_breast = condition(
        ICD10,
        "C50.911",
        "Breast cancer",
        status="resolved",
        onset="2024-01-01",
        abatement="2024-09-01",
        id="b",
    )
    old_breast = condition(
        ICD10,
        "C50.911",
        "Breast cancer",
        status="resolved",
        onset="2015-01-01",
        abatement="2016-01-01",
        id="b",
    )
    assert run(rule, [LUNG_CANCER, recent_breast], mappings).state is State.NOT_MET
    assert run(rule, [LUNG_CANCER, old_breast], mappings).state is State.MET
    assert run(rule, [LUNG_CANCER], mappings).state is State.MET


def test_presence_can_be_unknown_unless_treated(mappings: Mappings) -> None:
    rule = NoConditionRule(
        kind="no_condition",
        value_sets=["autoimmune_disease"],
        presence_state="unknown",
        not_met_if_on_classes=["immunomodulatory_therapy"],
    )
    lupus = condition(SNOMED, "55464009", "SLE")
    assert run(rule, [lupus], mappings).state is State.UNKNOWN
    treated = run(rule, [lupus, medication("methotrexate 15 mg", status="active", end=None)], mappings)
    assert treated.state is State.NOT_MET


def test_histology_met_excluded_or_unknown(mappings: Mappings) -> None:
    rule = HistologyRule(
        kind="histology",
        required_value_sets=["non_small_cell_lung_cancer"],
        excluded_value_sets=["small_cell_lung_cancer"],
    )
    assert run(rule, [condition(SNOMED, "254637007", "NSCLC")], mappings).state is State.MET
    assert run(rule, [condition(SNOMED, "254632001", "SCLC")], mappings).state is State.NOT_MET
    assert run(rule, [LUNG_CANCER], mappings).state is State.UNKNOWN


def test_uncoded_condition_text_is_a_fallback_only(mappings: Mappings) -> None:
    rule = HistologyRule(
        kind="histology",
        required_value_sets=["non_small_cell_lung_cancer"],
        excluded_value_sets=["small_cell_lung_cancer"],
    )
    text_only = {
        "resourceType": "Condition",
        "id": "t",
        "code": {"text": "Small cell lung cancer, extensive stage"},
        "clinicalStatus": {"coding": [{"code": "active"}]},
    }
    assert run(rule, [text_only], mappings).state is State.NOT_MET


class TestWashout:
    rule = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)

    def test_recent_therapy_is_not_yet_with_the_date_it_lifts(self, mappings: Mappings) -> None:
        outcome = run(self.rule, [medication("docetaxel", start="2026-09-01", end="2026-11-13")], mappings)
        assert outcome.state is State.NOT_YET
        assert outcome.until == date(2026, 12, 11)

    def test_therapy_ended_long_enough_ago_is_met(self, mappings: Mappings) -> None:
        assert (
            run(self.rule, [medication("docetaxel", start="2026-09-01", end="2026-10-20")], mappings).state
            is State.MET
        )

    def test_ongoing_therapy_blocks_until_28_days_after_today(self, mappings: Mappings) -> None:
        outcome = run(
            self.rule, [medication("pembrolizumab", status="active", start="2026-09-01", end=None)], mappings
        )
        assert outcome.state is State.NOT_YET and outcome.until == date(2026, 12, 21)
        assert "ongoing" in outcome.reason

    def test_matching_by_rxnorm_atc_prefix_and_name(self, mappings: Mappings) -> None:
        by_rxnorm = medication("Keytruda 100 mg/4 mL", rxnorm="1547545", end="2026-11-20")
        by_atc = medication("something", end="2026-11-20")
        by_atc["medicationCodeableConcept"]["coding"] = [
            {"system": "http://www.whocc.no/atc", "code": "L01XX99"}
        ]
        for statement in (by_rxnorm, by_atc, medication("CARBOplatin 450 mg", end="2026-11-20")):
            assert run(self.rule, [statement], mappings).state is State.NOT_YET

    def test_unrelated_medication_is_ignored(self, mappings: Mappings) -> None:
        assert run(self.rule, [medication("amoxicillin", end="2026-11-20")], mappings).state is State.MET

    def test_undated_therapy_is_unknown(self, mappings: Mappings) -> None:
        statement = medication("docetaxel")
        del statement["effectivePeriod"]
        assert run(self.rule, [statement], mappings).state is State.UNKNOWN


class TestSteroids:
    rule_essen = SteroidDoseRule(kind="steroid_dose", comparison="le", prednisone_mg_per_day=15)
    rule_iovance = SteroidDoseRule(kind="steroid_dose", comparison="lt", prednisone_mg_per_day=10)

    def current(self, text: str, dose: float, per_day: int = 1, route: str | None = "oral") -> dict[str, Any]:
        return medication(
            text, status="active", start="2026-10-01", end=None, dose_mg=dose, per_day=per_day, route=route
        )

    def test_dexamethasone_is_converted_to_prednisone_equivalent(self, mappings: Mappings) -> None:
        dexamethasone = self.current("dexamethasone 2 mg", 2)
        assert run(self.rule_essen, [dexamethasone], mappings).state is State.MET
        outcome = run(self.rule_iovance, [dexamethasone], mappings)
        assert outcome.state is State.NOT_MET and "13.3" in outcome.reason

    @pytest.mark.parametrize(
        ("dose", "essen", "iovance"),
        [
            (15, State.MET, State.NOT_MET),
            (15.5, State.NOT_MET, State.NOT_MET),
            (9.5, State.MET, State.MET),
            (10, State.MET, State.NOT_MET),
        ],
    )
    def test_prednisone_boundaries(
        self, dose: float, essen: State, iovance: State, mappings: Mappings
    ) -> None:
        statement = self.current("prednisone", dose)
        assert run(self.rule_essen, [statement], mappings).state is essen
        assert run(self.rule_iovance, [statement], mappings).state is iovance

    def test_doses_per_day_multiply(self, mappings: Mappings) -> None:
        assert (
            run(self.rule_essen, [self.current("prednisone 10 mg", 10, per_day=2)], mappings).state
            is State.NOT_MET
        )

    def test_inhaled_steroids_do_not_count(self, mappings: Mappings) -> None:
        assert (
            run(self.rule_iovance, [self.current("budesonide", 0.4, route="inhalation")], mappings).state
            is State.MET
        )
        assert (
            run(self.rule_iovance, [self.current("dexamethasone", 4, route="Inhalation")], mappings).state
            is State.MET
        )

    def test_dose_without_frequency_is_unknown(self, mappings: Mappings) -> None:
        statement = self.current("prednisone 5 mg", 5)
        del statement["dosage"][0]["timing"]
        assert run(self.rule_iovance, [statement], mappings).state is State.UNKNOWN

    def test_stopped_steroids_do_not_count(self, mappings: Mappings) -> None:
        assert (
            run(self.rule_iovance, [medication("prednisone", dose_mg=40, end="2026-10-01")], mappings).state
            is State.MET
        )


def test_anticoagulant_exemption_in_an_any(mappings: Mappings) -> None:
    from service.criteria import LabRule

    rule = AnyRule(
        kind="any",
        rules=[
            OnMedicationRule(kind="on_medication", classes=["anticoagulant"], within_days=3),
            LabRule(kind="lab", analyte="international_normalized_ratio", comparison="le", times_uln=1.5),
        ],
    )
    high_inr = observation("6301-6", 2.5, "{INR}")
    assert run(rule, [high_inr], mappings).state is State.NOT_MET
    warfarin = medication("warfarin 5 mg", status="active", end=None)
    assert run(rule, [high_inr, warfarin], mappings).state is State.MET
    stopped_two_days_ago = medication("apixaban", end="2026-11-21")
    assert run(rule, [high_inr, stopped_two_days_ago], mappings).state is State.MET
    stopped_a_week_ago = medication("apixaban", end="2026-11-16")
    assert run(rule, [high_inr, stopped_a_week_ago], mappings).state is State.NOT_MET


def test_prior_cell_therapy_except_lifileucel(mappings: Mappings) -> None:
    rule = NoMedicationRule(
        kind="no_medication", classes=["cell_therapy"], within_days=7305, unless_classes=["lifileucel"]
    )
    assert (
        run(
            rule, [medication("Kymriah (tisagenlecleucel)", start="2019-01-01", end="2019-01-02")], mappings
        ).state
        is State.NOT_MET
    )
    assert (
        run(rule, [medication("lifileucel (LN-145)", start="2024-01-01", end="2024-01-02")], mappings).state
        is State.MET
    )
    assert (
        run(rule, [medication("tisagenlecleucel", start="2005-01-01", end="2005-01-02")], mappings).state
        is State.MET
    )


class TestNegativeTest:
    rule = NegativeTestRule(kind="negative_test", test="hiv_antibody_antigen", value_sets=["hiv_infection"])

    def qualitative(self, answer: dict[str, Any] | None = None, text: str | None = None) -> dict[str, Any]:
        resource = observation("56888-1", None, None, days_ago=30)
        if answer:
            resource["valueCodeableConcept"] = {"coding": [answer]}
        if text:
            resource["valueString"] = text
        return resource

    def test_positive_negative_and_missing(self, mappings: Mappings) -> None:
        assert (
            run(
                self.rule, [self.qualitative({"system": "http://loinc.org", "code": "LA6576-8"})], mappings
            ).state
            is State.NOT_MET
        )
        assert (
            run(
                self.rule, [self.qualitative({"system": "http://loinc.org", "code": "LA6577-6"})], mappings
            ).state
            is State.MET
        )
        missing = run(self.rule, [], mappings)
        assert missing.state is State.UNKNOWN and missing.resolve_hint

    def test_text_answers_check_negative_first(self, mappings: Mappings) -> None:
        assert run(self.rule, [self.qualitative(text="Not detected")], mappings).state is State.MET
        assert run(self.rule, [self.qualitative(text="REACTIVE")], mappings).state is State.NOT_MET
        assert run(self.rule, [self.qualitative(text="see comment")], mappings).state is State.UNKNOWN

    def test_a_diagnosis_excludes_without_a_test(self, mappings: Mappings) -> None:
        assert run(self.rule, [condition(ICD10, "B20", "HIV disease")], mappings).state is State.NOT_MET

    def test_sex_specific_test_is_not_applicable_to_the_other_sex(self, mappings: Mappings) -> None:
        rule = NegativeTestRule(
            kind="negative_test", test="pregnancy_test", value_sets=["pregnancy"], only_for_sex="female"
        )
        assert run(rule, [], mappings, gender="male").state is State.MET
        assert run(rule, [], mappings, gender="female").state is State.UNKNOWN


class TestDriverAlterations:
    rule = NoDriverAlterationRule(
        kind="no_driver_alteration",
        tests=["egfr_mutation", "alk_rearrangement", "ros1_rearrangement"],
        positive_value_sets=["egfr_alk_ros1_driver"],
        negative_value_sets=["egfr_wild_type", "alk_negative", "ros1_negative"],
        implying_medication_classes=["egfr_alk_specific_inhibitor"],
    )

    def gene_result(self, code: str = "21665-5", answer: str = "LA6577-6") -> dict[str, Any]:
        resource = observation(code, None, None, days_ago=300, id=f"gene-{code}")
        resource["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": answer}]}
        return resource

    def test_all_three_negative_is_met(self, mappings: Mappings) -> None:
        results = [self.gene_result(c) for c in ("21665-5", "76042-8", "81202-7")]
        assert run(self.rule, results, mappings).state is State.MET

    def test_missing_genes_are_unknown_and_named(self, mappings: Mappings) -> None:
        outcome = run(self.rule, [self.gene_result("21665-5")], mappings)
        assert outcome.state is State.UNKNOWN and "ALK" in outcome.reason and "ROS1" in outcome.reason

    def test_positive_result_condition_or_targeted_drug_excludes(self, mappings: Mappings) -> None:
        assert run(self.rule, [self.gene_result("76042-8", "LA6576-8")], mappings).state is State.NOT_MET
        assert (
            run(self.rule, [condition(SNOMED, "703228009", "NSCLC with EGFR mutation")], mappings).state
            is State.NOT_MET
        )
        assert run(self.rule, [medication("Tagrisso (osimertinib) 80 mg")], mappings).state is State.NOT_MET

    def test_mcode_genomics_pattern(self, mappings: Mappings) -> None:
        variant = observation("69548-6", None, None, days_ago=100, id="variant")
        variant["valueCodeableConcept"] = {
            "coding": [{"system": "http://loinc.org", "code": "LA9633-4", "display": "Present"}]
        }
        variant["component"] = [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
                "valueCodeableConcept": {
                    "coding": [{"system": "http://www.genenames.org/geneId", "code": "HGNC:427"}]
                },
            }
        ]
        assert run(self.rule, [variant], mappings).state is State.NOT_MET


def test_three_valued_combinators(mappings: Mappings) -> None:
    met = AgeRule(kind="age", min_years=18)
    not_met = AgeRule(kind="age", max_years=20)
    unknown = NegativeTestRule(kind="negative_test", test="hiv_antibody_antigen")
    not_yet = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    recent = medication("docetaxel", end="2026-11-20")
    cases = [
        (AllRule(kind="all", rules=[met, unknown]), State.UNKNOWN),
        (AllRule(kind="all", rules=[met, not_met, unknown]), State.NOT_MET),
        (AllRule(kind="all", rules=[met, not_yet]), State.NOT_YET),
        (AnyRule(kind="any", rules=[not_met, unknown]), State.UNKNOWN),
        (AnyRule(kind="any", rules=[not_met, met]), State.MET),
        (AnyRule(kind="any", rules=[not_met, not_met]), State.NOT_MET),
        (AnyRule(kind="any", rules=[unknown, not_yet]), State.NOT_YET),
    ]
    for rule, expected in cases:
        assert run(rule, [recent], mappings).state is expected, rule


class TestPerformanceStatus:
    essen = PerformanceStatusRule(kind="performance_status", ecog_max=2, karnofsky_min=60)
    iovance = PerformanceStatusRule(kind="performance_status", ecog_max=1)

    def ecog(self, value: int, days_ago: float = 3, id: str = "ecog") -> dict[str, Any]:
        resource = observation("89247-1", None, None, days_ago=days_ago, id=id)
        resource["valueInteger"] = value
        return resource

    def karnofsky(self, value: float, days_ago: float = 3, id: str = "kps") -> dict[str, Any]:
        return observation("89243-0", value, "%", days_ago=days_ago, id=id)

    def test_ecog_limits(self, mappings: Mappings) -> None:
        assert run(self.essen, [self.ecog(2)], mappings).state is State.MET
        assert run(self.essen, [self.ecog(3)], mappings).state is State.NOT_MET
        assert run(self.iovance, [self.ecog(2)], mappings).state is State.NOT_MET

    def test_a_missing_second_scale_does_not_rescue_a_failing_first(self, mappings: Mappings) -> None:
        outcome = run(self.essen, [self.ecog(3)], mappings)
        assert outcome.state is State.NOT_MET and "ECOG 3" in outcome.reason

    def test_karnofsky_alone(self, mappings: Mappings) -> None:
        assert run(self.essen, [self.karnofsky(60)], mappings).state is State.MET
        assert run(self.essen, [self.karnofsky(50)], mappings).state is State.NOT_MET
        converted = run(self.iovance, [self.karnofsky(80)], mappings)
        assert converted.state is State.MET and "≈ ECOG 1" in converted.reason
        assert run(self.iovance, [self.karnofsky(60)], mappings).state is State.NOT_MET

    def test_the_newest_assessment_decides(self, mappings: Mappings) -> None:
        older_good, newer_bad = self.ecog(1, days_ago=20, id="old"), self.ecog(3, days_ago=2, id="new")
        assert run(self.essen, [older_good, newer_bad], mappings).state is State.NOT_MET
        same_day_either = [self.ecog(3, days_ago=2), self.karnofsky(70, days_ago=2)]
        assert run(self.essen, same_day_either, mappings).state is State.MET

    def test_missing_or_stale_is_unknown(self, mappings: Mappings) -> None:
        assert run(self.essen, [], mappings).state is State.UNKNOWN
        assert run(self.essen, [self.ecog(0, days_ago=120)], mappings).state is State.UNKNOWN


class TestStage:
    rule = StageRule(kind="stage", met_from=4, review_from=3, review_note="unresectable?")

    def staged(self, text: str, days_ago: float = 30) -> dict[str, Any]:
        resource = observation("21908-9", None, None, days_ago=days_ago, id=f"stage-{text}")
        resource["valueCodeableConcept"] = {"text": text}
        return resource

    @pytest.mark.parametrize(
        ("text", "state"),
        [
            ("Stage IVA", State.MET),
            ("IIIB", State.NEEDS_REVIEW),
            ("Stage II", State.NOT_MET),
            ("T2N0M0", State.UNKNOWN),
        ],
    )
    def test_stage_groups(self, text: str, state: State, mappings: Mappings) -> None:
        assert run(self.rule, [self.staged(text)], mappings).state is state

    def test_condition_stage_summary_and_snomed_qualifier(self, mappings: Mappings) -> None:
        cancer = condition(SNOMED, "254637007", "NSCLC")
        cancer["stage"] = [
            {"summary": {"coding": [{"system": SNOMED, "code": "258228008", "display": "Stage 4"}]}}
        ]
        assert run(self.rule, [cancer], mappings).state is State.MET

    def test_the_newest_stage_decides(self, mappings: Mappings) -> None:
        assert (
            run(self.rule, [self.staged("Stage II", 400), self.staged("Stage IV", 10)], mappings).state
            is State.MET
        )


def test_absolute_count_is_derived_from_the_differential(mappings: Mappings) -> None:
    from service.criteria import LabRule

    rule = LabRule(kind="lab", analyte="absolute_neutrophil_count", comparison="ge", value=1.5, unit="10*9/L")
    white_cells = observation("6690-2", 5.0, "10*3/uL", id="wbc")
    neutrophil_percent = observation("770-8", 40, "%", id="pct")
    outcome = run(rule, [white_cells, neutrophil_percent], mappings)
    assert outcome.state is State.MET and "computed from WBC" in outcome.reason
    assert outcome.evidence[0].value == 2.0
    measured = observation("751-8", 1.0, "10*9/L", id="anc")
    assert run(rule, [white_cells, neutrophil_percent, measured], mappings).state is State.NOT_MET


def test_a_deceased_patient_gets_no_trial(mappings: Mappings, criteria: Any) -> None:
    from service.engine import decide

    dead = {**patient(), "deceasedBoolean": True}
    facts = build_facts("p1", [dead, LUNG_CANCER], mappings)
    results = decide(facts, criteria, mappings, EVALUATED_AT).trials
    assert all(r.status == "not_applicable" and "deceased" in r.reason for r in results)


def test_a_contained_medication_is_read(mappings: Mappings) -> None:
    statement = medication("x", end="2026-11-20")
    del statement["medicationCodeableConcept"]
    statement["medicationReference"] = {"reference": "#m"}
    statement["contained"] = [
        {
            "resourceType": "Medication",
            "id": "m",
            "code": {
                "coding": [
                    {
                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                        "code": "72962",
                        "display": "docetaxel",
                    }
                ]
            },
        }
    ]
    rule = WashoutRule(kind="washout", classes=["systemic_anticancer_therapy"], days=28)
    assert run(rule, [statement], mappings).state is State.NOT_YET


def test_absence_can_be_a_review_item_rather_than_met(mappings: Mappings) -> None:
    """Where the problem list cannot settle a criterion (an ECG must be read), nothing coded
    is a review item, never 'met'."""
    rule = NoConditionRule(
        kind="no_condition",
        value_sets=["ventricular_arrhythmia"],
        presence_state="unknown",
        absence_state="needs_review",
        absence_note="read the ECG",
    )
    absent = run(rule, [], mappings)
    assert absent.state is State.NEEDS_REVIEW and "read the ECG" in absent.reason
    assert run(rule, [condition(SNOMED, "25569003", "Ventricular tachycardia")], mappings).state is (
        State.UNKNOWN
    )


LUNG = "NCT06538012"
IOV = "NCT04614103"


def _criterion_state(
    trial_id: str,
    criterion_id: str,
    resources: list[dict[str, Any]],
    criteria: CriteriaSet,
    mappings: Mappings,
) -> State:
    facts = build_facts("p1", resources, mappings)
    result = next(r for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.trial_id == trial_id)
    return next(c.state for c in result.criteria if c.id == criterion_id)


@pytest.mark.parametrize(
    ("trial_id", "criterion_id", "coding", "state"),
    [
        (LUNG, "arrhythmia", (ICD10, "I44.2", "Atrioventricular block, complete"), State.NOT_MET),
        (LUNG, "arrhythmia", (SNOMED, "195042002", "Second degree AV block"), State.NOT_MET),
        (LUNG, "arrhythmia", (ICD10, "I47.20", "Ventricular tachycardia, unspecified"), State.UNKNOWN),
        (LUNG, "arrhythmia", (ICD10, "I44.0", "Atrioventricular block, first degree"), State.NEEDS_REVIEW),
        (LUNG, "transplant-or-dialysis", (ICD10, "Z99.2", "Dependence on renal dialysis"), State.NOT_MET),
        (LUNG, "transplant-or-dialysis", (ICD10, "Z94.0", "Kidney transplant status"), State.NOT_MET),
        (
            LUNG,
            "transplant-or-dialysis",
            (ICD10, "D89.811", "Chronic graft-versus-host disease"),
            State.NOT_MET,
        ),
        (LUNG, "transplant-or-dialysis", (ICD10, "Z94.84", "Stem cells transplant status"), State.UNKNOWN),
        (LUNG, "transplant-or-dialysis", (ICD10, "Z94.7", "Corneal transplant status"), State.MET),
        (LUNG, "hiv", (ICD10, "Z21", "Asymptomatic HIV infection status"), State.NOT_MET),
        (LUNG, "syphilis", (ICD10, "A51.0", "Primary genital syphilis"), State.NOT_MET),
        (LUNG, "hepatitis", (ICD10, "B17.10", "Acute hepatitis C without hepatic coma"), State.NOT_MET),
        (
            IOV,
            "nonsquamous-histology",
            (SNOMED, "254634000", "Squamous cell carcinoma of lung"),
            State.NOT_MET,
        ),
        (
            IOV,
            "transplant-or-cell-therapy",
            (ICD10, "Z92.850", "Personal history of CAR T-cell therapy"),
            State.NOT_MET,
        ),
        (
            IOV,
            "transplant-or-cell-therapy",
            (ICD10, "Z92.858", "Personal history of other cellular therapy"),
            State.UNKNOWN,
        ),
        (IOV, "transplant-or-cell-therapy", (ICD10, "Z94.84", "Stem cells transplant status"), State.NOT_MET),
        (IOV, "transplant-or-cell-therapy", (ICD10, "Z94.7", "Corneal transplant status"), State.MET),
        (IOV, "stage-iv", (ICD10, "C79.51", "Secondary malignant neoplasm of bone"), State.MET),
        (
            IOV,
            "stage-iv",
            (ICD10, "C77.1", "Secondary malignant neoplasm of intrathoracic lymph nodes"),
            State.UNKNOWN,
        ),
    ],
)
def test_coded_conditions_reach_the_criteria(
    trial_id: str,
    criterion_id: str,
    coding: tuple[str, str, str],
    state: State,
    criteria: CriteriaSet,
    mappings: Mappings,
) -> None:
    """Status codes (Z21, Z94.x, Z99.2), rhythm codes and histology codes as EHRs record them."""
    resources = [patient(), LUNG_CANCER, condition(*coding, id="cond-2")]
    assert _criterion_state(trial_id, criterion_id, resources, criteria, mappings) is state


@pytest.mark.parametrize("code", ["Z33.1", "O09.90"])
def test_a_coded_pregnancy_rules_out_nct06538012(
    code: str, criteria: CriteriaSet, mappings: Mappings
) -> None:
    pregnancy = condition(ICD10, code, "Pregnancy", id="cond-2", onset="2026-09-01")
    resources = [patient(gender="female"), LUNG_CANCER, pregnancy]
    assert _criterion_state(LUNG, "pregnancy", resources, criteria, mappings) is State.NOT_MET


def test_an_old_or_disproved_pregnancy_code_does_not_rule_out(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """Problem lists keep pregnancy codes active after delivery: a 2019 code is not a pregnancy now,
    and a negative hCG newer than the code outweighs it."""
    old = condition(ICD10, "O09.90", "Supervision of high risk pregnancy", id="cond-2", onset="2019-05-01")
    assert _criterion_state(
        LUNG, "pregnancy", [patient(gender="female"), LUNG_CANCER, old], criteria, mappings
    ) is (
        State.UNKNOWN  # no pregnancy test on record
    )
    recent = condition(ICD10, "Z33.1", "Pregnant state", id="cond-3", onset="2026-09-01")
    negative = observation("2106-3", None, None, days_ago=3, id="obs-hcg")
    negative["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": "LA6577-6"}]}
    resources = [patient(gender="female"), LUNG_CANCER, recent, negative]
    assert _criterion_state(LUNG, "pregnancy", resources, criteria, mappings) is State.MET


def test_a_negative_test_says_when_it_stops_counting(mappings: Mappings) -> None:
    """A negative hCG is read for 30 days (``lookback_days``): its evidence carries that window
    and the day it goes stale, as a lab result's does."""
    from datetime import timedelta

    from service.criteria import NegativeTestRule

    rule = NegativeTestRule(kind="negative_test", test="pregnancy_test", value_sets=["pregnancy"])
    negative = observation("2106-3", None, None, days_ago=20, id="obs-hcg")
    negative["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": "LA6577-6"}]}
    outcome = run(rule, [patient(gender="female"), negative], mappings)
    assert outcome.state is State.MET
    (evidence,) = outcome.evidence
    taken = (EVALUATED_AT - timedelta(days=20)).date()
    assert (evidence.lookback_days, evidence.stale_on) == (30, taken + timedelta(days=30))


def _nyha(answer: dict[str, Any], days_ago: int = 10) -> dict[str, Any]:
    resource = observation("88020-3", None, None, days_ago=days_ago, id="obs-nyha")
    resource.update(answer)
    return resource


@pytest.mark.parametrize(
    ("answer", "lung_state", "iov_state"),
    [
        (
            {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "420300004"}]}},
            State.MET,
            State.MET,
        ),
        (
            {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "421704003"}]}},
            State.MET,
            State.NOT_MET,
        ),
        ({"valueInteger": 3}, State.NOT_MET, State.NOT_MET),
        (
            {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "422293003"}]}},
            State.NOT_MET,
            State.NOT_MET,
        ),
    ],
)
def test_nyha_class_recorded_as_an_observation(
    answer: dict[str, Any], lung_state: State, iov_state: State, criteria: CriteriaSet, mappings: Mappings
) -> None:
    resources = [patient(), LUNG_CANCER, _nyha(answer)]
    assert _criterion_state(LUNG, "heart-failure", resources, criteria, mappings) is lung_state
    assert _criterion_state(IOV, "nyha-class-1", resources, criteria, mappings) is iov_state


def test_an_old_nyha_class_is_unknown_not_met(criteria: CriteriaSet, mappings: Mappings) -> None:
    resources = [patient(), LUNG_CANCER, _nyha({"valueInteger": 1}, days_ago=400)]
    assert _criterion_state(IOV, "nyha-class-1", resources, criteria, mappings) is State.UNKNOWN


@pytest.mark.parametrize(
    ("creatinine_mg_dl", "weight_kg", "gender", "state", "said"),
    [
        (0.9, None, "male", State.MET, ""),  # the creatinine branch
        (2.5, None, "male", State.UNKNOWN, "at least 110 kg"),  # age 58: (140-58) x W / (72 x 2.5) >= 50
        (1.6, None, "female", State.UNKNOWN, "at least 83 kg"),
        (6.0, None, "male", State.NOT_MET, "more than 200 kg"),  # would need 263 kg
        (1.6, 90.0, "male", State.MET, ""),  # Cockcroft-Gault with the weight: 64 mL/min
        (1.6, 60.0, "male", State.NOT_MET, ""),  # 43 mL/min
        (2.5, 120.0, "male", State.MET, ""),  # a heavy patient: 55 mL/min
    ],
)
def test_renal_function_without_a_weight_is_bounded_by_the_weight_it_would_need(
    creatinine_mg_dl: float,
    weight_kg: float | None,
    gender: str,
    state: State,
    said: str,
    criteria: CriteriaSet,
    mappings: Mappings,
) -> None:
    """Clearance grows with weight: without one, only an implausible weight (over 200 kg) decides."""
    resources = [
        patient(gender=gender),
        LUNG_CANCER,
        observation("2160-0", creatinine_mg_dl, "mg/dL", id="obs-cr"),
    ]
    if weight_kg is not None:
        resources.append(observation("29463-7", weight_kg, "kg", id="obs-wt"))
    facts = build_facts("p1", resources, mappings)
    result = next(r for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.trial_id == LUNG)
    renal = next(c for c in result.criteria if c.id == "renal-function")
    assert renal.state is state, renal.reason
    assert said in renal.reason


def test_clearance_is_estimated_only_where_the_criterion_asks_for_cockcroft_gault(mappings: Mappings) -> None:
    """The derivation is declared in the mappings; whether an estimate may stand for a measured
    clearance is the criterion's choice (``derive_cockcroft_gault``), as the protocol words it."""
    from service.criteria import LabRule

    inputs = [
        patient(),
        observation("2160-0", 1.6, "mg/dL", id="cr"),
        observation("29463-7", 90.0, "kg", id="wt"),
    ]
    measured_only = LabRule(
        kind="lab", analyte="creatinine_clearance", comparison="ge", value=50, unit="mL/min"
    )
    outcome = run(measured_only, inputs, mappings)
    assert outcome.state is State.UNKNOWN and "Cockcroft-Gault" not in outcome.reason
    estimated = measured_only.model_copy(update={"derive_cockcroft_gault": True})
    assert run(estimated, inputs, mappings).state is State.MET


def _procedure(
    system: str, code: str, display: str, performed: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": f"proc-{code}",
        "status": status,
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": performed,
    }


def test_procedures_count_only_where_a_value_set_includes_them(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """A dialysis Procedure rules NCT06538012 out; a Procedure never stands in for a diagnosis."""
    dialysis = _procedure(SNOMED, "302497006", "Hemodialysis", "2026-11-20")
    resources = [patient(), LUNG_CANCER, dialysis]
    assert _criterion_state(LUNG, "transplant-or-dialysis", resources, criteria, mappings) is State.NOT_MET
    not_done = {**dialysis, "status": "not-done"}
    assert _criterion_state(
        LUNG, "transplant-or-dialysis", [patient(), LUNG_CANCER, not_done], criteria, mappings
    ) is (State.MET)
    # The lung cancer SNOMED code on a Procedure is not a lung cancer diagnosis.
    facts = build_facts(
        "p1", [patient(), _procedure(SNOMED, "93880001", "lung cancer", "2026-10-01")], mappings
    )
    assert not EvaluationContext(facts, mappings, EVALUATED_AT).diagnoses_in("lung_cancer")


def test_recent_radiotherapy_blocks_until_the_washout_ends(criteria: CriteriaSet, mappings: Mappings) -> None:
    radiotherapy = _procedure(
        "http://www.ama-assn.org/go/cpt", "77412", "Radiation treatment delivery", "2026-11-13T10:00:00Z"
    )
    facts = build_facts("p1", [patient(), LUNG_CANCER, radiotherapy], mappings)
    result = next(r for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.trial_id == LUNG)
    washout = next(c for c in result.criteria if c.id == "prior-therapy-washout")
    assert washout.state is State.NOT_YET and washout.until == date(2026, 12, 11)


def test_unreadable_procedures_leave_procedure_criteria_unknown(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    facts = build_facts(
        "p1", [patient(), LUNG_CANCER], mappings, unavailable={"procedures": "the FHIR server answered 500"}
    )
    result = next(r for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.trial_id == LUNG)
    states = {c.id: c.state for c in result.criteria}
    assert states["transplant-or-dialysis"] is State.UNKNOWN
    assert states["prior-therapy-washout"] is State.UNKNOWN
    assert states["autoimmune-disease"] is State.MET  # its value sets see Conditions only


def _immunization(cvx: str, display: str, given: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": f"imm-{cvx}",
        "status": "completed",
        "vaccineCode": {
            "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx, "display": display}]
        },
        "patient": {"reference": "Patient/p1"},
        "occurrenceDateTime": given,
    }


def test_a_recent_live_vaccine_blocks_iov_lun_202_until_28_days_after(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    live = _immunization("03", "MMR", "2026-11-13")
    facts = build_facts("p1", [patient(), LUNG_CANCER, live], mappings)
    result = next(r for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.trial_id == IOV)
    vaccine = next(c for c in result.criteria if c.id == "live-vaccine")
    assert vaccine.state is State.NOT_YET and vaccine.until == date(2026, 12, 11)
    inactivated = _immunization("150", "influenza, injectable, quadrivalent", "2026-11-22")
    assert _criterion_state(
        IOV, "live-vaccine", [patient(), LUNG_CANCER, inactivated], criteria, mappings
    ) is (State.MET)


def test_immunizations_are_seen_only_by_classes_that_include_them(mappings: Mappings) -> None:
    odd = _immunization("999", "pembrolizumab", "2026-11-20")  # a vaccine record is never a drug exposure
    context = EvaluationContext(build_facts("p1", [patient(), odd], mappings), mappings, EVALUATED_AT)
    assert context.drugs_in("checkpoint_inhibitor") == []


def test_unreadable_immunizations_leave_the_vaccine_criterion_unknown(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    facts = build_facts(
        "p1",
        [patient(), LUNG_CANCER],
        mappings,
        unavailable={"immunizations": "not prefetched, and no FHIR server may be queried"},
    )
    result = next(r for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.trial_id == IOV)
    assert next(c.state for c in result.criteria if c.id == "live-vaccine") is State.UNKNOWN


@pytest.mark.parametrize(
    ("performed", "status", "state"),
    [
        ({"performedDateTime": "2026-11-13"}, "completed", State.NOT_YET),
        ({"performedDateTime": "2026-11-13"}, None, State.NOT_YET),  # no status is still a procedure
        (
            {"performedPeriod": {"start": "2026-11-20", "end": "2026-10-01"}},
            "completed",
            State.NOT_YET,
        ),  # reversed
        (
            {"performedPeriod": {"start": "2026-10-20"}},
            "completed",
            State.UNKNOWN,
        ),  # when it ended is unknown
        (
            {"performedPeriod": {"start": "2024-01-10"}},
            "completed",
            State.MET,
        ),  # began too long ago to matter
        ({"performedDateTime": "9999-12-31"}, "completed", State.UNKNOWN),  # not a 500
    ],
)
def test_radiotherapy_dates_as_hospitals_record_them(
    performed: dict[str, Any], status: str | None, state: State, criteria: CriteriaSet, mappings: Mappings
) -> None:
    radiotherapy = _procedure(SNOMED, "108290001", "Radiotherapy", "2026-11-13")
    del radiotherapy["performedDateTime"]
    radiotherapy.update(performed)
    if status is None:
        del radiotherapy["status"]
    else:
        radiotherapy["status"] = status
    resources = [patient(), LUNG_CANCER, radiotherapy]
    assert _criterion_state(LUNG, "prior-therapy-washout", resources, criteria, mappings) is state


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        ({"valueString": "NYHA class IV"}, State.NOT_MET),
        ({"valueString": "Class I"}, State.MET),
        (
            {"valueString": "see cardiology letter"},
            State.UNKNOWN,
        ),  # on record, unreadable: never "none on record"
    ],
)
def test_nyha_class_as_text(
    answer: dict[str, Any], state: State, criteria: CriteriaSet, mappings: Mappings
) -> None:
    assert _criterion_state(
        LUNG, "heart-failure", [patient(), LUNG_CANCER, _nyha(answer)], criteria, mappings
    ) is (state)


def test_generic_metastatic_disease_does_not_establish_stage_iv(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    generic = condition(SNOMED, "128462008", "Secondary malignant neoplastic disease", id="cond-2")
    assert (
        _criterion_state(IOV, "stage-iv", [patient(), LUNG_CANCER, generic], criteria, mappings)
        is State.UNKNOWN
    )


@pytest.mark.parametrize("trial_id", [LUNG, IOV])
def test_an_unspecified_transplant_is_a_question_not_an_exclusion(
    trial_id: str, criteria: CriteriaSet, mappings: Mappings
) -> None:
    unspecified = condition(ICD10, "Z94.9", "Transplanted organ and tissue status, unspecified", id="cond-2")
    criterion = "transplant-or-dialysis" if trial_id == LUNG else "transplant-or-cell-therapy"
    assert _criterion_state(
        trial_id, criterion, [patient(), LUNG_CANCER, unspecified], criteria, mappings
    ) is (State.UNKNOWN)


def test_free_text_value_sets_do_not_overreach(mappings: Mappings) -> None:
    assert "immune_effector_cell_therapy_history" not in mappings.value_sets_containing(
        [], "golf cart accident"
    )
    assert "lung_cancer" not in mappings.value_sets_containing([], "colon cancer metastatic to lung")
    assert "squamous_non_small_cell_lung_cancer" not in mappings.value_sets_containing(
        [], "non squamous cell carcinoma of the lung"
    )
    assert "lung_cancer" in mappings.value_sets_containing(
        [], "stage iv adenocarcinoma of left lower lobe lung"
    )


@pytest.mark.parametrize(
    ("criterion_id", "code", "comparator", "value", "unit", "state"),
    [
        ("absolute-neutrophil-count", "751-8", "<", 0.5, "10*3/uL", State.NOT_MET),  # below 0.5 fails >= 1.5
        ("absolute-neutrophil-count", "751-8", ">", 2.0, "10*3/uL", State.MET),
        ("absolute-neutrophil-count", "751-8", ">", 1.0, "10*3/uL", State.UNKNOWN),  # could be either side
        ("total-bilirubin", "1975-2", "<", 0.2, "mg/dL", State.MET),  # below 0.2 passes <= 1.5x ULN
        ("absolute-neutrophil-count", "751-8", "ad", 2.0, "10*3/uL", State.UNKNOWN),
    ],
)
def test_a_censored_result_decides_only_when_every_value_it_allows_does(
    criterion_id: str,
    code: str,
    comparator: str,
    value: float,
    unit: str,
    state: State,
    criteria: CriteriaSet,
    mappings: Mappings,
) -> None:
    result = observation(code, value, unit, id="obs-censored")
    result["valueQuantity"]["comparator"] = comparator
    assert _criterion_state(LUNG, criterion_id, [patient(), LUNG_CANCER, result], criteria, mappings) is state


def test_a_provisional_diagnosis_is_a_question_not_an_exclusion(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    breast = condition(
        ICD10, "C50.911", "Malignant neoplasm of right female breast", id="cond-2", onset="2025-11-01"
    )
    breast["verificationStatus"] = {"coding": [{"code": "differential"}]}
    resources = [patient(gender="female"), LUNG_CANCER, breast]
    assert _criterion_state(IOV, "other-malignancy", resources, criteria, mappings) is State.UNKNOWN
    breast["verificationStatus"] = {"coding": [{"code": "confirmed"}]}
    assert _criterion_state(IOV, "other-malignancy", resources, criteria, mappings) is State.NOT_MET


def test_a_medication_request_ends_when_its_dosage_bounds_end(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """The anticoagulant exemption needs the real end of the course, from dosageInstruction.timing."""
    enoxaparin = {
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": {"text": "enoxaparin 40 MG/0.4ML Prefilled Syringe"},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-11-13",
        "dosageInstruction": [
            {"timing": {"repeat": {"boundsPeriod": {"start": "2026-11-13", "end": "2026-11-22"}}}}
        ],
    }
    high_inr = observation("6301-6", 1.8, "{INR}", ref_high=1.1, id="obs-inr")
    resources = [patient(), LUNG_CANCER, enoxaparin, high_inr]
    assert _criterion_state(LUNG, "inr", resources, criteria, mappings) is State.MET


@pytest.mark.parametrize(
    ("text", "state"), [("0-40 U/L", State.NOT_MET), ("7 - 56", State.MET), ("normal", State.MET)]
)
def test_a_reference_range_given_only_as_text_sets_the_uln(
    text: str, state: State, criteria: CriteriaSet, mappings: Mappings
) -> None:
    """ALT 130 U/L: over 3x a lab ULN of 40, under 3x 56; unreadable text falls back to the default ULN (55)."""
    alt = observation("1742-6", 130, "U/L", id="obs-alt")
    alt["referenceRange"] = [{"text": text}]
    ast = observation("1920-8", 30, "U/L", id="obs-ast", ref_high=40)
    assert _criterion_state(LUNG, "alt-ast", [patient(), LUNG_CANCER, alt, ast], criteria, mappings) is state


@pytest.mark.parametrize(
    ("product", "tablets", "state"),
    [
        ("predniSONE 5 MG Oral Tablet", 3, State.NOT_MET),  # 15 mg/day: IOV-LUN-202 needs < 10
        ("predniSONE 5 MG Oral Tablet", 1, State.MET),
        ("prednisoLONE 15 MG/5ML Oral Solution", 1, State.UNKNOWN),  # a concentration, not a tablet strength
    ],
)
def test_a_dose_in_tablets_uses_the_strength_in_the_product_name(
    product: str, tablets: int, state: State, criteria: CriteriaSet, mappings: Mappings
) -> None:
    steroid = medication(product, status="active", end=None, dose_mg=tablets)
    steroid["dosage"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": tablets,
        "unit": "{tbl}",
        "code": "{tbl}",
    }
    assert (
        _criterion_state(IOV, "corticosteroids", [patient(), LUNG_CANCER, steroid], criteria, mappings)
        is state
    )


@pytest.mark.parametrize(
    ("code", "display", "lung", "iov"),
    [
        ("424132000", "Non-small cell carcinoma of lung, TNM stage 1", True, False),  # IOV needs stage IV
        ("423121009", "Non-small cell carcinoma of lung, TNM stage 4", True, True),
        (
            "424970000",
            "Large cell carcinoma of lung, TNM stage 3",
            True,
            True,
        ),  # stage III: review, card kept
        ("425376008", "Squamous cell carcinoma of lung, TNM stage 4", True, False),  # not nonsquamous
        (
            "67841000119103",
            "Primary small cell malignant neoplasm of lung, TNM stage 4",
            True,
            False,
        ),  # not NSCLC
    ],
)
def test_lung_cancer_coded_with_its_tnm_stage(
    code: str, display: str, lung: bool, iov: bool, criteria: CriteriaSet, mappings: Mappings
) -> None:
    """Synthea and many EHRs code the diagnosis and its stage in one SNOMED CT concept, with no ICD-10."""
    cancer = condition(SNOMED, code, display, id="cond-lung")
    facts = build_facts("p1", [patient(), cancer], mappings)
    suggested = {r.trial_id for r in decide(facts, criteria, mappings, EVALUATED_AT).trials if r.suggested}
    assert (LUNG in suggested, IOV in suggested) == (lung, iov)


@pytest.mark.parametrize(
    ("codings", "text", "expected"),
    [
        ([(SNOMED, "1000000000")], "adenocarcinoma of stomach", True),  # a SNOMED concept our lists lack
        ([], "carcinoma of the stomach", True),  # free text only
        ([(ICD10, "Z85.028")], "personal history of other malignant neoplasm of stomach", False),
        ([(SNOMED, "1000000000")], "family history of stomach cancer", False),
        ([], "suspected gastric cancer", False),
    ],
)
def test_text_decides_only_where_no_code_is_known_and_nothing_qualifies_it(
    codings: list[tuple[str, str]], text: str, expected: bool, mappings: Mappings
) -> None:
    assert ("stomach_cancer" in mappings.value_sets_containing(codings, text)) is expected


def test_a_ventricular_arrhythmia_on_amiodarone_has_had_its_intervention(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    vt = condition(ICD10, "I47.20", "Ventricular tachycardia, unspecified", id="cond-2")
    amiodarone = medication("amiodarone hydrochloride 200 MG Oral Tablet", status="active", end=None)
    assert _criterion_state(
        LUNG, "arrhythmia", [patient(), LUNG_CANCER, vt, amiodarone], criteria, mappings
    ) is (State.NOT_MET)


@pytest.mark.parametrize(("answer", "state"), [("LA15173-0", State.NOT_MET), ("LA26683-5", State.MET)])
def test_the_pregnancy_status_observation_counts(
    answer: str, state: State, criteria: CriteriaSet, mappings: Mappings
) -> None:
    status = observation("82810-3", None, None, days_ago=2, id="obs-preg")
    status["valueCodeableConcept"] = {"coding": [{"system": "http://loinc.org", "code": answer}]}
    resources = [patient(gender="female"), LUNG_CANCER, status]
    assert _criterion_state(LUNG, "pregnancy", resources, criteria, mappings) is state


@pytest.mark.parametrize(
    ("criterion_id", "code", "display"),
    [
        ("primary-immunodeficiency", "23238000", "Common variable agammaglobulinemia"),
        ("other-malignancy", "399068003", "Malignant tumor of prostate"),
    ],
)
def test_snomed_concepts_we_lack_are_read_by_their_display(
    criterion_id: str, code: str, display: str, criteria: CriteriaSet, mappings: Mappings
) -> None:
    entry = condition(SNOMED, code, display, id="cond-2", onset="2025-06-01")
    assert (
        _criterion_state(IOV, criterion_id, [patient(), LUNG_CANCER, entry], criteria, mappings)
        is State.NOT_MET
    )


@pytest.mark.parametrize(
    ("birth", "state"),
    [
        ("1936", State.MET),  # 89 or 90 on 2026-11-23: within 16-90 either way
        ("1935-11", State.UNKNOWN),  # 90 if born after the 23rd, else 91
        ("1935-10", State.NOT_MET),  # 91 whatever the day
        ("2010", State.UNKNOWN),  # 15 or 16
    ],
)
def test_a_partial_birth_date_decides_only_when_every_age_it_allows_does(
    birth: str, state: State, mappings: Mappings
) -> None:
    rule = AgeRule(kind="age", min_years=16, max_years=90)
    assert run(rule, [], mappings, birth_date=birth).state is state


def test_two_histologies_recorded_is_a_question(criteria: CriteriaSet, mappings: Mappings) -> None:
    adeno = condition(SNOMED, "254626006", "Adenocarcinoma of lung", id="cond-2")
    squamous = condition(SNOMED, "254634000", "Squamous cell carcinoma of lung", id="cond-3")
    resources = [patient(), LUNG_CANCER, adeno, squamous]
    assert _criterion_state(IOV, "nonsquamous-histology", resources, criteria, mappings) is State.NEEDS_REVIEW


@pytest.mark.parametrize(
    ("criterion_id", "trial_id", "code", "display", "gender"),
    [
        ("pregnancy", LUNG, "72892002", "Normal pregnancy", "female"),
        ("hiv", LUNG, "62479008", "Acquired immune deficiency syndrome", "male"),
        ("other-malignancy", IOV, "254837009", "", "female"),  # a bare code, no display
    ],
)
def test_snomed_codes_synthea_uses(
    criterion_id: str,
    trial_id: str,
    code: str,
    display: str,
    gender: str,
    criteria: CriteriaSet,
    mappings: Mappings,
) -> None:
    entry = condition(SNOMED, code, display, id="cond-2", onset="2026-09-01")
    resources = [patient(gender=gender), LUNG_CANCER, entry]
    assert _criterion_state(trial_id, criterion_id, resources, criteria, mappings) is State.NOT_MET


def test_crohns_disease_on_azathioprine_rules_out_nct06538012(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    crohns = condition(SNOMED, "34000006", "Crohn's disease", id="cond-2")
    azathioprine = medication("azathioprine 50 MG Oral Tablet", status="active", end=None)
    resources = [patient(), LUNG_CANCER, crohns, azathioprine]
    assert _criterion_state(LUNG, "autoimmune-disease", resources, criteria, mappings) is State.NOT_MET


def test_a_panel_with_its_results_as_components_is_read(criteria: CriteriaSet, mappings: Mappings) -> None:
    """Some labs send a CBC as one Observation whose components are the results."""
    panel = observation("58410-2", None, None, id="obs-cbc")
    panel["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "6690-2"}]},
            "valueQuantity": {
                "value": 2.1,
                "unit": "10*3/uL",
                "system": "http://unitsofmeasure.org",
                "code": "10*3/uL",
            },
        },
        {"code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]}, "valueQuantity": True},
    ]
    resources = [patient(), LUNG_CANCER, panel]
    assert _criterion_state(LUNG, "white-blood-cell-count", resources, criteria, mappings) is State.NOT_MET
    assert _criterion_state(LUNG, "platelet-count", resources, criteria, mappings) is State.UNKNOWN
