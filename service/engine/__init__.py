"""The eligibility engine: criteria x patient facts x evaluation time -> trial verdicts.

Pure and synchronous: no I/O and no clock, so the same inputs always give the same
verdicts (which is what makes audit replay possible).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime

from service.criteria import Arm, CriteriaSet, Criterion, Trial
from service.engine.context import EvaluationContext
from service.engine.results import (
    ArmResult,
    CriterionResult,
    Evidence,
    RuleOutcome,
    State,
    TrialResult,
)
from service.engine.rules import evaluate_rule
from service.facts import PatientFacts
from service.mappings import Mappings

__all__ = [
    "ArmResult",
    "CriterionResult",
    "Evidence",
    "State",
    "TrialResult",
    "evaluate_trial",
    "evaluate_trials",
    "input_fingerprint",
]


def input_fingerprint(facts: PatientFacts) -> str:
    """A hash of the ids and versions of every input resource, in a stable order."""
    refs = sorted(str(ref) for ref in facts.inputs)
    return "sha256:" + hashlib.sha256("\n".join(refs).encode()).hexdigest()


def _evaluate_criterion(
    criterion: Criterion, context: EvaluationContext, arm: str | None = None
) -> CriterionResult:
    if criterion.rule is None:
        outcome = RuleOutcome(State.NEEDS_REVIEW, criterion.requires_clinician_review or "needs review")
        if criterion.evidence_classes:
            outcome = _with_medication_history(outcome, criterion.evidence_classes, context)
    else:
        outcome = evaluate_rule(criterion.rule, context)
    return CriterionResult(
        id=criterion.id,
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
    )


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


def _evaluate_arm(arm: Arm, context: EvaluationContext) -> ArmResult:
    results = tuple(_evaluate_criterion(c, context, arm.id) for c in arm.criteria)
    return ArmResult(
        id=arm.id,
        title=arm.title,
        description=arm.description,
        possible=all(r.state is not State.NOT_MET for r in results),
        criteria=results,
    )


def evaluate_trial(
    trial: Trial, context: EvaluationContext, criteria_fingerprint: str, facts_fingerprint: str
) -> TrialResult:
    """One trial: the disease gate, then every criterion, then the arms."""
    base = TrialResult(
        trial_id=trial.id,
        status="not_applicable",
        reason=f"no active {trial.disease.display} on record",
        criteria_fingerprint=criteria_fingerprint,
        input_fingerprint=facts_fingerprint,
        evaluated_at=context.at.isoformat(),
        data_problems=tuple(context.facts.data_problems),
    )
    if context.facts.deceased:
        return replace(base, reason="the patient is recorded as deceased")
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
    arms = tuple(_evaluate_arm(arm, context) for arm in trial.arms)
    blocking = [c for c in criteria if c.state is State.NOT_MET]
    if blocking:
        status, reason = "ruled_out", "; ".join(f"{c.id}: {c.reason}" for c in blocking)
    elif arms and not any(arm.possible for arm in arms):
        unmet = [f"{a.title}: {c.reason}" for a in arms for c in a.criteria if c.state is State.NOT_MET]
        status, reason = "ruled_out", "no cohort fits: " + "; ".join(unmet)
    else:
        status = "may_be_eligible"
        reason = f"active {trial.disease.display} and no criterion is known to be unmet"
    return replace(
        base, status=status, reason=reason, criteria=criteria, arms=arms, disease_evidence=disease_evidence
    )


def _day(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment else None


def evaluate_trials(
    criteria: CriteriaSet, mappings: Mappings, facts: PatientFacts, evaluated_at: datetime
) -> list[TrialResult]:
    """Every trial for one patient at ``evaluated_at`` (timezone-aware; never the clock)."""
    if evaluated_at.tzinfo is None:
        raise ValueError("evaluated_at must be timezone-aware")
    context = EvaluationContext(facts=facts, mappings=mappings, at=evaluated_at)
    facts_fingerprint = input_fingerprint(facts)
    return [evaluate_trial(t, context, criteria.fingerprint, facts_fingerprint) for t in criteria.trials]
