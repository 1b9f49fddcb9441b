"""FHIR R4 resources -> the small typed facts the engine understands.

FHIR shapes stop here: LOINC lookups, UCUM normalisation, statuses, reference ranges,
partial dates and dose arithmetic all live in this package, so the engine never sees a
resource.  One reader module per resource type (``patient``, ``observation``,
``condition``, ``medication``, ``administration``, ``procedure``, ``immunization``),
registered with the searches that bring them in ``registry``.  Each resource is decoded
once, with msgspec, into a struct of only the fields its reader reads (validating
thousands of Observations with full FHIR models costs more than the whole evaluation);
a field of the wrong type is left out and named in ``PatientFacts.data_problems``, which
the cards show, rather than failing the call.
"""

from __future__ import annotations

from service.facts.build import age_in_years, build_facts, draft_order_exposures, unique_resources
from service.facts.common import SourceRef, concept_text, parse_fhir_datetime
from service.facts.model import (
    Diagnosis,
    DrugExposure,
    Exposure,
    ImmunizationFact,
    LabResult,
    PatientFacts,
    ProcedureFact,
    RecordedCondition,
    StageFact,
    TestResult,
)
from service.facts.registry import (
    ADMINISTRATIONS,
    IMMUNIZATIONS,
    MEDICATION_REQUESTS,
    PROCEDURES,
    unavailable_sources,
)

__all__ = [
    "ADMINISTRATIONS",
    "IMMUNIZATIONS",
    "MEDICATION_REQUESTS",
    "PROCEDURES",
    "Diagnosis",
    "DrugExposure",
    "Exposure",
    "ImmunizationFact",
    "LabResult",
    "PatientFacts",
    "ProcedureFact",
    "RecordedCondition",
    "SourceRef",
    "StageFact",
    "TestResult",
    "age_in_years",
    "build_facts",
    "concept_text",
    "draft_order_exposures",
    "parse_fhir_datetime",
    "unavailable_sources",
    "unique_resources",
]
