"""Immunization -> a vaccination fact, seen only by drug classes that include immunizations."""

from __future__ import annotations

from service.facts.collector import Collector
from service.facts.common import CodeableConcept, Shape, SourceRef, codings_of, parse_fhir_datetime, text_of
from service.facts.model import ImmunizationFact

__all__ = ["ImmunizationShape", "read_immunization"]

_IGNORED_STATUSES = {"entered-in-error", "not-done"}


class ImmunizationShape(Shape):
    status: str | None = None
    vaccineCode: CodeableConcept | None = None
    occurrenceDateTime: str | None = None


def read_immunization(immunization: ImmunizationShape, source: SourceRef, into: Collector) -> None:
    """A vaccine given on a day (a live vaccine before lymphodepletion is what trials ask about)."""
    status = immunization.status or "unknown"
    if status in _IGNORED_STATUSES:
        return
    concept = immunization.vaccineCode
    into.immunizations.append(
        ImmunizationFact(
            codings=tuple(codings_of(concept)),
            text=text_of(concept),
            status=status,
            given=parse_fhir_datetime(immunization.occurrenceDateTime),
            source=source,
        )
    )
