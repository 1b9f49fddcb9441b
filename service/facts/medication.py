"""MedicationStatement and MedicationRequest -> drug exposures with their course and daily dose.

Also what every medication record shares: the drug it names (its own concept, or the
Medication it refers to, contained or brought by ``_include``) and why it names none.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime

import msgspec

from service.facts.collector import Collector
from service.facts.common import (
    CodeableConcept,
    Period,
    Quantity,
    Reference,
    Shape,
    SourceRef,
    codings_of,
    parse_fhir_datetime,
    relative_reference,
    text_of,
)
from service.facts.model import DrugExposure
from service.mappings import Mappings
from service.units import UnitConversionError, convert, normalise_unit

__all__ = [
    "MedicationRecord",
    "MedicationShape",
    "MedicationStatementShape",
    "medication_concept",
    "read_medication",
    "unidentified",
]

_IGNORED_STATUSES = {"entered-in-error", "not-taken", "intended"}
# A dose counted in tablets or capsules, and a single "N MG" strength in the product name.
_DOSE_FORM_UNIT = re.compile(r"(?i)^\{?(tbl|tab|tablet|tablets|cap|capsule|capsules)\}?$")
_STRENGTH = re.compile(r"(?i)(?<![\d.])(\d+(?:\.\d+)?)\s*mg\b(\s*/)?")
_PERIOD_UNIT_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}
_TIMING_CODES_PER_DAY = {
    "QD": 1,
    "BID": 2,
    "TID": 3,
    "QID": 4,
    "QOD": 0.5,
    "Q4H": 6,
    "Q6H": 4,
    "Q8H": 3,
    "Q12H": 2,
    "AM": 1,
    "PM": 1,
    "QAM": 1,
    "QPM": 1,
    "QHS": 1,
}


class MedicationShape(Shape):
    """A Medication (``_include``d or contained): only its code is read."""

    id: str | None = None
    code: CodeableConcept | None = None


class MedicationRecord(Shape):
    """What names the drug of any medication resource."""

    status: str | None = None
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    contained: list[MedicationShape] | None = None


class Repeat(Shape):
    boundsPeriod: Period | None = None
    frequency: int | float | None = None
    period: int | float | None = None
    periodUnit: str | None = None


class Timing(Shape):
    repeat: Repeat | None = None
    code: CodeableConcept | None = None


class DoseAndRate(Shape):
    doseQuantity: Quantity | None = None


class Dosage(Shape):
    sequence: int | None = None
    text: str | None = None
    route: CodeableConcept | None = None
    timing: Timing | None = None
    doseAndRate: list[DoseAndRate] | None = None


class DispenseRequest(Shape):
    validityPeriod: Period | None = None


class MedicationStatementShape(MedicationRecord):
    """A MedicationStatement or a MedicationRequest (the reader tells them apart by type)."""

    resourceType: str | None = None
    effectivePeriod: Period | None = None
    effectiveDateTime: str | None | msgspec.UnsetType = msgspec.UNSET
    authoredOn: str | None = None
    dosage: list[Dosage] | None = None
    dosageInstruction: list[Dosage] | None = None
    dispenseRequest: DispenseRequest | None = None


def _referenced(
    record: MedicationRecord, target: str, medications: dict[str, MedicationShape]
) -> MedicationShape | None:
    """The Medication a ``medicationReference`` points to: contained ("#id"), or one of ``medications``."""
    if target.startswith("#"):
        return next((m for m in record.contained or () if target == f"#{m.id}"), None)
    return medications.get(relative_reference(target)) if target else None


def medication_concept(
    record: MedicationRecord, medications: dict[str, MedicationShape] | None = None
) -> CodeableConcept | None:
    """A medication record's concept: its own, or its referenced Medication's code
    (contained, or one of ``medications`` keyed "Medication/id", as ``_include`` brings them)."""
    concept = record.medicationCodeableConcept
    reference = record.medicationReference
    if concept is None and reference is not None:
        concept = CodeableConcept(text=reference.display or "")
        target = _referenced(record, reference.reference or "", medications or {})
        if target is not None and target.code is not None:
            concept = CodeableConcept(coding=target.code.coding, text=text_of(target.code) or concept.text)
    return concept


def unidentified(record: MedicationRecord, concept: CodeableConcept | None) -> str | None:
    """Why a medication record names no drug we could match, or None when it names one."""
    if codings_of(concept) or text_of(concept):
        return None
    reference = record.medicationReference
    if reference is not None and reference.reference:
        return f"it refers to {reference.reference}, which is not in the data"
    return "it records no medication code or name"


def _dosage_bounds(dosages: list[Dosage] | None) -> tuple[datetime | None, datetime | None]:
    """Earliest start and latest end of the dosages' ``timing.repeat.boundsPeriod``."""
    starts, ends = [], []
    for dosage in dosages or ():
        repeat = dosage.timing.repeat if dosage.timing is not None else None
        bounds = repeat.boundsPeriod if repeat is not None else None
        if bounds is None:
            continue
        start, end = parse_fhir_datetime(bounds.start), parse_fhir_datetime(bounds.end)
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
    return (min(starts) if starts else None, max(ends) if ends else None)


