"""One patient's resources -> one worklist row per trial, through the hook's own engine path.

This is the only module of the pre-screen that calls the engine or reads its result
type, so switching to another engine API changes this file alone.  The input is what
the hook gives the engine for a fully prefetched patient: its resources de-duplicated
by type and id (first seen wins), then ``build_facts`` and ``decide`` at one
evaluation time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.criteria import CriteriaSet
from service.engine import CriterionVerdict, State, TrialVerdict, decide
from service.facts import build_facts, unique_resources
from service.mappings import Mappings

__all__ = ["WORKLIST_COLUMNS", "evaluate_patient"]

WORKLIST_COLUMNS = (
    "patient",
    "trial",
    "suggested",
    "state",
    "cohorts",
    "not_before",
    "near_miss",
    "near_miss_detail",
    "unknowns",
    "needs_review",
    "reason",
)
"""The worklist's columns, in order; ``cohorts``, ``unknowns`` and ``needs_review`` are lists."""


def _unmet(result: TrialVerdict) -> list[CriterionVerdict]:
    """The criteria that keep the trial from being suggested."""
    blocking = [c for c in result.criteria if c.state is State.NOT_MET]
    if blocking or not result.cohorts:
        return blocking
    per_cohort = [[c for c in cohort.criteria if c.state is State.NOT_MET] for cohort in result.cohorts]
    return min(per_cohort, key=len)


def _near_miss(result: TrialVerdict) -> str | None:
    """Exactly one criterion not met, and it is a measurement against a limit: its reason, which
    states the value and the limit ("Platelet count 92 10*9/L on 2026-11-20; needs ≥ 100 10*9/L")."""
    if result.status != "ruled_out":
        return None
    unmet = _unmet(result)
    if len(unmet) != 1 or not any(isinstance(e.value, float | int) for e in unmet[0].evidence):
        return None
    criterion = unmet[0]
    cohort = next((c.title for c in result.cohorts if c.id == criterion.arm), None)
    return f"{criterion.label}{f' ({cohort})' if cohort else ''}: {criterion.reason}"


def _line(criterion: CriterionVerdict) -> str:
    hint = f" → {criterion.resolve_hint}" if criterion.resolve_hint else ""
    return f"{criterion.label}: {criterion.reason}{hint}"


def _row(patient_id: str, result: TrialVerdict) -> dict[str, Any]:
    considered = result.suggested
    near_miss = _near_miss(result)
    return {
        "patient": f"Patient/{patient_id}",
        "trial": result.trial_id,
        "suggested": result.suggested,
        "state": result.status,
        "cohorts": [cohort.title for cohort in result.cohorts if cohort.possible] if considered else [],
        "not_before": result.not_before() if considered else None,
        "near_miss": near_miss is not None,
        "near_miss_detail": near_miss,
        "unknowns": [_line(c) for c in result.in_state(State.UNKNOWN)] if considered else [],
        "needs_review": [c.id for c in result.in_state(State.NEEDS_REVIEW)] if considered else [],
        "reason": result.reason,
    }


def evaluate_patient(
    patient_id: str,
    resources: list[dict[str, Any]],
    criteria: CriteriaSet,
    mappings: Mappings,
    evaluated_at: datetime,
) -> list[dict[str, Any]]:
    """Worklist rows, one per trial, for one patient's resources (already in gathering order)."""
    facts = build_facts(patient_id, unique_resources(resources), mappings)
    return [_row(patient_id, r) for r in decide(facts, criteria, mappings, evaluated_at).trials]
