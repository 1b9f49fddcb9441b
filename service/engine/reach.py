"""How far back the criteria read each Observation-borne fact: what a date-bounded search may leave out.

Fetch mode asks the FHIR server for Observations "dated on or after" a bound, so that a
long lab history is not read only to be ignored.  That is safe only for results no rule
can use: this module says, per analyte, qualitative test and the stage group, the oldest
result (in days before the evaluation time) any criterion reads, or ``None`` when results
of any age, or undated ones, can decide (``no_result``: "no TPS on record"; a negative
test, which counts undated results; the newest stage group whatever its age).  It reads
the same look-back rules the evaluators use, so the two cannot drift.
"""

from __future__ import annotations

from service.criteria import (
    AgeRule,
    AllRule,
    AnyRule,
    CriteriaSet,
    HistologyRule,
    LabRule,
    NegativeTestRule,
    NoConditionRule,
    NoDriverAlterationRule,
    NoMedicationRule,
    NoResultRule,
    OnMedicationRule,
    PerformanceStatusRule,
    StageRule,
    SteroidDoseRule,
    WashoutRule,
    walk_rules,
)
from service.engine.labs import rule_lookback_days, weight_lookback_days
from service.engine.results import DEFAULT_LOOKBACK_DAYS, EVER_DAYS
from service.engine.rules import performance_status_window_days
from service.mappings import Analyte, Mappings

__all__ = ["observation_lookbacks"]

_READ_NO_OBSERVATION = (
    AllRule,  # a combinator reads what its children read, and they are walked too
    AnyRule,
    AgeRule,
    HistologyRule,
    NoConditionRule,
    NoMedicationRule,
    OnMedicationRule,
    SteroidDoseRule,
    WashoutRule,
)
"""Rule kinds that read Conditions, medications, Procedures or the Patient only."""
_READ_UNBOUNDED = (NegativeTestRule, NoDriverAlterationRule, StageRule)
"""Rule kinds that read qualitative tests or stage groups, which are never date-bounded."""


def observation_lookbacks(criteria: CriteriaSet, mappings: Mappings) -> dict[str, int | None]:
    """Per Observation definition (``mappings.observation_definitions``): days back a rule reads, or None for any age.

    Numeric analytes start at their own look-back (what the Decision reports as their look-back);
    qualitative tests and the stage group are always read whatever their age.  A rule
    kind this function does not know makes every definition unbounded: a new evaluator
    then costs a slower search, never a wrong verdict.
    """
    reach: dict[str, int | None] = {
        name: (definition.lookback_days or DEFAULT_LOOKBACK_DAYS) if isinstance(definition, Analyte) else None
        for name, definition in mappings.observation_definitions.items()
    }

    def widen(name: str, days: int | None) -> None:
        current = reach.get(name)
        reach[name] = None if days is None or current is None else max(current, days)

    roles = mappings.roles.analytes
    rules = [leaf for trial in criteria.trials for c in trial.all_criteria() for leaf in walk_rules(c.rule)]
    for rule in rules:
        if isinstance(rule, LabRule):
            days = rule_lookback_days(rule, mappings)
            widen(rule.analyte, days)
            derivation = mappings.derived.get(rule.analyte)
            if derivation is not None:
                # What the value is derived from is read over the same window (the weight
                # for Cockcroft-Gault over its own).
                for role, name in derivation.inputs.items():
                    widen(name, weight_lookback_days(mappings, derivation) if role == "weight" else days)
        elif isinstance(rule, NoResultRule):
            widen(rule.analyte, None)
        elif isinstance(rule, PerformanceStatusRule):
            window = performance_status_window_days(mappings)
            widen(roles.ecog_performance_status, window)
            widen(roles.karnofsky_performance_status, window)
        elif not isinstance(rule, (*_READ_NO_OBSERVATION, *_READ_UNBOUNDED)):
            return dict.fromkeys(reach, None)
    return {name: None if days is None or days >= EVER_DAYS else days for name, days in reach.items()}