def read_medication(statement: MedicationStatementShape, source: SourceRef, into: Collector) -> None:
    """A drug taken or ordered, over the course its dates (or its order's dosage) give."""
    status = statement.status or "unknown"
    if status in _IGNORED_STATUSES:
        return
    concept = medication_concept(statement, into.medications)
    start = end = None
    period = statement.effectivePeriod
    if period is not None:
        start, end = parse_fhir_datetime(period.start), parse_fhir_datetime(period.end)
    elif statement.effectiveDateTime is not msgspec.UNSET:
        start = end = parse_fhir_datetime(statement.effectiveDateTime)
        if status == "active":
            end = None
    evidence = [(start, "started"), (end, "ended")]
    if statement.resourceType == "MedicationRequest":
        # The course is the dosage's timing bounds where given, else the prescription's
        # validity; an ended request without either ended when it was written.
        bounds = _dosage_bounds(statement.dosageInstruction)
        validity = statement.dispenseRequest.validityPeriod if statement.dispenseRequest else None
        authored = parse_fhir_datetime(statement.authoredOn)
        start = bounds[0] or authored
        end = None
        if status != "active":
            end = bounds[1] or parse_fhir_datetime(validity.end if validity else None)
            if status == "completed" and end is None:
                end = start
        evidence = [(authored, "authored"), (bounds[0], "dosage starts"), (bounds[1], "dosage ends")]
    dose, problem, route = daily_dose(
        statement.dosage or statement.dosageInstruction, text_of(concept), into.mappings
    )
    dated = [(moment, what) for moment, what in evidence if moment is not None]
    into.drugs.append(
        DrugExposure(
            codings=tuple(codings_of(concept)),
            text=text_of(concept),
            status=status,
            start=start,
            end=end,
            source=source,
            dose_mg_per_day=dose,
            dose_problem=problem,
            route=route,
            unidentified=unidentified(statement, concept),
            last_evidence=max(dated, key=lambda item: item[0]) if dated else None,
        )
    )


def daily_dose(
    dosages: list[Dosage] | None, product: str, mappings: Mappings
) -> tuple[float | None, str | None, str]:
    """The daily dose in mg over every dosage line, the reason there is none, and the route.

    Lines with the same ``sequence`` (or none) are taken at the same time (a morning and
    an evening dose) and add up; lines with different ``sequence`` numbers follow one
    another (a taper), so which one applies now cannot be told from the order alone.
    """
    lines = dosages or []
    if not lines:
        return None, "no dosage recorded", ""
    route = next((r for r in (text_of(d.route).lower() for d in lines) if r), "")
    per_line = [_line_dose(line, product, mappings) for line in lines]
    problem = next((p for _, p in per_line if p is not None), None)
    if problem is not None:
        return None, problem, route
    doses = [dose or 0.0 for dose, _ in per_line]
    steps: dict[int | None, float] = defaultdict(float)
    for line, dose in zip(lines, doses, strict=True):
        steps[line.sequence] += dose
    if len(steps) > 1:
        listed = ", ".join(f"{dose:g}" for dose in steps.values())
        return (
            None,
            f"the dosage changes over time ({listed} mg/day in turn); confirm the current dose",
            route,
        )
    return sum(doses), None, route


def _line_dose(dosage: Dosage, product: str, mappings: Mappings) -> tuple[float | None, str | None]:
    """One dosage line's mg per day, or why it has none."""
    quantity = next((d.doseQuantity for d in dosage.doseAndRate or () if d.doseQuantity is not None), None)
    if quantity is None or quantity.value is None:
        return None, f"no structured dose ({dosage.text or 'no text'})"
    unit = normalise_unit(quantity.code or quantity.unit, mappings.unit_aliases)
    try:
        milligrams = convert(float(quantity.value), unit or "", "mg")
    except UnitConversionError:
        # "3 {tbl}" of "predniSONE 5 MG Oral Tablet": the strength is in the product's name
        strengths = _STRENGTH.findall(product) if _DOSE_FORM_UNIT.match(str(unit or "")) else []
        # one strength, and not a concentration ("15 MG/5ML") or a combination product
        if len({mg for mg, _ in strengths}) != 1 or any(per for _, per in strengths):
            return None, f"dose unit '{unit}' is not a mass"
        milligrams = float(quantity.value) * float(strengths[0][0])
    per_day = _doses_per_day(dosage.timing)
    if per_day is None:
        return None, f"no dosing frequency ({dosage.text or 'no text'})"
    return milligrams * per_day, None


def _doses_per_day(timing: Timing | None) -> float | None:
    """How often a day a dose is taken, from ``timing.repeat`` or a timing code (BID)."""
    if timing is None:
        return None
    repeat = timing.repeat
    if repeat is not None and repeat.period is not None:
        frequency = float(repeat.frequency or 1)
        days = float(repeat.period) * _PERIOD_UNIT_DAYS.get(repeat.periodUnit or "d", 1)
        return frequency / days if days > 0 else None
    for code in (code.upper() for _, code in codings_of(timing.code)):
        if code in _TIMING_CODES_PER_DAY:
            return float(_TIMING_CODES_PER_DAY[code])
    return None
