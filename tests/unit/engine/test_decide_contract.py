"""Issue 13: the facts -> engine contract, tested on its own.

These tests build :class:`PatientFacts` directly from the typed facts (no FHIR, no
fact builder) and check what :func:`decide` promises every reader of the
:class:`Decision`: states, evidence with its version, look-back and stale date, the
washout's not-before date, the age (or why there is none), the blocking criteria, the
cohorts' fit, and a JSON form that reads back to the same decision.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta

import pytest

from service.criteria import CriteriaSet
from service.engine import decide
from service.engine.decision import (
    CriterionVerdict,
    Decision,
    DecisionShapeError,
    State,
    decision_from_data,
    decision_json,
    read_decision,
)
from service.facts import (
    Diagnosis,
    DrugExposure,
    ImmunizationFact,
    LabResult,
    PatientFacts,
    ProcedureFact,
    SourceRef,
)
from service.mappings import Mappings
from tests.conftest import EVALUATED_AT

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LUNG = "NCT06538012"
IOV = "NCT04614103"
GASTRIC = "essen-til-gastroesophageal"


def _lab(
    analyte: str, value: float, unit: str | None, days_ago: int, resource_id: str, version: str = "1"
) -> LabResult:
    return LabResult(
        analyte=analyte,
        value=value,
        unit=unit,
        when=EVALUATED_AT - timedelta(days=days_ago),
        source=SourceRef("Observation", resource_id, version),
        code="",
        display=analyte.replace("_", " "),
    )


LUNG_CANCER = Diagnosis(
    codings=((ICD10, "C34.90"),),
    text="Lung cancer",
    display="Lung cancer",
    clinical_status="active",
    onset=datetime(2026, 1, 10, tzinfo=EVALUATED_AT.tzinfo),
    abatement=None,
    recorded=None,
    source=SourceRef("Condition", "lung", "2"),
)


def _facts(**overrides: object) -> PatientFacts:
    """A 58-year-old man with lung cancer, a recent CBC (neutrophils low) and PD-L1 50%."""
    labs = [
        _lab("hemoglobin", 128, "g/L", 5, "hb", version="3"),
        _lab("white_blood_cell_count", 4.1, "10*9/L", 5, "wbc"),
        _lab("absolute_neutrophil_count", 0.9, "10*9/L", 5, "anc"),
        _lab("platelet_count", 210, "10*9/L", 5, "plt"),
        _lab("ecog_performance_status", 1, None, 10, "ecog"),
        _lab("pd_l1_tumor_proportion_score", 50, "%", 60, "pdl1"),
    ]
    fields: dict[str, object] = {
        "patient_id": "p1",
        "birth_date": date(1968, 3, 1),
        "sex": "male",
        "labs": {lab.analyte: [lab] for lab in labs},
        "diagnoses": [LUNG_CANCER],
        "inputs": [SourceRef("Patient", "p1", "4"), LUNG_CANCER.source, *(lab.source for lab in labs)],
    }
    fields.update(overrides)
    return PatientFacts(**fields)  # type: ignore[arg-type]


@pytest.fixture
def decision(criteria: CriteriaSet, mappings: Mappings) -> Decision:
    return decide(_facts(), criteria, mappings, EVALUATED_AT)


def _criterion(decision: Decision, trial_id: str, criterion_id: str) -> CriterionVerdict:
    trial = decision.trial(trial_id)
    assert trial is not None
    return next(c for c in trial.every_criterion() if c.id == criterion_id)


def test_a_lung_cancer_with_labs_gets_the_expected_statuses(decision: Decision) -> None:
    statuses = {t.trial_id: t.status for t in decision.trials}
    assert statuses == {IOV: "may_be_eligible", LUNG: "ruled_out", GASTRIC: "not_applicable"}
    assert [t.trial_id for t in decision.suggested] == [IOV]
    assert _criterion(decision, LUNG, "hemoglobin").state is State.MET
    assert _criterion(decision, LUNG, "absolute-neutrophil-count").state is State.NOT_MET
    assert _criterion(decision, LUNG, "absolute-lymphocyte-count").state is State.UNKNOWN
    assert _criterion(decision, IOV, "ecog").state is State.MET
    assert _criterion(decision, IOV, "nsclc-histology").state is State.UNKNOWN, "histology not coded"
    assert _criterion(decision, IOV, "organ-function").state is State.NEEDS_REVIEW
    gastric = decision.trial(GASTRIC)
    assert gastric is not None and gastric.criteria == () and "no active" in gastric.reason


def test_blocking_lists_the_criteria_that_are_not_met(decision: Decision) -> None:
    lung = decision.trial(LUNG)
    assert lung is not None
    assert lung.blocking == ("absolute-neutrophil-count",)
    assert lung.blocking == tuple(c.id for c in lung.criteria if c.state is State.NOT_MET)
    assert "Absolute neutrophil count" in lung.reason
    iov = decision.trial(IOV)
    assert iov is not None and iov.blocking == ()


def test_cohorts_carry_their_fit(decision: Decision) -> None:
    iov = decision.trial(IOV)
    assert iov is not None
    fits = {cohort.id: cohort.fit for cohort in iov.cohorts}
    # PD-L1 50%: not the < 1% cohort; the >= 1% cohort still needs its resection item reviewed;
    # retreatment needs prior lifileucel, which is not on record.
    assert fits == {
        "cohort-1": "does_not_fit",
        "cohort-2": "may_fit",
        "cohort-3": "may_fit",
        "retreatment": "does_not_fit",
    }
    assert [c.possible for c in iov.cohorts] == [False, True, True, False]


def test_a_cohort_fits_only_when_every_criterion_is_met(criteria: CriteriaSet, mappings: Mappings) -> None:
    """'fits' is reserved for a cohort whose every criterion is met."""
    iov = decide(_facts(), criteria, mappings, EVALUATED_AT).trial(IOV)
    assert iov is not None
    for cohort in iov.cohorts:
        states = {c.state for c in cohort.criteria}
        assert (cohort.fit == "fits") == (states <= {State.MET})
        assert (cohort.fit == "does_not_fit") == (State.NOT_MET in states)


def test_evidence_of_a_deciding_lab_carries_its_version_window_and_stale_date(decision: Decision) -> None:
    hemoglobin = _criterion(decision, LUNG, "hemoglobin")
    (evidence,) = hemoglobin.evidence
    taken = (EVALUATED_AT - timedelta(days=5)).date()
    assert evidence.value == 128
    assert evidence.unit == "g/L"
    assert evidence.date == taken.isoformat()
    assert evidence.source == "Observation/hb/_history/3"
    assert evidence.lookback_days == 30
    assert evidence.stale_on == taken + timedelta(days=30)
    neutrophils = _criterion(decision, LUNG, "absolute-neutrophil-count").evidence[0]
    assert neutrophils.stale_on == taken + timedelta(days=30), "a not-met result goes stale too"


def test_undecided_or_ever_results_get_no_stale_date(decision: Decision) -> None:
    iov = decision.trial(IOV)
    assert iov is not None
    for criterion in iov.every_criterion():
        for evidence in criterion.evidence:
            if criterion.state not in (State.MET, State.NOT_MET):
                assert evidence.stale_on is None, criterion.id


def test_a_washout_gives_the_first_day_it_can_be_met(criteria: CriteriaSet, mappings: Mappings) -> None:
    ended = EVALUATED_AT - timedelta(days=10)
    docetaxel = DrugExposure(
        codings=(),
        text="docetaxel 75 mg/m2",
        status="completed",
        start=ended - timedelta(days=60),
        end=ended,
        source=SourceRef("MedicationStatement", "doc", "1"),
    )
    decision = decide(_facts(drugs=[docetaxel]), criteria, mappings, EVALUATED_AT)
    washout = _criterion(decision, LUNG, "prior-therapy-washout")
    assert washout.state is State.NOT_YET
    assert washout.not_before == (ended + timedelta(days=28)).date()
    assert washout.evidence[0].source == "MedicationStatement/doc/_history/1"
    recent = _criterion(decision, LUNG, "recent-treatment")
    assert recent.not_before == (ended + timedelta(days=30)).date()
    assert _criterion(decision, LUNG, "hemoglobin").not_before is None, "only a NOT_YET has one"


def test_a_birth_month_gives_no_single_age_but_says_why(criteria: CriteriaSet, mappings: Mappings) -> None:
    """Born some day in November 1958: 67 or 68 on 23 November 2026."""
    facts = _facts(birth_date=date(1958, 11, 1), birth_date_latest=date(1958, 11, 30))
    decision = decide(facts, criteria, mappings, EVALUATED_AT)
    assert decision.patient.age_years is None
    assert decision.patient.age_note is not None and decision.patient.age_note.startswith("67–68")
    assert _criterion(decision, IOV, "age").state is State.MET, "18–70 holds for either age"
    whole = decide(_facts(), criteria, mappings, EVALUATED_AT)
    assert (whole.patient.age_years, whole.patient.age_note) == (58, None)
    assert (whole.patient.reference, whole.patient.sex) == ("Patient/p1", "male")


def test_the_decision_names_its_inputs_with_versions(decision: Decision) -> None:
    assert str(decision.inputs[0]) == "Patient/p1/_history/4"
    assert "Observation/hb/_history/3" in {str(i) for i in decision.inputs}
    assert decision.input_fingerprint.startswith("sha256:")
    assert decision.evaluated_at == EVALUATED_AT


def test_the_decision_round_trips_through_json(decision: Decision, criteria: CriteriaSet) -> None:
    stored = json.loads(json.dumps(decision_json(decision)))
    assert decision_json(decision) == stored
    assert decision_from_data(stored) == decision
    assert read_decision({"decision": stored}) == decision
    assert stored["schema_version"] == 2
    assert stored["criteria_fingerprint"] == criteria.fingerprint


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        (
            {"resource_type": "Observation", "id": 7, "version_id": None},
            "inputs[0].id: Expected `str`, got `int`",
        ),
        (
            {"resource_type": "Observation", "id": "7", "note": "x"},
            "inputs[0]: Object contains unknown field `note`",
        ),
        ({"resource_type": "Observation"}, "inputs[0]: Object missing required field `id`"),
    ],
)
def test_a_stored_input_reference_of_another_shape_is_refused_by_its_path(
    decision: Decision, reference: dict[str, object], problem: str
) -> None:
    stored = {**decision_json(decision), "inputs": [reference]}
    with pytest.raises(DecisionShapeError, match=re.escape(problem)):
        decision_from_data(stored)


def test_decide_refuses_a_naive_evaluation_time(criteria: CriteriaSet, mappings: Mappings) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(_facts(), criteria, mappings, EVALUATED_AT.replace(tzinfo=None))


def test_the_same_facts_at_the_same_time_give_the_same_decision(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    assert decide(_facts(), criteria, mappings, EVALUATED_AT) == decide(
        _facts(), criteria, mappings, EVALUATED_AT
    )


def test_a_procedure_fact_counts_in_a_washout_and_a_diagnosis_does_not(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """Radiotherapy is a ProcedureFact; the same concept recorded as a Condition is no treatment given."""
    ended = EVALUATED_AT - timedelta(days=10)
    radiotherapy = ProcedureFact(
        codings=(("http://snomed.info/sct", "108290001"),),
        text="radiotherapy",
        display="Radiotherapy",
        status="completed",
        start=ended - timedelta(days=20),
        end=ended,
        source=SourceRef("Procedure", "rt", "1"),
    )
    washout = _criterion(
        decide(_facts(procedures=[radiotherapy]), criteria, mappings, EVALUATED_AT),
        LUNG,
        "prior-therapy-washout",
    )
    assert washout.state is State.NOT_YET
    assert washout.not_before == (ended + timedelta(days=28)).date()
    assert washout.evidence[0].source == "Procedure/rt/_history/1"
    as_condition = Diagnosis(
        codings=radiotherapy.codings,
        text="radiotherapy",
        display="Radiotherapy",
        clinical_status="resolved",
        onset=radiotherapy.start,
        abatement=ended,
        recorded=None,
        source=SourceRef("Condition", "rt"),
    )
    facts = _facts(diagnoses=[LUNG_CANCER, as_condition])
    assert (
        _criterion(decide(facts, criteria, mappings, EVALUATED_AT), LUNG, "prior-therapy-washout").state
        is State.MET
    )


def test_an_immunization_fact_is_seen_by_the_live_vaccine_class(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    given = EVALUATED_AT - timedelta(days=10)
    mmr = ImmunizationFact(
        codings=(("http://hl7.org/fhir/sid/cvx", "03"),),
        text="MMR",
        status="completed",
        given=given,
        source=SourceRef("Immunization", "mmr", "2"),
    )
    vaccine = _criterion(
        decide(_facts(immunizations=[mmr]), criteria, mappings, EVALUATED_AT), IOV, "live-vaccine"
    )
    assert vaccine.state is State.NOT_YET
    assert vaccine.evidence[0].source == "Immunization/mmr/_history/2"
    as_drug = DrugExposure(
        mmr.codings, "MMR", "completed", given, given, SourceRef("MedicationStatement", "mmr")
    )
    assert _criterion(
        decide(_facts(drugs=[as_drug]), criteria, mappings, EVALUATED_AT), IOV, "live-vaccine"
    ).state is (State.NOT_YET), "a vaccine recorded as a medication counts too"


def test_patient_facts_are_frozen() -> None:
    facts = _facts()
    with pytest.raises(AttributeError):
        facts.sex = "female"  # type: ignore[misc]
    with pytest.raises(TypeError):
        facts.labs["hemoglobin"] = ()  # type: ignore[index]
    assert isinstance(facts.diagnoses, tuple)


def test_a_version_1_record_with_values_as_they_were_written_still_reads() -> None:
    """Version 1 records copied their values as written; their reader took these, and still does."""
    content = {
        "evaluated_at": "2024-05-14",
        "patient_ref": "Patient/p1",
        "verdicts": [
            {
                "trial_id": "NCT06538012",
                "suggested": True,
                "criteria": [
                    {
                        "id": "alt",
                        "state": "not_yet",
                        "until": "2024-06-01T10:00:00Z",
                        "evidence": [
                            {"description": "ALT", "value": 40.0, "upper_limit_of_normal": "40"},
                            {"description": "consented", "value": True},
                        ],
                    }
                ],
            }
        ],
    }

    decision = read_decision(content)

    assert decision.evaluated_at == datetime(2024, 5, 14)
    criterion = decision.trials[0].criteria[0]
    assert (criterion.state, criterion.until) == (State.NOT_YET, date(2024, 6, 1))
    assert [(e.value, e.upper_limit_of_normal) for e in criterion.evidence] == [(40.0, 40.0), (1.0, None)]
