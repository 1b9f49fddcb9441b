"""What the engine returns: criterion states with evidence, per arm and per trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

__all__ = ["ArmResult", "CriterionResult", "Evidence", "RuleOutcome", "State", "TrialResult", "window_text"]


def window_text(days: int) -> str:
    """'in the last N days', or 'on record' for look-backs that mean 'ever' (10 years or more)."""
    return "on record" if days >= 3650 else f"in the last {days} days"


class State(StrEnum):
    """A criterion's state.  Only NOT_MET blocks a suggestion."""

    MET = "met"
    NOT_MET = "not_met"
    UNKNOWN = "unknown"
    NOT_YET = "not_yet"
    NEEDS_REVIEW = "needs_review"


@dataclass(frozen=True)
class Evidence:
    """One datum a decision rests on, traceable to its FHIR resource."""

    description: str
    source: str | None = None
    value: float | str | None = None
    unit: str | None = None
    date: str | None = None
    upper_limit_of_normal: float | None = None
    upper_limit_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict(self)``, without its generic recursion."""
        return {
            "description": self.description,
            "source": self.source,
            "value": self.value,
            "unit": self.unit,
            "date": self.date,
            "upper_limit_of_normal": self.upper_limit_of_normal,
            "upper_limit_source": self.upper_limit_source,
        }


@dataclass(frozen=True)
class RuleOutcome:
    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    until: date | None = None
    flags: tuple[str, ...] = ()
    resolve_hint: str | None = None


@dataclass(frozen=True)
class CriterionResult:
    id: str
    type: str
    text: str
    source: str
    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    until: date | None = None
    flags: tuple[str, ...] = ()
    resolve_hint: str | None = None
    note: str | None = None
    arm: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives (tuples stay tuples), written out: it is on every call's path."""
        return {
            "id": self.id,
            "type": self.type,
            "text": self.text,
            "source": self.source,
            "state": self.state.value,
            "reason": self.reason,
            "evidence": tuple(e.to_dict() for e in self.evidence),
            "until": self.until.isoformat() if self.until else None,
            "flags": tuple(self.flags),
            "resolve_hint": self.resolve_hint,
            "note": self.note,
            "arm": self.arm,
        }


@dataclass(frozen=True)
class ArmResult:
    id: str
    title: str
    description: str
    possible: bool
    criteria: tuple[CriterionResult, ...]


@dataclass(frozen=True)
class TrialResult:
    """One trial's verdict for one patient at one evaluation time."""

    trial_id: str
    status: str  # may_be_eligible | ruled_out | not_applicable
    reason: str
    criteria: tuple[CriterionResult, ...] = ()
    arms: tuple[ArmResult, ...] = ()
    disease_evidence: tuple[Evidence, ...] = ()
    criteria_fingerprint: str = ""
    input_fingerprint: str = ""
    evaluated_at: str = ""
    data_problems: tuple[str, ...] = field(default_factory=tuple)

    @property
    def suggested(self) -> bool:
        return self.status == "may_be_eligible"

    def in_state(self, state: State) -> list[CriterionResult]:
        """Trial-level criteria in ``state``, then those of the arms still possible."""
        found = [c for c in self.criteria if c.state is state]
        for arm in self.arms:
            if arm.possible:
                found += [c for c in arm.criteria if c.state is state]
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "suggested": self.suggested,
            "status": self.status,
            "reason": self.reason,
            "criteria": [c.to_dict() for c in self.criteria],
            "arms": [
                {
                    "id": arm.id,
                    "title": arm.title,
                    "description": arm.description,
                    "possible": arm.possible,
                    "criteria": [c.to_dict() for c in arm.criteria],
                }
                for arm in self.arms
            ],
            "disease_evidence": [e.to_dict() for e in self.disease_evidence],
            "criteria_fingerprint": self.criteria_fingerprint,
            "input_fingerprint": self.input_fingerprint,
            "evaluated_at": self.evaluated_at,
            "data_problems": list(self.data_problems),
        }
