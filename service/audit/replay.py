"""Re-run a recorded decision with its recorded criteria and inputs, and compare verdicts.

The engine is passed in rather than imported, so the audit package does not depend on it and
a test can replay with any evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MissingCriteriaVersionError, UnknownDecisionError
from .store import AuditStore

__all__ = ["Evaluate", "ReplayDifference", "ReplayReport", "compare_verdicts", "replay_decision"]

Evaluate = Callable[[dict[str, Any], list[dict[str, Any]], str, dict[str, str]], list[dict[str, Any]]]
"""(criteria snapshot, input resources, evaluated_at ISO text, facts that could not be
obtained then with the reason) → verdict dicts."""

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

    @property
    def agrees(self) -> bool:
        """True when every trial's suggestion and every criterion's state are unchanged."""
        return not self.differences


def _by_key(items: Sequence[Mapping[str, Any]], key: str) -> dict[str, Mapping[str, Any]]:
    return {str(item.get(key)): item for item in items}


def compare_verdicts(
    recorded: Sequence[Mapping[str, Any]], replayed: Sequence[Mapping[str, Any]]
) -> list[ReplayDifference]:
    """Per trial compare ``suggested``, per criterion compare ``state``; note missing ones."""
    differences: list[ReplayDifference] = []
    before, after = _by_key(recorded, "trial_id"), _by_key(replayed, "trial_id")
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
        if old.get("suggested") != new.get("suggested"):
            differences.append(
                ReplayDifference(trial_id, None, "suggested", old.get("suggested"), new.get("suggested"))
            )
        old_criteria = _by_key(old.get("criteria", []), "id")
        new_criteria = _by_key(new.get("criteria", []), "id")
        for criterion_id in sorted(old_criteria.keys() | new_criteria.keys()):
            old_state = old_criteria.get(criterion_id, {}).get("state", _ABSENT)
            new_state = new_criteria.get(criterion_id, {}).get("state", _ABSENT)
            if old_state != new_state:
                differences.append(ReplayDifference(trial_id, criterion_id, "state", old_state, new_state))
    return differences


def replay_decision(store: AuditStore, decision_id: str, evaluate: Evaluate) -> ReplayReport:
    """Evaluate the recorded inputs again with the recorded criteria version and compare."""
    decision = store.get_decision(decision_id)
    if decision is None:
        raise UnknownDecisionError(f"no decision {decision_id!r} in the audit trail")
    content = decision["content"]
    fingerprint = str(content.get("criteria_fingerprint"))
    snapshot = store.get_criteria_version(fingerprint)
    if snapshot is None:
        raise MissingCriteriaVersionError(
            f"decision {decision_id} used criteria {fingerprint!r}, which was never saved"
        )
    evaluated_at = str(content.get("evaluated_at") or decision["recorded_at"])
    unavailable = content.get("unavailable_facts") or {}
    replayed = evaluate(
        snapshot,
        list(content.get("input_resources", [])),
        evaluated_at,
        {str(k): str(v) for k, v in unavailable.items()} if isinstance(unavailable, dict) else {},
    )
    return ReplayReport(
        decision_id=decision_id,
        criteria_fingerprint=fingerprint,
        evaluated_at=evaluated_at,
        differences=compare_verdicts(content.get("verdicts", []), replayed),
    )
