"""Issue 15: every criterion and arm has a clinician-facing label; a file without one is refused.

The label is what an oncologist reads in a card or a 400-px side panel, so it is short,
never an id, and never carries our internal tags.  The recruitment status names its
source and that source's date.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.api.main import create_app
from service.cli import app as cli
from service.criteria import LABEL_MAX_LENGTH, CriteriaSet, criteria_from_snapshot, load_criteria
from service.errors import ConfigurationError
from service.mappings import Mappings
from service.settings import Settings
from tests.api.conftest import started
from tests.deploy.test_reload import copy_clinical_data

TRIAL_FILE = "NCT06538012.yaml"
NEUTROPHIL_LABEL = "    label: Absolute neutrophil count\n"


def _replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the test needs exactly one {old!r} in {path.name}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_issue_15_every_criterion_and_arm_has_a_clinician_label(criteria: CriteriaSet) -> None:
    tag = re.compile(r"\(S\d+\)|_|  ")
    for trial in criteria.trials:
        for item in [*trial.arms, *trial.all_criteria()]:
            assert item.label and item.label == item.label.strip()
            assert len(item.label) <= LABEL_MAX_LENGTH
            assert item.label != item.id
            assert not re.fullmatch(r"[a-z0-9-]+", item.label), f"{trial.id}: {item.label!r} reads like an id"
            assert not tag.search(item.label), f"{trial.id} {item.id}: {item.label!r} has an internal tag"


def test_issue_15_cohort_labels_carry_the_pd_l1_band_the_trial_defines(criteria: CriteriaSet) -> None:
    trial = next(t for t in criteria.trials if t.id == "NCT04614103")
    labels = {arm.id: arm.label for arm in trial.arms}
    assert labels["cohort-1"] == "Cohort 1 (PD-L1 TPS < 1% or no historical TPS)"
    assert labels["cohort-2"] == "Cohort 2 (PD-L1 TPS ≥ 1%)"
    assert labels["cohort-3"].startswith("Cohort 3 (any PD-L1 TPS")


def test_issue_15_the_recruitment_status_names_its_source_and_date(criteria: CriteriaSet) -> None:
    trials = {t.id: t for t in criteria.trials}
    registry = trials["NCT04614103"]
    assert (registry.recruitment_status, registry.status_source) == ("Recruiting", "registry record")
    assert registry.status_source_date == date(2022, 10, 21)
    assert trials["NCT06538012"].status_source_date is None, "the CancerFax page gives no date"
    assert all(t.status_source for t in criteria.trials)


def test_issue_15_a_criterion_without_a_label_is_refused_naming_file_and_criterion(
    tmp_path: Path, mappings: Mappings
) -> None:
    criteria_dir, _ = copy_clinical_data(tmp_path)
    _replace_once(criteria_dir / TRIAL_FILE, NEUTROPHIL_LABEL, "")
    with pytest.raises(ConfigurationError) as caught:
        load_criteria(criteria_dir, mappings)
    message = str(caught.value)
    assert TRIAL_FILE in message
    assert "criterion 'absolute-neutrophil-count'" in message
    assert "label: Field required" in message


@pytest.mark.parametrize("blank", ['""', '"   "'])
def test_issue_15_a_blank_label_is_refused(tmp_path: Path, mappings: Mappings, blank: str) -> None:
    criteria_dir, _ = copy_clinical_data(tmp_path)
    _replace_once(criteria_dir / TRIAL_FILE, NEUTROPHIL_LABEL, f"    label: {blank}\n")
    with pytest.raises(ConfigurationError, match=r"criterion 'absolute-neutrophil-count': .*label"):
        load_criteria(criteria_dir, mappings)


def test_issue_15_an_arm_without_a_label_is_refused_naming_the_arm(
    tmp_path: Path, mappings: Mappings
) -> None:
    criteria_dir, _ = copy_clinical_data(tmp_path)
    _replace_once(criteria_dir / "NCT04614103.yaml", '    label: "Cohort 2 (PD-L1 TPS ≥ 1%)"\n', "")
    with pytest.raises(ConfigurationError) as caught:
        load_criteria(criteria_dir, mappings)
    assert "NCT04614103.yaml" in str(caught.value)
    assert "arm 'cohort-2': arms.1.label: Field required" in str(caught.value)


def test_issue_15_criteria_check_refuses_a_missing_label(tmp_path: Path) -> None:
    criteria_dir, mappings_dir = copy_clinical_data(tmp_path)
    _replace_once(criteria_dir / TRIAL_FILE, NEUTROPHIL_LABEL, "")
    outcome = CliRunner().invoke(
        cli, ["criteria", "check", "--criteria-dir", str(criteria_dir), "--mappings-dir", str(mappings_dir)]
    )
    assert outcome.exit_code == 1
    assert TRIAL_FILE in outcome.output
    assert "criterion 'absolute-neutrophil-count'" in outcome.output
    assert "fingerprint" not in outcome.output


async def test_issue_15_the_service_does_not_start_without_a_label(tmp_path: Path) -> None:
    criteria_dir, mappings_dir = copy_clinical_data(tmp_path)
    _replace_once(criteria_dir / TRIAL_FILE, NEUTROPHIL_LABEL, "")
    settings = Settings(
        dev=True,
        criteria_dir=criteria_dir,
        mappings_dir=mappings_dir,
        audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        public_base_url="http://testserver",
    )
    with pytest.raises(ConfigurationError) as caught:
        async for _client in started(create_app(settings)):
            pytest.fail("the service started with an unlabelled criterion")
    assert TRIAL_FILE in str(caught.value)
    assert "criterion 'absolute-neutrophil-count'" in str(caught.value)


def test_issue_15_a_version_recorded_before_labels_still_replays(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """Labels change no verdict: an audit record made before them must stay replayable."""

    def unlabelled(value: object) -> object:
        if isinstance(value, dict):
            return {k: unlabelled(v) for k, v in value.items() if k not in {"label", "status_source"}}
        if isinstance(value, list):
            return [unlabelled(v) for v in value]
        return value

    recorded = {key: unlabelled(value) for key, value in criteria.snapshot.items()}
    rebuilt = criteria_from_snapshot(recorded, mappings)
    trial = next(t for t in rebuilt.trials if t.id == "NCT04614103")
    assert trial.arms[0].label == "cohort-1"
    assert [c.rule for c in trial.all_criteria()] == [
        c.rule for c in next(t for t in criteria.trials if t.id == "NCT04614103").all_criteria()
    ]
