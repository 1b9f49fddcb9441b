"""The one table of what the service reads from FHIR, and who reads each resource type.

Each :class:`FhirSource` is one prefetch key and search: the resource types it returns
(a medication search also brings the Medications its records refer to, by
``_include``), its search, whether the call fails without it, and how the discovery
document describes it.  Observations are one search per group of LOINC codes in
``mappings/`` (:data:`OBSERVATIONS`).  ``READERS`` names, per resource type, the shape it
is decoded into and the function that reads it.

Gather's templates, expected types and harvested types, the required keys, the
sources a lost search makes unreadable and the discovery text are all derived from
here: adding a resource type is an entry here and a reader module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from service.facts.administration import AdministrationShape, read_administration
from service.facts.collector import Collector
from service.facts.common import LOINC, Shape, SourceRef
from service.facts.condition import ConditionShape, read_condition
from service.facts.immunization import ImmunizationShape, read_immunization
from service.facts.medication import MedicationShape, MedicationStatementShape, read_medication
from service.facts.observation import ObservationShape, read_observation
from service.facts.patient import PatientShape, read_patient
from service.facts.procedure import ProcedureShape, read_procedure
from service.mappings import Mappings

__all__ = [
    "ADMINISTRATIONS",
    "HARVESTED_TYPES",
    "IMMUNIZATIONS",
    "MEDICATION_REQUESTS",
    "OBSERVATIONS",
    "PROCEDURES",
    "READERS",
    "REFERENCED_SHAPES",
    "REQUIRED_KEYS",
    "SOURCES",
    "FhirSource",
    "ObservationSearch",
    "Reader",
    "expected_types",
    "harvested_types",
    "prefetch_templates",
    "reads_text",
    "required_keys",
    "unavailable_sources",
]

PATIENT_ID = "{{context.patientId}}"
PROCEDURES = "procedures"
IMMUNIZATIONS = "immunizations"
MEDICATION_REQUESTS = "medication-requests"  # a source whose loss makes drug criteria unknown
ADMINISTRATIONS = "medication-administrations"
"""Prefetch keys of the optional sources, which are also their names in ``PatientFacts.unavailable``
(the rest of that mapping is keyed by analyte or test)."""


@dataclass(frozen=True)
class Reader:
    """How one resource type becomes facts: decoded into ``shape``, then read."""

    shape: type[Shape]
    read: Callable[[Any, SourceRef, Collector], None]


@dataclass(frozen=True)
class FhirSource:
    """One prefetch key and the search behind it."""

    key: str
    resource_types: tuple[str, ...]
    search: str
    """The relative URL, with ``{{context.patientId}}``; a search (with "?") gets ``&_count=``."""
    required: bool
    description: str

    def template(self, page_size: int) -> str:
        return f"{self.search}&_count={page_size}" if "?" in self.search else self.search


@dataclass(frozen=True)
class ObservationSearch:
    """The Observations: one search per group of LOINC codes the mappings define."""

    key_prefix: str
    resource_types: tuple[str, ...]
    description: str

    def templates(self, mappings: Mappings, page_size: int) -> dict[str, str]:
        templates = {}
        for group, codes in mappings.observation_codes_by_group.items():
            code_list = ",".join(f"{LOINC}|{code}" for code in codes)
            templates[f"{self.key_prefix}{group}"] = (
                f"Observation?patient={PATIENT_ID}&code={code_list}&_sort=-date&_count={page_size}"
            )
        return templates


def _medication_search(resource_type: str) -> str:
    return f"{resource_type}?patient={PATIENT_ID}&_include={resource_type}:medication"


SOURCES: tuple[FhirSource, ...] = (
    FhirSource("patient", ("Patient",), f"Patient/{PATIENT_ID}", True, "the Patient"),
    FhirSource("conditions", ("Condition",), f"Condition?patient={PATIENT_ID}", True, "Conditions"),
    # Some EHRs record medication history as MedicationRequests; both are read.
    FhirSource(
        "medications",
        ("MedicationStatement", "MedicationRequest", "Medication"),
        _medication_search("MedicationStatement"),
        True,
        "MedicationStatements with the Medications they refer to",
    ),
    FhirSource(
        MEDICATION_REQUESTS,
        ("MedicationRequest", "Medication"),
        _medication_search("MedicationRequest"),
        False,
        "MedicationRequests with their Medications",
    ),
    FhirSource(
        ADMINISTRATIONS,
        ("MedicationAdministration", "Medication"),
        _medication_search("MedicationAdministration"),
        False,
        "MedicationAdministrations with their Medications",
    ),
    FhirSource(PROCEDURES, ("Procedure",), f"Procedure?patient={PATIENT_ID}", False, "Procedures"),
    FhirSource(
        IMMUNIZATIONS, ("Immunization",), f"Immunization?patient={PATIENT_ID}", False, "Immunizations"
    ),
)
OBSERVATIONS = ObservationSearch(
    "observations-",
    ("Observation",),
    "Observations, searched by LOINC code (one search per group of codes in mappings/), whatever their category",
)

READERS: Mapping[str, Reader] = MappingProxyType(
    {
        "Patient": Reader(PatientShape, read_patient),
        "Observation": Reader(ObservationShape, read_observation),
        "Condition": Reader(ConditionShape, read_condition),
        "MedicationStatement": Reader(MedicationStatementShape, read_medication),
        "MedicationRequest": Reader(MedicationStatementShape, read_medication),
        "MedicationAdministration": Reader(AdministrationShape, read_administration),
        "Procedure": Reader(ProcedureShape, read_procedure),
        "Immunization": Reader(ImmunizationShape, read_immunization),
    }
)
REFERENCED_SHAPES: Mapping[str, type[Shape]] = MappingProxyType({"Medication": MedicationShape})
"""Resource types read only where another resource refers to them."""


def required_keys(sources: tuple[FhirSource, ...] = SOURCES) -> tuple[str, ...]:
    """The keys without which every exclusion would read as "none recorded" (a 412)."""
    return tuple(source.key for source in sources if source.required)


def harvested_types(sources: tuple[FhirSource, ...] = SOURCES) -> tuple[str, ...]:
    """Every resource type some search of ours returns: what a client's own prefetch keys may bring."""
    return tuple(
        dict.fromkeys([*(t for s in sources for t in s.resource_types), *OBSERVATIONS.resource_types])
    )


