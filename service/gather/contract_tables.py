"""The prefetch contract's tables: which keys exist, what each may hold, what is required.

Kept together in one small module because they are one fact about the data (which FHIR
resource types the service reads, and how it asks for them); everything else in
``service.gather`` imports them from here.
"""

from __future__ import annotations

from service.facts import ADMINISTRATIONS, IMMUNIZATIONS, PROCEDURES
from service.mappings import Mappings

__all__ = ["REQUIRED_KEYS", "prefetch_templates"]

REQUIRED_KEYS = ("patient", "conditions", "medications")
_RESOURCE_TYPES = {
    "patient": ("Patient",),
    "conditions": ("Condition",),
    # Some EHRs record medication history as MedicationRequests; both are read.  Each
    # medication search also brings the Medications its records refer to (_include).
    "medications": ("MedicationStatement", "MedicationRequest", "Medication"),
    "medication-requests": ("MedicationRequest", "Medication"),
    ADMINISTRATIONS: ("MedicationAdministration", "Medication"),
    PROCEDURES: ("Procedure",),
    IMMUNIZATIONS: ("Immunization",),
}
_HARVESTED_TYPES = (
    "Patient",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Medication",
    "Observation",
    "Procedure",
    "Immunization",
)


def prefetch_templates(mappings: Mappings, page_size: int = 200) -> dict[str, str]:
    """Prefetch templates: the Patient, Conditions, MedicationStatements, MedicationRequests and
    MedicationAdministrations (each with the Medications they refer to), Procedures, Immunizations
    and one Observation search per group of LOINC codes and panels (derived from ``mappings/``)."""
    patient = "patient={{context.patientId}}"
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "conditions": f"Condition?{patient}&_count={page_size}",
        "medications": f"MedicationStatement?{patient}&_include=MedicationStatement:medication&_count={page_size}",
        "medication-requests": (
            f"MedicationRequest?{patient}&_include=MedicationRequest:medication&_count={page_size}"
        ),
        ADMINISTRATIONS: (
            f"MedicationAdministration?{patient}&_include=MedicationAdministration:medication&_count={page_size}"
        ),
        PROCEDURES: f"Procedure?patient={{{{context.patientId}}}}&_count={page_size}",
        IMMUNIZATIONS: f"Immunization?patient={{{{context.patientId}}}}&_count={page_size}",
    }
    for group, codes in mappings.observation_codes_by_group.items():
        code_list = ",".join(f"http://loinc.org|{code}" for code in codes)
        templates[f"observations-{group}"] = (
            f"Observation?patient={{{{context.patientId}}}}&code={code_list}&_sort=-date&_count={page_size}"
        )
    return templates
