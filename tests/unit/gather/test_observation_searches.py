"""Issue 17: fetch mode's Observation searches, derived from the criteria's look-backs.

The date bound is safe only where no rule reads older or undated results; these tests pin
which groups the real criteria let us bound, that every code is asked for exactly once,
and that a rule reading results of any age lifts the bound of its group.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from pathlib import Path

from service.criteria import (
    AllRule,
    AnyRule,
    CriteriaSet,
    LabRule,
    NoResultRule,
    PerformanceStatusRule,
    Rule,
    load_criteria,
)
from service.engine import reach
from service.gather import observation_searches
from service.mappings import Mappings

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _codes(query: str) -> list[str]:
    code = next(part for part in query.split("&") if part.startswith("code="))
    return [c.removeprefix("http://loinc.org|") for c in code.removeprefix("code=").split(",")]


def test_every_rule_kind_is_classified_for_the_date_bound() -> None:
    (union, _) = typing.get_args(Rule)
    kinds = set(typing.get_args(union))
    known = {LabRule, NoResultRule, PerformanceStatusRule, AllRule, AnyRule}
    assert kinds == known | set(reach._READ_NO_OBSERVATION) | set(reach._READ_UNBOUNDED)


def test_the_real_criteria_bound_labs_and_leave_tests_and_stage_unbounded(
    mappings: Mappings, criteria: CriteriaSet
) -> None:
    plan = observation_searches(mappings, criteria, 200)
    lookbacks = {group.key: group.lookback_days for group in plan.groups}
    assert lookbacks == {
        "observations-blood-counts": 30,
        "observations-chemistry": 30,
        "observations-body-and-performance": 90,  # weight for Cockcroft-Gault, ECOG / Karnofsky
        "observations-cardiopulmonary": None,  # "no NYHA class on record" reads any age
        "observations-tumor-markers": None,  # stage group, genomics, historical PD-L1
        "observations-serology": None,  # negative tests count undated results
    }
    bounded, unbounded = plan.for_keys(plan.keys, "p1", AT)
    assert bounded.search.query.endswith("&date=ge2026-08-24&_sort=-date&_count=200")  # 90 days and 1 back
    assert "date=" not in unbounded.search.query and unbounded.search.query.endswith(
        "&_sort=-date&_count=200"
    )
    assert set(bounded.keys) == {k for k, days in lookbacks.items() if days is not None}
    asked = _codes(bounded.search.query) + _codes(unbounded.search.query)
    expected = [code for codes in mappings.observation_codes_by_group.values() for code in codes]
    assert sorted(asked) == sorted(set(expected)) and len(asked) == len(set(asked))


def test_only_the_missing_groups_are_searched(mappings: Mappings, criteria: CriteriaSet) -> None:
    plan = observation_searches(mappings, criteria, 50)
    (only,) = plan.for_keys(["observations-chemistry", "conditions"], "p1", AT)
    assert only.keys == ("observations-chemistry",)
    assert _codes(only.search.query) == mappings.observation_codes_by_group["chemistry"]
    assert "date=ge2026-10-23&" in only.search.query  # the group's own 30 days, not the longest
    assert plan.for_keys(["patient"], "p1", AT) == []


def test_a_no_result_rule_lifts_the_bound_of_its_group(mappings: Mappings, tmp_path: Path) -> None:
    source = Path("criteria/NCT06538012.yaml").read_text(encoding="utf-8")
    extra = (
        "inclusion:\n"
        "  - id: no-weight-on-record\n"
        "    label: No body weight on record\n"
        "    type: inclusion\n"
        "    text: test only\n"
        "    source: S0\n"
        "    rule: {kind: no_result, analyte: body_weight}\n"
    )
    (tmp_path / "NCT06538012.yaml").write_text(source.replace("inclusion:\n", extra, 1), encoding="utf-8")
    criteria = load_criteria(tmp_path, mappings)
    lookbacks = {g.key: g.lookback_days for g in observation_searches(mappings, criteria, 200).groups}
    assert lookbacks["observations-body-and-performance"] is None
    assert lookbacks["observations-chemistry"] == 30