def prefetch_templates(
    mappings: Mappings, page_size: int = 200, sources: tuple[FhirSource, ...] = SOURCES
) -> dict[str, str]:
    """Every prefetch key's template: each source's, then one Observation search per code group."""
    templates = {source.key: source.template(page_size) for source in sources}
    return {**templates, **OBSERVATIONS.templates(mappings, page_size)}


def expected_types(key: str, sources: tuple[FhirSource, ...] = SOURCES) -> tuple[str, ...]:
    """The resource types a prefetch key may hold (an Observation group's key: Observations)."""
    source = next((s for s in sources if s.key == key), None)
    return source.resource_types if source is not None else OBSERVATIONS.resource_types


def unavailable_sources(
    unavailable_keys: Mapping[str, str], mappings: Mappings, sources: tuple[FhirSource, ...] = SOURCES
) -> dict[str, str]:
    """What each lost search leaves unread, by the names ``PatientFacts.unavailable`` uses: an
    optional source by its key, an Observation group by each analyte and test it holds."""
    by_key = {source.key: source for source in sources}
    lost: dict[str, str] = {}
    for key, reason in unavailable_keys.items():
        source = by_key.get(key)
        if source is not None:
            if not source.required:
                lost[key] = reason
            continue
        for name in mappings.definitions_by_group.get(key.removeprefix(OBSERVATIONS.key_prefix), []):
            lost[name] = reason
    return lost


def reads_text(sources: tuple[FhirSource, ...] = SOURCES) -> str:
    """What the service reads, for the discovery document: each source, the required ones said so."""
    described = [f"{s.description}{' (required)' if s.required else ''}" for s in sources]
    return "; ".join([*described, OBSERVATIONS.description])


REQUIRED_KEYS = required_keys()
HARVESTED_TYPES = harvested_types()
