"""The eligibility engine: criteria x patient facts x evaluation time -> trial verdicts.

Pure and synchronous: no I/O and no clock, so the same inputs always give the same
verdicts (which is what makes audit replay possible).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from service.criteria import Arm, Criterion, CriteriaSet, Trial
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


def _evaluate_criterion(criterion: Criterion, context: EvaluationContext, arm: str | None = None) -> CriterionResult:
    if criterion.rule is None:
        outcome = RuleOutcome(State.NEEDS_REVIEW, criterion.requires_clinician_review or "needs review")
    else:
        outcome = evaluate_rule(criterion.rule, context)
    return CriterionResult(
        id=criterion.id, type=criterion.type, text=criterion.text, source=criterion.source,
        state=outcome.state, reason=outcome.reason, evidence=outcome.evidence, until=outcome.until,
        flags=outcome.flags, resolve_hint=outcome.resolve_hint, note=criterion.note, arm=arm,
    )


def _evaluate_arm(arm: Arm, context: EvaluationContext) -> ArmResult:
    results = tuple(_evaluate_criterion(c, context, arm.id) for c in arm.criteria)
    return ArmResult(
        id=arm.id, title=arm.title, description=arm.description,
        possible=all(r.state is not State.NOT_MET for r in results), criteria=results,
    )


def evaluate_trial(trial: Trial, context: EvaluationContext, criteria_fingerprint: str, facts_fingerprint: str) -> TrialResult:
    """One trial: the disease gate, then every criterion, then the arms."""
    common = {
        "trial_id": trial.id,
        "criteria_fingerprint": criteria_fingerprint,
        "input_fingerprint": facts_fingerprint,
        "evaluated_at": context.at.isoformat(),
        "data_problems": tuple(context.facts.data_problems),
    }
    cancers = [d for vs in trial.disease.value_sets for d in context.diagnoses_in(vs) if d.is_active]
    disease_evidence = tuple(
        Evidence(f"{d.display} ({d.clinical_status or 'status not recorded'})", str(d.source),
                 date=(d.onset or d.recorded).date().isoformat() if (d.onset or d.recorded) else None)
        for d in cancers
    )
    if not cancers:
        return TrialResult(status="not_applicable", reason=f"no active {trial.disease.display} on record", **common)  # type: ignore[arg-type]
    criteria = tuple(_evaluate_criterion(c, context) for c in [*trial.inclusion, *trial.exclusion])
    arms = tuple(_evaluate_arm(arm, context) for arm in trial.arms)
    blocking = [c for c in criteria if c.state is State.NOT_MET]
    if blocking:
        status, reason = "ruled_out", "; ".join(f"{c.id}: {c.reason}" for c in blocking)
    elif arms and not any(arm.possible for arm in arms):
        status, reason = "ruled_out", "no cohort fits: " + "; ".join(
            f"{arm.title}: {c.reason}" for arm in arms for c in arm.criteria if c.state is State.NOT_MET)
    else:
        status, reason = "may_be_eligible", f"active {trial.disease.display} and no criterion is known to be unmet"
    return TrialResult(status=status, reason=reason, criteria=criteria, arms=arms,  # type: ignore[arg-type]
                       disease_evidence=disease_evidence, **common)


def evaluate_trials(criteria: CriteriaSet, mappings: Mappings, facts: PatientFacts, evaluated_at: datetime) -> list[TrialResult]:
    """Every trial for one patient at ``evaluated_at`` (timezone-aware; never the clock)."""
    if evaluated_at.tzinfo is None:
        raise ValueError("evaluated_at must be timezone-aware")
    context = EvaluationContext(facts=facts, mappings=mappings, at=evaluated_at)
    facts_fingerprint = input_fingerprint(facts)
    return [evaluate_trial(t, context, criteria.fingerprint, facts_fingerprint) for t in criteria.trials]
