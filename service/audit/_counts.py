"""Monthly per-trial tallies of cards shown and the feedback they received."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._records import card_trial_ids, stored_decision, suggested_trial_ids

__all__ = ["monthly_trial_counts", "trial_outcome_matches"]

_NO_REASON = (None, None, None)


@dataclass
class _Tally:
    cards_shown: int = 0
    accepted: int = 0
    overridden: int = 0
    override_reasons: Counter[tuple[str | None, str | None, str | None]] = field(default_factory=Counter)


def trial_outcome_matches(record: Mapping[str, Any], trial_id: str, outcome: str) -> bool:
    """Whether a decision record suggested (or did not suggest) this particular trial."""
    suggested = trial_id in suggested_trial_ids(stored_decision(record["content"]))
    return suggested if outcome == "suggested" else not suggested


def _override_reason(feedback: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    reason = feedback.get("overrideReason")
    coding = reason.get("reason") if isinstance(reason, Mapping) else None
    if not isinstance(coding, Mapping):
        return _NO_REASON
    return (coding.get("system"), coding.get("code"), coding.get("display"))


def _or_no_trial(trial_ids: list[str]) -> list[str | None]:
    return list(trial_ids) if trial_ids else [None]


def monthly_trial_counts(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fold records into rows sorted by month then trial; cards tied to no trial count as None."""
    tallies: dict[tuple[str, str | None], _Tally] = {}

    def tally(month: str, trial_id: str | None) -> _Tally:
        return tallies.setdefault((month, trial_id), _Tally())

    for record in records:
        month = str(record["recorded_at"])[:7]
        content = record["content"]
        if record["kind"] == "decision":
            decision = stored_decision(content)
            for card in content.get("cards", []):
                for trial_id in _or_no_trial(card_trial_ids(card, decision)):
                    tally(month, trial_id).cards_shown += 1
            continue
        feedback = content.get("feedback", {})
        for trial_id in _or_no_trial(record["trial_ids"]):
            counted = tally(month, trial_id)
            if record["outcome"] == "accepted":
                counted.accepted += 1
            else:
                counted.overridden += 1
                counted.override_reasons[_override_reason(feedback)] += 1

    rows: list[dict[str, Any]] = []
    for (month, trial_id), counted in sorted(
        tallies.items(), key=lambda item: (item[0][0], item[0][1] or "")
    ):
        reasons = [
            {"system": system, "code": code, "display": display, "count": count}
            for (system, code, display), count in counted.override_reasons.most_common()
        ]
        rows.append(
            {
                "month": month,
                "trial_id": trial_id,
                "cards_shown": counted.cards_shown,
                "accepted": counted.accepted,
                "overridden": counted.overridden,
                "override_reasons": reasons,
            }
        )
    return rows
