"""Re-run a recorded decision with its recorded criteria and inputs, and compare verdicts.

The engine is passed in rather than imported, so the audit package does not depend on it and
a test can replay with any evaluator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.engine.decision import Decision, DecisionShapeError, decision_from_data, decision_json

from ._records import stored_decision
from .errors import InvalidAuditRecordError, MissingCriteriaVersionError, UnknownDecisionError
from .store import AuditStore

__all__ = ["Evaluate", "ReplayDifference", "ReplayReport", "compare_decisions", "replay_decision"]

Evaluate = Callable[[dict[str, Any], list[dict[str, Any]], str, dict[str, str]], Decision]
"""(criteria snapshot, input resources, evaluated_at ISO text, sources that could not be
obtained then with the reason) → the decision today's engine reaches."""

_ABSENT = "absent"


@dataclass(frozen=True)
class ReplayDifference:
    """One place where today's engine disagrees with the recorded verdicts."""

    trial_id: str
    criterion_id: str | None
    aspect: str
    recorded: Any
    replayed: Any

    def describe(self) -> str:
        """A one-line, human-readable account of the difference."""
        where = self.trial_id if self.criterion_id is None else f"{self.trial_id}/{self.criterion_id}"
        return f"{where}: {self.aspect} was {self.recorded!r}, now {self.replayed!r}"


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of a replay; ``agrees`` when there are no differences."""

    decision_id: str
    criteria_fingerprint: str
    evaluated_at: str
    differences: list[ReplayDifference] = field(default_factory=list)
    not_compared: tuple[str, ...] = ()
    """What the recorded decision holds that a replay cannot decide again, said so rather
    than counted as agreement."""

    @property
    def agrees(self) -> bool:
        """True when every trial's suggestion and every criterion's state are unchanged."""
        return not self.differences


def compare_decisions(recorded: Decision, replayed: Decision) -> list[ReplayDifference]:
    """Per trial compare ``suggested``, per criterion compare ``state``; note missing ones."""
    differences: list[ReplayDifference] = []
    before = {t.trial_id: t for t in recorded.trials}
    after = {t.trial_id: t for t in replayed.trials}
    for trial_id in sorted(before.keys() | after.keys()):
        old, new = before.get(trial_id), after.get(trial_id)
        if old is None or new is None:
            differences.append(
                ReplayDifference(
                    trial_id,
                    None,
                    "trial",
                    "evaluated" if old else _ABSENT,
                    "evaluated" if new else _ABSENT,
                )
            )
            continue
        if old.suggested != new.suggested:
            differences.append(ReplayDifference(trial_id, None, "suggested", old.suggested, new.suggested))
        old_states = {c.id: c.state.value for c in old.every_criterion()}
        new_states = {c.id: c.state.value for c in new.every_criterion()}
        for criterion_id in sorted(old_states.keys() | new_states.keys()):
            old_state = old_states.get(criterion_id, _ABSENT)
            new_state = new_states.get(criterion_id, _ABSENT)
            if old_state != new_state:
                differences.append(ReplayDifference(trial_id, criterion_id, "state", old_state, new_state))
    return differences


def _checked(replayed: object) -> Decision:
    """An evaluator's answer read like a stored decision: a Decision is not validated as it is
    built, and an evaluator of our own or a plug-in may hand over a state as its text."""
    if not isinstance(replayed, Decision):
        raise InvalidAuditRecordError(f"the evaluator returned {type(replayed).__name__}, not a Decision")
    try:
        return decision_from_data(decision_json(replayed))
    except (DecisionShapeError, msgspec.EncodeError, TypeError) as exc:
        raise InvalidAuditRecordError(f"the evaluator's decision is not readable: {exc}") from exc


def replay_decision(store: AuditStore, decision_id: str, evaluate: Evaluate) -> ReplayReport:
    """Evaluate the recorded inputs again with the recorded criteria version and compare."""
    decision = store.get_decision(decision_id)
    if decision is None:
        raise UnknownDecisionError(f"no decision {decision_id!r} in the audit trail")
    content = decision["content"]
    fingerprint = stored_decision(content).criteria_fingerprint
    snapshot = store.get_criteria_version(fingerprint)
    if snapshot is None:
        raise MissingCriteriaVersionError(
            f"decision {decision_id} used criteria {fingerprint!r}, which was never saved"
        )
    recorded = stored_decision(content, snapshot)
    evaluated_at = recorded.evaluated_at.isoformat()
    replayed = _checked(
        evaluate(snapshot, store.input_resources(decision), evaluated_at, dict(recorded.unavailable or {}))
    )
    warning = recorded.order_warning
    return ReplayReport(
        decision_id=decision_id,
        criteria_fingerprint=fingerprint,
        evaluated_at=evaluated_at,
        differences=compare_decisions(recorded, replayed),
        not_compared=(
            (
                f"the order-select warning about {', '.join(warning.drugs)}: the draft orders it "
                "read are not part of the recorded inputs, so it was not decided again",
            )
            if warning is not None
            else ()
        ),
    )
