"""The eligibility engine: patient facts x criteria x evaluation time -> one :class:`Decision`.

Pure and synchronous: no I/O and no clock, so the same inputs always give the same
decision (which is what makes audit replay possible).  patient-view, order-select,
replay and the population pre-screen all call :func:`decide`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import msgspec

from service.criteria import Arm, CriteriaSet, Criterion, Trial
from service.engine.context import EvaluationContext
from service.engine.decision import (
    CohortFit,
    CohortVerdict,
    CriterionVerdict,
    Decision,
    Evidence,
    LabOrderCode,
    OrderWarning,
    PatientSummary,
    State,
    TrialStatus,
    TrialVerdict,
)
from service.engine.results import RuleOutcome
from service.engine.rules import evaluate_rule
from service.engine.sources import sources_read
from service.facts import PatientFacts, age_in_years
from service.mappings import Mappings

__all__ = [
    "CohortVerdict",
    "CriterionVerdict",
    "Decision",
    "Evidence",
    "State",
    "TrialVerdict",
    "cohort_fit",
    "decide",
    "evaluate_trial",
    "trial_status",
]


def _evaluate_criterion(
    criterion: Criterion, context: EvaluationContext, arm: str | None = None
) -> CriterionVerdict:
    if criterion.rule is None:
        outcome = RuleOutcome(State.NEEDS_REVIEW, criterion.requires_clinician_review or "needs review")
        if criterion.evidence_classes:
            outcome = _with_medication_history(outcome, criterion.evidence_classes, context)
    else:
        outcome = evaluate_rule(criterion.rule, context)
    orders: tuple[LabOrderCode, ...] = ()
    if outcome.state is State.UNKNOWN and criterion.rule is not None:
        orders = _orders(criterion.rule, context.mappings)
    return CriterionVerdict(
        id=criterion.id,
        label=criterion.label,
        type=criterion.type,
        text=criterion.text,
        source=criterion.source,
        state=outcome.state,
        reason=outcome.reason,
        evidence=outcome.evidence,
        until=outcome.until,
        flags=outcome.flags,
        resolve_hint=outcome.resolve_hint,
        note=criterion.note,
        arm=arm,
        orders=orders,
    )


def _orders(rule: Any, mappings: Mappings) -> tuple[LabOrderCode, ...]:
    """The orderable tests among what a rule reads (labs and serology with an ``order``)."""
    definitions = mappings.observation_definitions
    found = [definitions[s].order for s in sources_read(rule, mappings) if s in definitions]
    return tuple(dict.fromkeys(LabOrderCode(o.loinc, o.label) for o in found if o is not None))


def _with_medication_history(
    outcome: RuleOutcome, classes: list[str], context: EvaluationContext
) -> RuleOutcome:
    """A review item shows the therapies on record that the clinician needs to judge it."""
    drugs = list(dict.fromkeys(d for c in classes for d in context.drugs_in(c)))
    if not drugs:
        return replace(outcome, reason=f"{outcome.reason} (no such therapy on record)")
    evidence = tuple(
        Evidence(f"{d.text or 'medication'} ({d.status})", str(d.source), date=_day(d.end or d.start))
        for d in drugs
    )
    names = ", ".join(dict.fromkeys(d.text for d in drugs if d.text))
    return replace(outcome, reason=f"{outcome.reason} (on record: {names})", evidence=evidence)


def _evaluate_cohort(arm: Arm, context: EvaluationContext) -> CohortVerdict:
    results = tuple(_evaluate_criterion(c, context, arm.id) for c in arm.criteria)
    return CohortVerdict(
        id=arm.id,
        title=arm.label,
        description=arm.description,
        fit=cohort_fit(results),
        criteria=results,
    )


def cohort_fit(criteria: tuple[CriterionVerdict, ...]) -> CohortFit:
    """Does not fit when a criterion is not met; fits when every one is met; else may fit."""
    states = {c.state for c in criteria}
    if State.NOT_MET in states:
        return "does_not_fit"
    return "fits" if states <= {State.MET} else "may_fit"


def evaluate_trial(trial: Trial, context: EvaluationContext) -> TrialVerdict:
    """One trial: the disease gate, then every criterion, then the cohorts."""
    base = TrialVerdict(
        trial_id=trial.id,
        title=trial.title,
        short_title=trial.short_title,
        registry_url=trial.registry_url,
        status="not_applicable",
        reason=f"no active {trial.disease.display} on record",
        criteria_complete=trial.criteria_complete,
    )
    if context.facts.deceased:
        return msgspec.structs.replace(base, reason="the patient is recorded as deceased")
    cancers = [d for vs in trial.disease.value_sets for d in context.diagnoses_in(vs) if d.is_active]
    if not cancers:
        return base
    disease_evidence = tuple(
        Evidence(
            f"{d.display} ({d.clinical_status or 'status not recorded'})",
            str(d.source),
            date=_day(d.onset or d.recorded),
        )
        for d in cancers
    )
    criteria = tuple(_evaluate_criterion(c, context) for c in [*trial.inclusion, *trial.exclusion])
    cohorts = tuple(_evaluate_cohort(arm, context) for arm in trial.arms)
    status, reason, blocking = trial_status(criteria, cohorts, trial.disease.display)
    return msgspec.structs.replace(
        base,
        status=status,
        reason=reason,
        criteria=criteria,
        cohorts=cohorts,
        disease_evidence=disease_evidence,
        blocking=blocking,
    )


def trial_status(
    criteria: tuple[CriterionVerdict, ...], cohorts: tuple[CohortVerdict, ...], disease: str
) -> tuple[TrialStatus, str, tuple[str, ...]]:
    """The headline for a trial whose disease is on record: (status, reason, blocking ids).

    Ruled out when a trial-level criterion is not met, or when no cohort fits; the
    blocking ids are exactly the criteria that make it so.
    """
    unmet = [c for c in criteria if c.state is State.NOT_MET]
    if unmet:
        return "ruled_out", "; ".join(f"{c.label}: {c.reason}" for c in unmet), tuple(c.id for c in unmet)
    if cohorts and not any(cohort.possible for cohort in cohorts):
        unmet = [c for cohort in cohorts for c in cohort.criteria if c.state is State.NOT_MET]
        reasons = [
            f"{cohort.title}: {c.reason}"
            for cohort in cohorts
            for c in cohort.criteria
            if c.state is State.NOT_MET
        ]
        return "ruled_out", "no cohort fits: " + "; ".join(reasons), tuple(c.id for c in unmet)
    return "may_be_eligible", f"active {disease} and no trial criterion is known to be unmet", ()


def _day(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment else None


def _patient(facts: PatientFacts, at: datetime) -> PatientSummary:
    age: int | None = None
    note: str | None = None
    if facts.birth_date is not None:
        oldest = age_in_years(facts.birth_date, at)
        youngest = age_in_years(facts.birth_date_latest or facts.birth_date, at)
        if oldest == youngest:
            age = oldest
        else:
            note = f"{youngest}–{oldest}: the birth date is recorded without its day"
    return PatientSummary(
        reference=f"Patient/{facts.patient_id}",
        sex=facts.sex,
        age_years=age,
        age_note=note,
        deceased=facts.deceased,
    )


def _order_warning(trials: tuple[TrialVerdict, ...], context: EvaluationContext) -> OrderWarning | None:
    """Drafted systemic anticancer drugs not already taken, when a trial may still fit.

    Starting one restarts the trials' washouts, so the order composer is the moment to
    mention the trial; a drug the patient already takes changes nothing.  "Already takes"
    is the rules' own test (:meth:`EvaluationContext.is_current`): an order that ended or went
    stale is not current, so drafting that drug again does restart the washout.
    """
    suggested = tuple(t.trial_id for t in trials if t.suggested)
    if not context.facts.draft_orders or not suggested:
        return None
    class_name = context.mappings.roles.drug_classes.current_anticancer_therapy
    current = set()
    for drug in context.drugs_in(class_name):
        match = context.mappings.match_drug(class_name, list(drug.codings), drug.text)
        if match is not None and context.is_current(drug):
            current.add(match.member)
    new: list[str] = []
    for draft in context.facts.draft_orders:
        match = context.mappings.match_drug(class_name, list(draft.codings), draft.text)
        if match is not None and match.member not in current:
            name = match.member.replace("_", " ")
            if name not in new:
                new.append(name)
    return OrderWarning(drugs=tuple(new), trial_ids=suggested) if new else None


def decide(facts: PatientFacts, criteria: CriteriaSet, mappings: Mappings, at: datetime) -> Decision:
    """Every trial for one patient at ``at`` (timezone-aware; never the clock)."""
    if at.tzinfo is None:
        raise ValueError("the evaluation time must be timezone-aware")
    context = EvaluationContext(facts=facts, mappings=mappings, at=at)
    trials = tuple(evaluate_trial(t, context) for t in criteria.trials)
    return Decision(
        evaluated_at=at,
        criteria_fingerprint=criteria.fingerprint,
        input_fingerprint=facts.input_fingerprint,
        patient=_patient(facts, at),
        trials=trials,
        data_problems=tuple(facts.data_problems),
        unavailable=dict(facts.unavailable),
        inputs=facts.inputs,
        order_warning=_order_warning(trials, context),
    )
