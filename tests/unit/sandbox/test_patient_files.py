"""The synthetic patients of ``deploy/sandbox/patients/``: each file's expected cards and
verdicts are what the service decides, and a broken file is refused naming file and field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.api.main import build_runtime
from service.cdshooks import HookRequest
from service.engine import State
from service.errors import ConfigurationError
from service.mappings import Mappings
from service.pipeline import Runtime, run_hook
from service.sandbox.patient_files import PATIENTS_DIR, BlockUse, build_resources, load_blocks
from service.sandbox.synthetic import SyntheticPatient, find_patient, generate_patients, hook_request
from service.settings import Settings
from tests.conftest import EVALUATED_AT

PATIENTS = generate_patients(EVALUATED_AT.date())


@pytest.fixture(scope="module")
async def runtime() -> AsyncIterator[Runtime]:
    async with httpx.AsyncClient() as http:
        yield build_runtime(Settings(dev=True), http)


@pytest.mark.parametrize("patient", PATIENTS, ids=lambda p: p.id)
async def test_each_file_expects_what_the_service_decides(
    patient: SyntheticPatient, runtime: Runtime, mappings: Mappings
) -> None:
    """patient-view with full prefetch, through the hook's pipeline: the cards, and per trial
    its status and exactly the criteria that rule it out and that are not yet met."""
    body = hook_request(patient, mappings)
    outcome = await run_hook(HookRequest.model_validate(body), runtime, EVALUATED_AT, may_fetch=False)
    cards = {card.model_dump(mode="json")["source"]["topic"]["code"] for card in outcome.response.cards}
    assert cards == patient.expected_cards
    decided = {
        t.trial_id: (t.status, set(t.blocking), {c.id for c in t.in_state(State.NOT_YET)})
        for t in outcome.decision.trials
    }
    expected = {
        trial: (e.status, set(e.rules_out), set(e.not_yet)) for trial, e in patient.expected_trials.items()
    }
    assert decided == expected, {t.trial_id: t.reason for t in outcome.decision.trials}


def test_every_file_is_read_and_its_id_is_its_name() -> None:
    assert [p.id for p in PATIENTS] == [path.stem for path in sorted(PATIENTS_DIR.glob("*.yaml"))]
    assert len(PATIENTS) >= 48


def test_an_unknown_patient_names_the_known_ones() -> None:
    with pytest.raises(LookupError, match="unknown patient 'til-nobody'; one of: .*til-lung-eligible"):
        find_patient("til-nobody", EVALUATED_AT.date())
    with pytest.raises(LookupError, match="unknown patient '../criteria/NCT06538012'"):
        find_patient("../criteria/NCT06538012", EVALUATED_AT.date())


GOOD = """\
id: til-test
description: A test patient
age: 60
gender: female
expected:
  cards: []
  trials: {}
resources:
- {block: nsclc}
- observation: {loinc: 751-8, value: 0.9, unit: 10*3/uL, days_ago: 3}
"""


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (
            "value: 0.9, unit: 10*3/uL, days_ago: 3",
            "value: 0.9, unit: 10*3/uL",
            "resources.1.observation.days_ago: Field required",
        ),
        (
            "days_ago: 3}",
            "days_ago: three}",
            "resources.1.observation.days_ago: Input should be a valid number",
        ),
        (
            "loinc: 751-8,",
            "loinc: 751-8, colour: red,",
            "resources.1.observation.colour: Extra inputs are not permitted",
        ),
        ("- observation:", "- observaton:", "resources.1.observaton: Extra inputs are not permitted"),
        ("gender: female", "gender: f", "gender: Input should be 'male', 'female', 'other' or 'unknown'"),
        ("  cards: []\n", "", "expected.cards: Field required"),
        ("id: til-test", "id: til-other", "id: 'til-other' differs from the file name 'til-test'"),
        ("{block: nsclc}", "{block: nsclcc}", "block: unknown block 'nsclcc'; one of: eligible_nsclc"),
        (
            "{block: nsclc}",
            "{block: nsclc, change: {C34.9: {display: x}}}",
            "change: block 'nsclc' has no entry coded 'C34.9'",
        ),
        (
            "{block: nsclc}",
            "{block: nsclc, change: {C34.90: {onset_days_ago: soon}}}",
            "change of 'C34.90': condition.onset_days_ago: Input should be a valid number",
        ),
        (
            "value: 0.9, unit: 10*3/uL,",
            "value: 0.9,",
            "resources.1.observation: Value error, value and unit go together",
        ),
        ("age: 60", "age: [60", "cannot be read as YAML"),
        (
            "unit: 10*3/uL,",
            "unit: 10*3/uL, result: positive,",
            "observation: Value error, one value at most, found value, result",
        ),
    ],
)
def test_a_broken_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, old: str, new: str, named: str
) -> None:
    assert old in GOOD
    (tmp_path / "til-test.yaml").write_text(GOOD.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigurationError) as raised:
        generate_patients(EVALUATED_AT.date(), tmp_path)
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "til-test.yaml") + ": "), message
    assert named in message, message


def test_the_good_file_reads(tmp_path: Path) -> None:
    """Guards the test above: each broken file differs from a good one in that field only."""
    (tmp_path / "til-test.yaml").write_text(GOOD, encoding="utf-8")
    (patient,) = generate_patients(EVALUATED_AT.date(), tmp_path)
    assert [r["resourceType"] for r in patient.resources] == [
        "Patient",
        "Condition",
        "Condition",
        "Observation",
    ]
    assert patient.resources[3]["effectiveDateTime"] == "2026-11-20T09:00:00Z"
    assert patient.resources[0]["birthDate"] == "1966-10-14"


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no synthetic patient files"):
        generate_patients(EVALUATED_AT.date(), tmp_path)


def test_a_block_that_uses_itself_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "blocks.yaml"
    path.write_text("blocks:\n  a: [{block: b}]\n  b: [{block: a}]\n", encoding="utf-8")
    uses = [BlockUse(block="a")]
    with pytest.raises(ConfigurationError, match=r"til-test.yaml: block: 'a' uses itself \(a > b\)"):
        build_resources(
            "til-test",
            EVALUATED_AT.date(),
            uses,
            load_blocks(path),
            age=60,
            gender="male",
            where="til-test.yaml",
        )


def test_the_blocks_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "blocks.yaml"
    path.write_text("blocks:\n  labs:\n  - observation: {loinc: 751-8}\n", encoding="utf-8")
    with pytest.raises(
        ConfigurationError, match=r"blocks.yaml: block 'labs': entries.0.observation.days_ago"
    ):
        load_blocks(path)


def test_the_format_readme_example_is_the_real_file(tmp_path: Path) -> None:
    """``deploy/sandbox/README.md`` shows til-low-anc's file: it must read to the same patient."""
    readme = (PATIENTS_DIR.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n")[1].split("```")[0]
    (tmp_path / "til-low-anc.yaml").write_text(example, encoding="utf-8")
    (shown,) = generate_patients(EVALUATED_AT.date(), tmp_path)
    real = find_patient("til-low-anc", EVALUATED_AT.date())
    assert shown == real
