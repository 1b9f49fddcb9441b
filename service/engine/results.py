"""What a rule evaluator returns; the engine folds these into the :class:`Decision`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

import msgspec

from service.engine.decision import Evidence, State

__all__ = ["Evidence", "RuleOutcome", "State", "window_text", "with_lookback"]

EVER_DAYS = 3650
"""A look-back this long means "on record": such results never go stale."""

# How old a result may be where neither the criterion nor its analyte or test says
# (``lookback_days`` in ``mappings/analytes.yaml`` normally does): written once, here.
DEFAULT_LOOKBACK_DAYS = 30
"""A lab result."""
DEFAULT_ASSESSMENT_LOOKBACK_DAYS = 90
"""A body weight for Cockcroft-Gault, an ECOG or Karnofsky performance status."""
DEFAULT_TEST_LOOKBACK_DAYS = 365
"""A qualitative test (serology, pregnancy, a driver mutation)."""
ALL_HISTORY_DAYS = 36_500
"""The whole record: the window of a drug criterion without ``within_days``."""


def window_text(days: int) -> str:
    """'in the last N days', or 'on record' for look-backs that mean 'ever' (10 years or more)."""
    return "on record" if days >= EVER_DAYS else f"in the last {days} days"


@dataclass(frozen=True)
class RuleOutcome:
    """One rule's state and why.

    ``not_applicable``: the rule does not concern this patient (a pregnancy test for a man), so
    it read none of its sources and their loss cannot make it unknown.
    """

    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    until: date | None = None
    flags: tuple[str, ...] = ()
    resolve_hint: str | None = None
    not_applicable: bool = False


def with_lookback(outcome: RuleOutcome, days: int) -> RuleOutcome:
    """The outcome with each dated result's look-back and the day it stops being usable.

    Only results that decided (met or not met) inside a real window get a stale date:
    the review page's timeline shows when the decision would change, never a date a
    century away for a result read "on record".
    """
    if days >= EVER_DAYS or outcome.state not in (State.MET, State.NOT_MET):
        return outcome
    evidence = []
    for item in outcome.evidence:
        try:
            taken = date.fromisoformat(item.date[:10]) if item.date else None
        except ValueError:
            taken = None
        stale_on = taken + timedelta(days=days) if taken is not None else None
        evidence.append(
            msgspec.structs.replace(item, lookback_days=days, stale_on=stale_on) if stale_on else item
        )
    return replace(outcome, evidence=tuple(evidence))
