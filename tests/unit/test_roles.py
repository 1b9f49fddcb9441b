"""Issue 13: every name the code relies on is declared in ``mappings/roles.yaml`` and checked at load.

For each declared role the test renames the name it points at, where it is defined and
wherever the other mapping and criteria files use it, so that only the role itself
breaks; then loading the mappings, ``til-cds criteria check`` and the service's start-up
must each refuse, naming ``roles.yaml``, the missing name and what needs it.  The roles
come from the model, so a role added to ``Roles`` is covered without touching this test.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from service.api.main import create_app
from service.cli import app as cli
from service.criteria import load_criteria
from service.errors import ConfigurationError
from service.facts import build_facts
from service.mappings import Mappings, Roles, load_mappings
from service.settings import Settings
from tests.api.conftest import started
from tests.conftest import REPO, observation, patient

RENAMED_SUFFIX = "_renamed"


def _named_roles() -> list[tuple[str, str, str]]:
    """(block, role, what needs it) for every role that names a drug class or an analyte."""
    found = []
    for block, block_field in Roles.model_fields.items():
        model = block_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for role, role_field in model.model_fields.items():
            if role_field.annotation is str:
                found.append((block, role, str(role_field.description)))
    return found


NAMED_ROLES = _named_roles()


def test_every_named_role_is_covered() -> None:
    """The drug-class and analyte roles are all found; a new block of names would show up here."""
    blocks = {block for block, _, _ in NAMED_ROLES}
    assert blocks == {"drug_classes", "analytes"}
    declared = [
        (block, role)
        for block, roles in Roles.model_fields.items()
        if block != "genomics"
        and isinstance(roles.annotation, type)
        and issubclass(roles.annotation, BaseModel)
        for role in roles.annotation.model_fields
    ]
    assert [(block, role) for block, role, _ in NAMED_ROLES] == declared


def _copy_with_name_renamed(target: Path, block: str, role: str) -> tuple[Path, Path, str]:
    """Copies of criteria/ and mappings/ in which the role's name is renamed everywhere but
    ``roles.yaml``: its definition and every use, so that only the role is left dangling."""
    criteria_dir, mappings_dir = target / "criteria", target / "mappings"
    shutil.copytree(REPO / "criteria", criteria_dir)
    shutil.copytree(REPO / "mappings", mappings_dir)
    roles = load_mappings(REPO / "mappings").roles
    name = getattr(getattr(roles, block), role)
    word = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
    definition = {"drug_classes": "medications.yaml", "analytes": "analytes.yaml"}[block]
    for path in [*mappings_dir.glob("*.yaml"), *criteria_dir.glob("*.yaml")]:
        if path.name == "roles.yaml":
            continue
        text = path.read_text(encoding="utf-8")
        renamed, count = word.subn(name + RENAMED_SUFFIX, text)
        if path.name == definition:
            assert re.search(rf"(?m)^  {re.escape(name)}:", text), f"{name} is not a key of {definition}"
            assert count >= 1
        path.write_text(renamed, encoding="utf-8")
    return criteria_dir, mappings_dir, name


def _assert_names_the_role(message: str, block: str, role: str, name: str, needed_by: str) -> None:
    assert "roles.yaml" in message
    assert f"{block}.{role}: '{name}' is not defined" in message
    assert f"needed by {needed_by}" in message
    assert message.count("is not defined") == 1, f"only {block}.{role} should break: {message}"


@pytest.mark.parametrize(("block", "role", "needed_by"), NAMED_ROLES, ids=[r for _, r, _ in NAMED_ROLES])
def test_a_renamed_role_name_stops_loading_the_mappings(
    tmp_path: Path, block: str, role: str, needed_by: str
) -> None:
    criteria_dir, mappings_dir, name = _copy_with_name_renamed(tmp_path, block, role)
    with pytest.raises(ConfigurationError) as caught:
        load_mappings(mappings_dir)
    _assert_names_the_role(str(caught.value), block, role, name, needed_by)
    # The rename broke nothing but the role: following it in roles.yaml loads everything.
    roles_file = mappings_dir / "roles.yaml"
    fixed, count = re.subn(
        rf"(?m)^(  {role}: ){re.escape(name)}$", rf"\g<1>{name}{RENAMED_SUFFIX}", roles_file.read_text()
    )
    assert count == 1
    roles_file.write_text(fixed)
    mappings = load_mappings(mappings_dir)
    assert getattr(getattr(mappings.roles, block), role) == name + RENAMED_SUFFIX
    load_criteria(criteria_dir, mappings)


@pytest.mark.parametrize(("block", "role", "needed_by"), NAMED_ROLES, ids=[r for _, r, _ in NAMED_ROLES])
def test_criteria_check_refuses_a_renamed_role_name(
    tmp_path: Path, block: str, role: str, needed_by: str
) -> None:
    criteria_dir, mappings_dir, name = _copy_with_name_renamed(tmp_path, block, role)
    outcome = CliRunner().invoke(
        cli, ["criteria", "check", "--criteria-dir", str(criteria_dir), "--mappings-dir", str(mappings_dir)]
    )
    assert outcome.exit_code == 1
    _assert_names_the_role(outcome.output, block, role, name, needed_by)
    assert "fingerprint" not in outcome.output


@pytest.mark.parametrize(("block", "role", "needed_by"), NAMED_ROLES, ids=[r for _, r, _ in NAMED_ROLES])
async def test_the_service_does_not_start_with_a_renamed_role_name(
    tmp_path: Path, block: str, role: str, needed_by: str
) -> None:
    criteria_dir, mappings_dir, name = _copy_with_name_renamed(tmp_path, block, role)
    settings = Settings(
        dev=True,
        criteria_dir=criteria_dir,
        mappings_dir=mappings_dir,
        audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        public_base_url="http://testserver",
    )
    with pytest.raises(ConfigurationError) as caught:
        async for _client in started(create_app(settings)):
            pytest.fail(f"the service started with {block}.{role} pointing at a missing name")
    _assert_names_the_role(str(caught.value), block, role, name, needed_by)


def _variant_panel(gene: str) -> dict[str, object]:
    """An mCODE genetic variant assessment (69548-6) whose 48018-6 component names the gene."""
    variant = observation("69548-6", None, None, days_ago=100, id="variant")
    variant["valueCodeableConcept"] = {
        "coding": [{"system": "http://loinc.org", "code": "LA9633-4", "display": "Present"}]
    }
    variant["component"] = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "48018-6"}]},
            "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId", "code": gene}]},
        }
    ]
    return variant


def test_the_genomics_roles_decide_which_observations_are_read_as_variant_panels(
    tmp_path: Path, mappings: Mappings
) -> None:
    alk = "HGNC:427"
    resources = [patient(), _variant_panel(alk)]
    shipped = build_facts("p1", resources, mappings)
    assert [r.polarity for r in shipped.tests["alk_rearrangement"]] == ["positive"]
    assert "69548-6" in mappings.observation_codes_by_group["tumor-markers"]

    mappings_dir = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings_dir)
    roles_file = mappings_dir / "roles.yaml"
    roles_file.write_text(
        roles_file.read_text().replace('variant_panel_loinc: ["69548-6"]', 'variant_panel_loinc: ["99999-9"]')
    )
    moved = load_mappings(mappings_dir)
    assert "alk_rearrangement" not in build_facts("p1", resources, moved).tests
    assert "69548-6" not in moved.observation_codes_by_group["tumor-markers"], "nor is it fetched"
    assert "99999-9" in moved.observation_codes_by_group["tumor-markers"]

    roles_file.write_text(
        roles_file.read_text().replace('gene_studied_loinc: ["48018-6"]', 'gene_studied_loinc: ["99998-8"]')
    )
    roles_file.write_text(roles_file.read_text().replace('["99999-9"]', '["69548-6"]'))
    assert "alk_rearrangement" not in build_facts("p1", resources, load_mappings(mappings_dir)).tests


def test_an_empty_genomics_list_is_refused_naming_roles_yaml(tmp_path: Path) -> None:
    mappings_dir = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", mappings_dir)
    roles_file = mappings_dir / "roles.yaml"
    roles_file.write_text(
        roles_file.read_text().replace('gene_studied_loinc: ["48018-6"]', "gene_studied_loinc: []")
    )
    with pytest.raises(ConfigurationError, match=r"roles\.yaml: genomics\.gene_studied_loinc: "):
        load_mappings(mappings_dir)
