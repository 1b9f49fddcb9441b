"""The criteria and mapping files: schema, references, error messages, completeness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.criteria import AllRule, AnyRule, CriteriaSet, criteria_json_schema, load_criteria
from service.errors import ConfigurationError
from service.mappings import Mappings
from tests.conftest import REPO


def test_schema_json_is_generated_from_the_models() -> None:
    on_disk = json.loads((REPO / "criteria" / "schema.json").read_text())
    assert on_disk == criteria_json_schema(), "run: til-cds criteria schema"


def test_the_three_trials_are_loaded(criteria: CriteriaSet) -> None:
    trials = {t.id: t for t in criteria.trials}
    assert set(trials) == {"NCT06538012", "NCT04614103", "essen-til-gastroesophageal"}
    assert trials["NCT06538012"].criteria_complete
    assert not trials["essen-til-gastroesophageal"].criteria_complete
    assert {a.id for a in trials["NCT04614103"].arms} == {"cohort-1", "cohort-2", "cohort-3", "retreatment"}


def test_every_seed_criterion_of_nct06538012_is_accounted_for(criteria: CriteriaSet) -> None:
    trial = next(t for t in criteria.trials if t.id == "NCT06538012")
    # 22 inclusion and 17 exclusion sentences on the seed page (FEV1/DLCO and
    # corticosteroid/autoimmune are each split in two).
    assert len(trial.inclusion) == 22
    assert len(trial.exclusion) == 19
    for criterion in trial.all_criteria():
        assert criterion.rule is not None or criterion.requires_clinician_review


def test_every_rule_kind_is_used_by_some_criterion(criteria: CriteriaSet) -> None:
    from typing import get_args

    from service.criteria import Rule

    used: set[str] = set()

    def walk(rule: object) -> None:
        used.add(rule.kind)
        if isinstance(rule, AllRule | AnyRule):
            for child in rule.rules:
                walk(child)

    for trial in criteria.trials:
        for criterion in trial.all_criteria():
            if criterion.rule is not None:
                walk(criterion.rule)
    kinds = {model.model_fields["kind"].annotation.__args__[0] for model in get_args(get_args(Rule)[0])}
    assert kinds == used


def _copy_tree(tmp_path: Path) -> tuple[Path, Path]:
    criteria_dir, mappings_dir = tmp_path / "criteria", tmp_path / "mappings"
    shutil.copytree(REPO / "criteria", criteria_dir)
    shutil.copytree(REPO / "mappings", mappings_dir)
    return criteria_dir, mappings_dir


def test_a_broken_threshold_names_file_and_path(tmp_path: Path, mappings: Mappings) -> None:
    criteria_dir, _ = _copy_tree(tmp_path)
    path = criteria_dir / "NCT06538012.yaml"
    path.write_text(
        path.read_text().replace("value: 1.5, unit: 10*9/L", 'value: "one and a half", unit: 10*9/L')
    )
    with pytest.raises(ConfigurationError) as caught:
        load_criteria(criteria_dir, mappings)
    assert "NCT06538012.yaml" in str(caught.value) and "inclusion" in str(caught.value)


def test_an_unknown_analyte_suggests_the_nearest(tmp_path: Path, mappings: Mappings) -> None:
    criteria_dir, _ = _copy_tree(tmp_path)
    path = criteria_dir / "NCT06538012.yaml"
    path.write_text(
        path.read_text().replace("analyte: absolute_neutrophil_count", "analyte: absolute_neutrophil_cnt")
    )
    with pytest.raises(ConfigurationError, match="did you mean 'absolute_neutrophil_count'"):
        load_criteria(criteria_dir, mappings)


def test_a_changed_threshold_changes_the_verdict_and_fingerprint(
    tmp_path: Path, mappings: Mappings, criteria: CriteriaSet
) -> None:
    from service.engine import decide
    from service.facts import build_facts
    from tests.conftest import EVALUATED_AT, LUNG_CANCER, observation, patient

    criteria_dir, _ = _copy_tree(tmp_path)
    path = criteria_dir / "NCT06538012.yaml"
    path.write_text(
        path.read_text().replace(
            "analyte: hemoglobin, comparison: ge, value: 90",
            "analyte: hemoglobin, comparison: ge, value: 100",
        )
    )
    changed = load_criteria(criteria_dir, mappings)
    assert changed.fingerprint != criteria.fingerprint
    facts = build_facts("p1", [patient(), LUNG_CANCER, observation("718-7", 9.5, "g/dL")], mappings)

    def hemoglobin_state(criteria_set: CriteriaSet) -> str:
        result = next(
            r
            for r in decide(facts, criteria_set, mappings, EVALUATED_AT).trials
            if r.trial_id == "NCT06538012"
        )
        return next(c.state.value for c in result.criteria if c.id == "hemoglobin")

    assert hemoglobin_state(criteria) == "met"
    assert hemoglobin_state(changed) == "not_met"


def test_an_option_that_would_be_ignored_is_refused(tmp_path: Path, mappings: Mappings) -> None:
    """max_plausible_weight_kg means nothing on a rule that derives no clearance: say so at start-up."""
    criteria_dir, _ = _copy_tree(tmp_path)
    path = criteria_dir / "NCT06538012.yaml"
    path.write_text(
        path.read_text().replace(
            "analyte: hemoglobin, comparison: ge, value: 90, unit: g/L,",
            "analyte: hemoglobin, comparison: ge, value: 90, unit: g/L, max_plausible_weight_kg: 200,",
        )
    )
    with pytest.raises(ConfigurationError, match="max_plausible_weight_kg"):
        load_criteria(criteria_dir, mappings)
