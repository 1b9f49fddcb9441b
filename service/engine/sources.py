"""Which data sources each kind of rule reads, so that one wrapper guards every rule.

A source is an analyte or test (its Observation search), the Procedures, the
Immunizations, the MedicationRequests or the MedicationAdministrations: what
``PatientFacts.unavailable`` can name (every optional source of ``service.facts.registry``).
A rule that answers *met* while a source it reads could not be obtained may be wrong
("no live vaccine recorded" when the Immunizations never arrived), so
:func:`guard_unread_sources` turns that *met* into *unknown*.  Each evaluator may say
it more precisely first; this is the guarantee that none forgets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from service.criteria import (
    AgeRule,
    AllRule,
    AnyRule,
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
)
from service.engine.results import RuleOutcome, State
from service.facts import ADMINISTRATIONS, IMMUNIZATIONS, MEDICATION_REQUESTS, PROCEDURES
from service.mappings import Mappings

__all__ = ["guard_unread_sources", "read_when_matching", "sources_read"]

_SOURCE_NAMES = {
    PROCEDURES: "the Procedures",
    IMMUNIZATIONS: "the Immunizations",
    MEDICATION_REQUESTS: "the MedicationRequests",
    ADMINISTRATIONS: "the MedicationAdministrations",
}


def _procedures(value_sets: Iterable[str], mappings: Mappings) -> list[str]:
    return [PROCEDURES] if any(mappings.value_sets[v].includes_procedures for v in value_sets) else []


def _medications(classes: Iterable[str], mappings: Mappings) -> list[str]:
    names = list(classes)
    if not names:
        return []
    immunizations = any(mappings.drug_classes[c].includes_immunizations for c in names)
    return [MEDICATION_REQUESTS, ADMINISTRATIONS, *([IMMUNIZATIONS] if immunizations else [])]


def read_when_matching(
    source: str, mappings: Mappings, *, value_sets: Iterable[str] = (), classes: Iterable[str] = ()
) -> bool:
    """Whether matching these value sets or drug classes reads ``source`` (the declaration the
    guard below relies on, for an evaluator that words the loss itself)."""
    return source in (*_procedures(value_sets, mappings), *_medications(classes, mappings))


def sources_read(rule: Any, mappings: Mappings) -> list[str]:
    """The sources a rule of any kind reads (for a combinator: what its children read)."""
    roles = mappings.roles
    match rule:
        case AgeRule():
            return []
        case LabRule():
            derived = mappings.derived.get(rule.analyte)
            conditional = [c.when_value_set for c in rule.conditional_limits]
            return [
                rule.analyte,
                *(
                    derived.inputs.values()
                    if derived is not None and derived.method == "cockcroft_gault"
                    else []
                ),
                *_procedures(conditional, mappings),
            ]
        case NoResultRule():
            return [rule.analyte]
        case NegativeTestRule():
            return [rule.test, *_procedures(rule.value_sets, mappings)]
        case NoConditionRule():
            return [
                *_procedures([*rule.value_sets, *rule.unless_value_sets], mappings),
                *_medications(rule.not_met_if_on_classes, mappings),
            ]
        case HistologyRule():
            return _procedures([*rule.required_value_sets, *rule.excluded_value_sets], mappings)
        case NoMedicationRule():
            return _medications([*rule.classes, *rule.unless_classes], mappings)
        case OnMedicationRule():
            return _medications(rule.classes, mappings)
        case WashoutRule():
            return [*_medications(rule.classes, mappings), *_procedures(rule.procedure_value_sets, mappings)]
        case SteroidDoseRule():
            return _medications([roles.drug_classes.corticosteroid_dose], mappings)
        case NoDriverAlterationRule():
            return [
                *rule.tests,
                *_procedures([*rule.positive_value_sets, *rule.negative_value_sets], mappings),
                *_medications(rule.implying_medication_classes, mappings),
            ]
        case PerformanceStatusRule():
            return [roles.analytes.ecog_performance_status, roles.analytes.karnofsky_performance_status]
        case StageRule():
            return ["staging", *_procedures(rule.met_if_value_sets, mappings)]
        case AllRule() | AnyRule():
            return list(dict.fromkeys(s for child in rule.rules for s in sources_read(child, mappings)))
    raise TypeError(f"no source declaration for rule kind {type(rule).__name__}")


def _source_name(source: str, mappings: Mappings) -> str:
    if source in _SOURCE_NAMES:
        return _SOURCE_NAMES[source]
    definition = mappings.observation_definitions.get(source)
    return definition.display if definition is not None else source


def guard_unread_sources(
    rule: Any, outcome: RuleOutcome, unavailable: Mapping[str, str], mappings: Mappings
) -> RuleOutcome:
    """``outcome``, unless it is *met* while a source the rule reads could not be obtained.

    Combinators are left alone: their children were guarded, and an ``any`` is rightly met
    by one child whose sources were all read.  So is a rule that does not apply to the
    patient: it read nothing.
    """
    if (
        outcome.state is not State.MET
        or outcome.not_applicable
        or not unavailable
        or isinstance(rule, (AllRule, AnyRule))
    ):
        return outcome
    missing = [s for s in sources_read(rule, mappings) if s in unavailable]
    if not missing:
        return outcome
    lost = "; ".join(f"{_source_name(s, mappings)} could not be read ({unavailable[s]})" for s in missing)
    return replace(
        outcome,
        state=State.UNKNOWN,
        reason=f"{outcome.reason}, but {lost}",
        resolve_hint=outcome.resolve_hint
        or "check the record by hand, or call again when the source is reachable",
    )
