"""Procedure -> a dated procedure fact: active while in progress, history once completed."""

from __future__ import annotations

import msgspec

from service.facts.collector import Collector
from service.facts.common import (
    CodeableConcept,
    Period,
    Shape,
    SourceRef,
    codings_of,
    parse_fhir_datetime,
    text_of,
)
from service.facts.model import ProcedureFact

__all__ = ["ProcedureShape", "read_procedure"]

# Procedures that did not happen (or not yet) say nothing about the patient's history;
# one of unknown status is kept (a dialysis record without a status is still dialysis).
_IGNORED_STATUSES = {"entered-in-error", "not-done", "preparation"}


class ProcedureShape(Shape):
    status: str | None = None
    code: CodeableConcept | None = None
    performedPeriod: Period | None = None
    performedDateTime: str | None | msgspec.UnsetType = msgspec.UNSET


def read_procedure(procedure: ProcedureShape, source: SourceRef, into: Collector) -> None:
    """A procedure that happened or is happening, with when it started and ended."""
    status = procedure.status or "unknown"
    if status in _IGNORED_STATUSES:
        return
    start = end = None
    period = procedure.performedPeriod
    if period is not None:
        start, end = parse_fhir_datetime(period.start), parse_fhir_datetime(period.end)
        if start is not None and end is not None and end < start:
            start, end = end, start  # a reversed period: its later date is when it ended
    elif procedure.performedDateTime is not msgspec.UNSET:
        start = end = parse_fhir_datetime(procedure.performedDateTime)
    named = text_of(procedure.code)
    into.procedures.append(
        ProcedureFact(
            codings=tuple(codings_of(procedure.code)),
            text=named.lower(),
            display=named or "procedure",
            status=status,
            start=start,
            end=end,
            source=source,
        )
    )
