"""Every computable lab criterion of every trial, at and around its limit, generated from the data.

The cases come from the criteria files themselves, so a threshold a clinical
informaticist changes in YAML is tested at its new value without touching Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from service.criteria import AllRule, AnyRule, CriteriaSet, LabRule, load_criteria
from service.engine.context import EvaluationContext
from service.engine.labs import evaluate_lab
from service.engine.results import State
from service.facts import build_facts
from service.mappings import Mappings, load_mappings
from tests.conftest import EVALUATED_AT, REPO, observation, patient

_MAPPINGS = load_mappings(REPO / "mappings")
_CRITERIA = load_criteria(REPO / "criteria", _MAPPINGS)


def _lab_rules(rule: Any) -> list[LabRule]:
    if isinstance(rule, LabRule):
        return [rule]
    if isinstance(rule, AllRule | AnyRule):
        return [r for child in rule.rules for r in _lab_rules(child)]
    return []


@dataclass(frozen=True)
class LabCase:
    trial: str
    criterion: str
    rule: LabRule

    def __str__(self) -> str:
        return f"{self.trial}:{self.criterion}:{self.rule.analyte}"


CASES = [
    LabCase(trial.id, criterion.id, rule)
    for trial in _CRITERIA.trials
    for criterion in trial.all_criteria()
    for rule in _lab_rules(criterion.rule)
]


def _evaluate(
    rule: LabRule, resources: list[dict[str, Any]], mappings: Mappings, at: datetime = EVALUATED_AT
) -> Any:
    facts = build_facts("p1", [patient(), *resources], mappings)
    return evaluate_lab(rule, EvaluationContext(facts=facts, mappings=mappings, at=at))


def _primary_code(rule: LabRule, mappings: Mappings) -> str:
    return mappings.analytes[rule.analyte].loinc[0]


def _canonical_unit(rule: LabRule, mappings: Mappings) -> str:
    return rule.unit or mappings.analytes[rule.analyte].unit


def _expected(comparison: str, offset: int) -> State:
    """offset -1 just below, 0 at, +1 just above the limit."""
    holds = {"ge": offset >= 0, "gt": offset > 0, "le": offset <= 0, "lt": offset < 0}[comparison]
    return State.MET if holds else State.NOT_MET


def test_every_trial_has_lab_cases() -> None:
    assert {c.trial for c in CASES} >= {"NCT06538012", "NCT04614103"}
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", [c for c in CASES if c.rule.value is not None], ids=str)
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_fixed_limit_boundaries(case: LabCase, offset: int, mappings: Mappings) -> None:
    rule = case.rule
    assert rule.value is not None
    step = max(abs(rule.value) * 0.01, 0.01)
    value = rule.value + offset * step
    outcome = _evaluate(rule, [observation(_primary_code(rule, mappings), value, rule.unit)], mappings)
    assert outcome.state is _expected(rule.comparison, offset), outcome.reason
    assert outcome.evidence and outcome.evidence[0].source == "Observation/obs-1"
    assert outcome.evidence[0].value == value and outcome.evidence[0].unit == rule.unit


@pytest.mark.parametrize("case", [c for c in CASES if c.rule.times_uln is not None], ids=str)
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_uln_boundaries_use_the_results_reference_range(
    case: LabCase, offset: int, mappings: Mappings
) -> None:
    rule = case.rule
    assert rule.times_uln is not None
    unit = _canonical_unit(rule, mappings)
    uln = 40.0
    value = rule.times_uln * uln + offset * 0.5
    outcome = _evaluate(
        rule, [observation(_primary_code(rule, mappings), value, unit, ref_high=uln)], mappings
    )
    assert outcome.state is _expected(rule.comparison, offset), outcome.reason
    assert outcome.evidence[0].upper_limit_of_normal == pytest.approx(uln)
    assert "reference range" in (outcome.evidence[0].upper_limit_source or "")


@pytest.mark.parametrize("case", [c for c in CASES if c.rule.times_uln is not None], ids=str)
def test_missing_reference_range_uses_the_documented_default_and_says_so(
    case: LabCase, mappings: Mappings
) -> None:
    rule = case.rule
    definition = mappings.analytes[rule.analyte]
    assert definition.default_uln is not None, "every ULN-relative analyte needs a documented default"
    unit = definition.default_uln.unit
    outcome = _evaluate(
        rule, [observation(_primary_code(rule, mappings), definition.default_uln.value, unit)], mappings
    )
    assert outcome.state is State.MET
    assert outcome.evidence[0].upper_limit_source and outcome.evidence[0].upper_limit_source.startswith(
        "default ULN"
    )
    assert any("provisional" in flag for flag in outcome.flags)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_missing_value_is_unknown_never_met(case: LabCase, mappings: Mappings) -> None:
    outcome = _evaluate(case.rule, [], mappings)
    assert outcome.state is State.UNKNOWN
    assert outcome.resolve_hint


@pytest.mark.parametrize("case", CASES, ids=str)
def test_stale_value_is_unknown(case: LabCase, mappings: Mappings) -> None:
    rule = case.rule
    lookback = rule.lookback_days or mappings.analytes[rule.analyte].lookback_days or 30
    unit = _canonical_unit(rule, mappings)
    value = rule.value if rule.value is not None else 1.0
    outcome = _evaluate(
        rule,
        [observation(_primary_code(rule, mappings), value, unit, days_ago=lookback + 1, ref_high=100)],
        mappings,
    )
    assert outcome.state is State.UNKNOWN
    assert "look-back" in outcome.reason


@pytest.mark.parametrize("case", [c for c in CASES if c.rule.protocol_window_days], ids=str)
def test_result_older_than_the_protocol_window_counts_but_is_flagged(
    case: LabCase, mappings: Mappings
) -> None:
    rule = case.rule
    assert rule.protocol_window_days is not None
    unit = _canonical_unit(rule, mappings)
    value = rule.value if rule.value is not None else 1.0
    outcome = _evaluate(
        rule,
        [
            observation(
                _primary_code(rule, mappings),
                value,
                unit,
                days_ago=rule.protocol_window_days + 2,
                ref_high=100,
            )
        ],
        mappings,
    )
    assert outcome.state in (State.MET, State.NOT_MET)
    assert any("repeat before enrolment" in flag for flag in outcome.flags)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unconvertible_unit_is_unknown_with_the_reason(case: LabCase, mappings: Mappings) -> None:
    rule = case.rule
    outcome = _evaluate(
        rule, [observation(_primary_code(rule, mappings), 1.0, "kg/m2", ref_high=None)], mappings
    )
    assert outcome.state is State.UNKNOWN
    assert "convert" in outcome.reason or "kg/m2" in outcome.reason


OTHER_UNITS = [
    # (analyte, value, unit, rule limit, rule unit, comparison, expected)
    ("absolute_neutrophil_count", 1500, "/uL", 1.5, "10*9/L", "ge", State.MET),
    ("absolute_neutrophil_count", 1499, "/uL", 1.5, "10*9/L", "ge", State.NOT_MET),
    ("platelet_count", 100, "10*3/uL", 100, "10*9/L", "ge", State.MET),
    ("platelet_count", 99000, "/mm3", 100, "10*9/L", "ge", State.NOT_MET),
    ("hemoglobin", 9.0, "g/dL", 90, "g/L", "ge", State.MET),
    ("hemoglobin", 5.5, "mmol/L", 90, "g/L", "ge", State.NOT_MET),
    ("hemoglobin", 5.6, "mmol/L", 90, "g/L", "ge", State.MET),
    ("serum_creatinine", 132.6, "umol/L", 1.5, "mg/dL", "le", State.MET),
    ("serum_creatinine", 133.5, "umol/L", 1.5, "mg/dL", "le", State.NOT_MET),
    ("forced_expiratory_volume_1s", 1999, "mL", 2, "L", "ge", State.NOT_MET),
    ("absolute_neutrophil_count", 1.6, "K/uL", 1.5, "10*9/L", "ge", State.MET),
]


@pytest.mark.parametrize(
    ("analyte", "value", "unit", "limit", "limit_unit", "comparison", "expected"), OTHER_UNITS
)
def test_values_in_other_units_are_converted_with_ucum(
    analyte: str,
    value: float,
    unit: str,
    limit: float,
    limit_unit: str,
    comparison: str,
    expected: State,
    mappings: Mappings,
) -> None:
    rule = LabRule(kind="lab", analyte=analyte, comparison=comparison, value=limit, unit=limit_unit)  # type: ignore[arg-type]
    outcome = _evaluate(rule, [observation(mappings.analytes[analyte].loinc[0], value, unit)], mappings)
    assert outcome.state is expected, outcome.reason


def test_bilirubin_reference_range_in_another_unit_is_converted(mappings: Mappings) -> None:
    rule = LabRule(kind="lab", analyte="total_bilirubin", comparison="le", times_uln=1.5)
    # value 1.7 mg/dL, lab ULN 20.5 umol/L = 1.2 mg/dL -> limit 1.8 mg/dL
    outcome = _evaluate(
        rule, [observation("1975-2", 1.7, "mg/dL", ref_high=20.5, ref_unit="umol/L")], mappings
    )
    assert outcome.state is State.MET, outcome.reason
    assert outcome.evidence[0].upper_limit_of_normal == pytest.approx(1.199, abs=0.01)


def test_liver_metastasis_switches_to_the_conditional_limit(mappings: Mappings) -> None:
    rule = LabRule(
        kind="lab",
        analyte="alanine_aminotransferase",
        comparison="le",
        times_uln=3,
        conditional_limits=[{"when_value_set": "liver_metastasis", "times_uln": 5}],
    )  # type: ignore[list-item]
    from tests.conftest import condition

    alt = observation("1742-6", 180, "U/L", ref_high=40)
    assert _evaluate(rule, [alt], mappings).state is State.NOT_MET
    with_metastasis = _evaluate(
        rule, [alt, condition("http://snomed.info/sct", "94381002", "Liver metastasis")], mappings
    )
    assert with_metastasis.state is State.MET
    assert "Liver metastasis" in with_metastasis.reason


def test_the_newest_result_decides_not_the_best(mappings: Mappings) -> None:
    rule = LabRule(kind="lab", analyte="absolute_neutrophil_count", comparison="ge", value=1.5, unit="10*9/L")
    older_good = observation("751-8", 3.0, "10*9/L", days_ago=10, id="old")
    newer_bad = observation("751-8", 1.0, "10*9/L", days_ago=2, id="new")
    outcome = _evaluate(rule, [older_good, newer_bad], mappings)
    assert outcome.state is State.NOT_MET
    assert outcome.evidence[0].source == "Observation/new"


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_withdrawn_results_are_ignored(status: str, mappings: Mappings) -> None:
    rule = LabRule(kind="lab", analyte="absolute_neutrophil_count", comparison="ge", value=1.5, unit="10*9/L")
    outcome = _evaluate(rule, [observation("751-8", 0.5, "10*9/L", status=status)], mappings)
    assert outcome.state is State.UNKNOWN


def test_future_dated_results_are_ignored(mappings: Mappings) -> None:
    rule = LabRule(kind="lab", analyte="absolute_neutrophil_count", comparison="ge", value=1.5, unit="10*9/L")
    outcome = _evaluate(rule, [observation("751-8", 3.0, "10*9/L", days_ago=-5)], mappings)
    assert outcome.state is State.UNKNOWN


def test_criteria_set_fixture_matches_module_level_load(criteria: CriteriaSet) -> None:
    assert criteria.fingerprint == _CRITERIA.fingerprint
