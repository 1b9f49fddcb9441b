"""Issue 13: the facts registry is the one place a FHIR source or resource type is listed.

Gather's templates, expected and harvested types, the required keys, the sources a lost
search leaves unread and the discovery text are derived from it; a reader's exception is
a bug and propagates, never a "data problem".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from service import gather
from service.api.routes import discovery
from service.facts import SourceRef, build_facts, registry
from service.facts.collector import Collector
from service.facts.common import Shape
from service.facts.registry import READERS, SOURCES, FhirSource, Reader
from service.gather import prefetch
from service.mappings import Mappings
from tests.conftest import REPO

CARE_PLANS = FhirSource(
    "care-plans", ("CarePlan",), "CarePlan?patient={{context.patientId}}", False, "CarePlans"
)
WITH_CARE_PLANS = (*SOURCES, CARE_PLANS)


def test_a_new_source_shows_up_in_every_derived_table(mappings: Mappings) -> None:
    templates = registry.prefetch_templates(mappings, 50, WITH_CARE_PLANS)
    assert templates["care-plans"] == "CarePlan?patient={{context.patientId}}&_count=50"
    assert registry.expected_types("care-plans", WITH_CARE_PLANS) == ("CarePlan",)
    assert "CarePlan" in registry.harvested_types(WITH_CARE_PLANS)
    assert "CarePlans" in registry.reads_text(WITH_CARE_PLANS)
    assert registry.unavailable_sources({"care-plans": "timed out"}, mappings, WITH_CARE_PLANS) == {
        "care-plans": "timed out"
    }
    required = FhirSource("care-plans", ("CarePlan",), "CarePlan?patient=x", True, "CarePlans")
    assert registry.required_keys((*SOURCES, required))[-1] == "care-plans"


def test_gather_and_discovery_read_the_registry(mappings: Mappings) -> None:
    assert gather.prefetch_templates is registry.prefetch_templates
    assert gather.REQUIRED_KEYS == registry.REQUIRED_KEYS == ("patient", "conditions", "medications")
    assert set(registry.HARVESTED_TYPES) == {t for s in SOURCES for t in s.resource_types} | {"Observation"}
    assert prefetch.expected_types is registry.expected_types
    assert prefetch.expected_types("medications") == (
        "MedicationStatement",
        "MedicationRequest",
        "Medication",
    )
    assert prefetch.expected_types("observations-blood-counts") == ("Observation",)
    usage = discovery._usage()
    for source in SOURCES:
        assert source.description in usage


def test_every_resource_type_a_search_returns_has_a_reader_or_is_only_referenced() -> None:
    returned = set(registry.HARVESTED_TYPES)
    assert returned == set(READERS) | set(registry.REFERENCED_SHAPES)


def test_no_other_module_lists_a_search_of_a_resource_type() -> None:
    """A search template ("Procedure?patient={...}") written anywhere else would be a second
    list (a worked example with a literal id, as in a docstring, is not a template)."""
    search = re.compile(r"\b[A-Z][A-Za-z]+\?(patient|subject)=\{")
    listed = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "service").rglob("*.py"))
        if path != REPO / "service" / "facts" / "registry.py"
        and search.search(path.read_text(encoding="utf-8"))
    ]
    assert listed == []
    assert search.search((REPO / "service" / "facts" / "registry.py").read_text(encoding="utf-8"))


class _CarePlanShape(Shape):
    status: str | None = None


def _read_care_plan(plan: _CarePlanShape, source: SourceRef, into: Collector) -> None:
    into.problems.append(f"{source} read, status {plan.status}")


def test_a_new_reader_in_a_copy_of_the_table_is_used(mappings: Mappings) -> None:
    readers = {**READERS, "CarePlan": Reader(_CarePlanShape, _read_care_plan)}
    facts = build_facts(
        "p1", [{"resourceType": "CarePlan", "id": "c1", "status": "active"}], mappings, readers=readers
    )
    assert facts.data_problems == ("CarePlan/c1 read, status active",)


def _broken_reader(error: Exception) -> Reader:
    def read(observation: Any, source: SourceRef, into: Collector) -> None:
        raise error

    return Reader(READERS["Observation"].shape, read)


@pytest.mark.parametrize(
    "error", [KeyError("analyte"), TypeError("bug"), ValueError("bug"), AttributeError("bug")]
)
def test_a_reader_exception_propagates(mappings: Mappings, error: Exception) -> None:
    """The exceptions the old blanket ``except`` turned into "could not be read" data problems."""
    readers = {**READERS, "Observation": _broken_reader(error)}
    with pytest.raises(type(error)):
        build_facts("p1", [{"resourceType": "Observation", "id": "o1"}], mappings, readers=readers)


def test_the_readme_map_names_the_registry_and_a_reader_module() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "service/facts/registry.py" in readme
    assert Path(REPO / "service" / "facts" / "registry.py").exists()
