"""MedicationAdministration -> a dose given: the most precise date a washout can start from."""

from __future__ import annotations

from service.facts.collector import Collector
from service.facts.common import (
    CodeableConcept,
    Period,
    Reference,
    Shape,
    SourceRef,
    codings_of,
    parse_fhir_datetime,
    relative_reference,
    text_of,
)
from service.facts.medication import MedicationRecord, medication_concept, unidentified
from service.facts.model import DrugExposure

__all__ = ["AdministrationShape", "read_administration"]

_IGNORED_STATUSES = {"entered-in-error", "not-done"}


class AdministrationDosage(Shape):
    route: CodeableConcept | None = None


class AdministrationShape(MedicationRecord):
    effectiveDateTime: str | None = None
    effectivePeriod: Period | None = None
    request: Reference | None = None
    dosage: AdministrationDosage | None = None


def read_administration(administration: AdministrationShape, source: SourceRef, into: Collector) -> None:
    """A dose given (an infusion of chemotherapy), linked to the order it carried out."""
    status = administration.status or "unknown"
    if status in _IGNORED_STATUSES:
        return
    concept = medication_concept(administration, into.medications)
    start = end = parse_fhir_datetime(administration.effectiveDateTime)
    period = administration.effectivePeriod
    if period is not None:
        start, end = parse_fhir_datetime(period.start), parse_fhir_datetime(period.end)
        start = start or end
    running = status in ("in-progress", "on-hold")
    given = end or start
    request = administration.request.reference if administration.request is not None else None
    if request is not None and given is not None:
        into.given_for_request[relative_reference(request)].append(given)
    into.drugs.append(
        DrugExposure(
            codings=tuple(codings_of(concept)),
            text=text_of(concept),
            status="active" if running else status,
            start=start,
            end=None if running else end,
            source=source,
            dose_problem="an administration records one dose, not a daily dose",
            route=text_of(administration.dosage.route if administration.dosage else None).lower(),
            unidentified=unidentified(administration, concept),
            last_evidence=(given, "given") if given is not None else None,
        )
    )
