"""Observation -> lab results, differential percentages, stages and qualitative tests.

Which of these an Observation is comes from its LOINC code and the mappings: an
analyte's code makes a numeric result (a panel's components each make one), a
differential percentage is kept for the derived absolute counts, a staging code makes
a stage, a test's code (or a variant panel naming a gene) a qualitative result.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from service.facts.collector import Collector
from service.facts.common import (
    LOINC,
    CodeableConcept,
    Period,
    Quantity,
    Shape,
    SourceRef,
    codings_of,
    parse_fhir_datetime,
    text_of,
)
from service.facts.model import LabResult, TestResult
from service.units import normalise_unit

__all__ = ["ObservationShape", "read_observation"]

_IGNORED_STATUSES = {"entered-in-error", "cancelled", "registered"}
_BOUND_COMPARATORS = {"<", "<=", ">", ">="}
# A reference range given only as text: "0-40 U/L", "7 - 56", "< 1.2 mg/dL", "<=40".
_REFERENCE_TEXT = re.compile(
    r"^\s*(?:\d+(?:\.\d+)?\s*(?:-|–|to)\s*|(?:<=?|≤)\s*)(?P<high>\d+(?:\.\d+)?)\s*(?P<unit>[^\s\d][^\s]*)?\s*$"
)


class ReferenceRange(Shape):
    type: CodeableConcept | None = None
    high: Quantity | None = None
    text: str | None = None


class Measured(Shape):
    """What an Observation and each of its components may hold as a result."""

    code: CodeableConcept | None = None
    valueQuantity: Quantity | None = None
    valueInteger: int | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueString: str | None = None
    referenceRange: list[ReferenceRange] | None = None


class ObservationShape(Measured):
    status: str | None = None
    effectiveDateTime: str | None | msgspec.UnsetType = msgspec.UNSET
    effectiveInstant: str | None | msgspec.UnsetType = msgspec.UNSET
    issued: str | None | msgspec.UnsetType = msgspec.UNSET
    effectivePeriod: Period | None = None
    valueBoolean: bool | None = None
    interpretation: list[CodeableConcept] | CodeableConcept | None = None
    component: list[Measured] | None = None


def _effective(observation: ObservationShape) -> datetime | None:
    """When the result was taken: the first of effective[x] and issued that is present."""
    for moment in (observation.effectiveDateTime, observation.effectiveInstant, observation.issued):
        if moment is not msgspec.UNSET:
            return parse_fhir_datetime(moment)
    period = observation.effectivePeriod
    return parse_fhir_datetime(period.end or period.start) if period is not None else None


def _reference_high(measured: Measured, aliases: dict[str, str]) -> tuple[float, str | None] | None:
    """The upper limit of the normal range (a range of another type is not a ULN)."""
    for reference_range in measured.referenceRange or ():
        codes = {code for _, code in codings_of(reference_range.type)}
        if codes and "normal" not in codes:
            continue
        high = reference_range.high
        if high is not None and high.value is not None:
            return float(high.value), normalise_unit(high.code or high.unit, aliases)
        match = _REFERENCE_TEXT.match(reference_range.text) if reference_range.text is not None else None
        if match:
            return float(match.group("high")), normalise_unit(match.group("unit"), aliases)
    return None


def read_observation(observation: ObservationShape, source: SourceRef, into: Collector) -> None:
    """One Observation: by its first LOINC code the mappings know, else by its components."""
    if observation.status in _IGNORED_STATUSES:
        return
    mappings = into.mappings
    concept = observation.code
    loinc_codes = [
        coding.code
        for coding in (concept.coding or () if concept is not None else ())
        if coding.code is not None and (coding.system == LOINC or not coding.system)
    ]
    when = _effective(observation)
    for code in loinc_codes:
        analyte = mappings.analyte_by_loinc.get(code)
        if analyte is not None:
            _numeric(observation, analyte, code, when, source, into)
            return
        percent_of = mappings.percent_analyte_by_loinc.get(code)
        if percent_of is not None:
            _percent(observation, percent_of, code, when, source, into)
            return
        if code in mappings.staging.loinc:
            concept = observation.valueCodeableConcept
            into.add_stage(
                codings_of(concept), text_of(concept) or observation.valueString or "", when, source
            )
            return
        test = mappings.qualitative_test_by_loinc.get(code)
        if test is not None:
            _qualitative(observation, test, when, source, into)
            return
    components = observation.component or []
    genomics = mappings.roles.genomics
    if set(genomics.variant_panel_loinc) & set(loinc_codes):
        _variant_panel(observation, components, when, source, into)
        return
    # A panel whose results are components (a CBC as one Observation): each component
    # with an analyte's LOINC code is a result of its own, dated and sourced by the panel.
    for component in components:
        for system, code in codings_of(component.code):
            analyte = mappings.analyte_by_loinc.get(code) if system in (LOINC, "") else None
            if analyte is not None:
                _numeric(component, analyte, code, when, source, into)
                break


def _variant_panel(
    observation: ObservationShape,
    components: list[Measured],
    when: datetime | None,
    source: SourceRef,
    into: Collector,
) -> None:
    """A genomic variant panel: its result is about the first gene studied that a test names."""
    mappings = into.mappings
    genomics = mappings.roles.genomics
    for component in components:
        if set(genomics.gene_studied_loinc) & {c for _, c in codings_of(component.code)}:
            for _, gene in codings_of(component.valueCodeableConcept):
                test = mappings.qualitative_test_by_gene.get(gene)
                if test is not None:
                    _qualitative(observation, test, when, source, into)
                    return


def _numeric(
    measured: Measured, analyte: str, code: str, when: datetime | None, source: SourceRef, into: Collector
) -> None:
    """A measurement of an analyte (or a scored assessment such as ECOG) as a LabResult."""
    mappings = into.mappings
    definition = mappings.analytes[analyte]
    value: float | None = None
    unit: str | None = None
    problem: str | None = None
    comparator: str | None = None
    quantity = measured.valueQuantity
    if quantity is not None:
        if quantity.value is None:
            into.problems.append(f"{source} has no numeric value; ignored")
            return
        comparator = quantity.comparator
        if comparator and comparator not in _BOUND_COMPARATORS:
            problem = f"value is qualified ('{comparator}{quantity.value}')"
        value = float(quantity.value)
        unit = into.unit(quantity.code or quantity.unit)
        if unit is None and definition.unit.startswith("{"):
            unit = definition.unit
    elif measured.valueInteger is not None:
        value, unit = float(measured.valueInteger), definition.unit
    elif measured.valueCodeableConcept is not None and definition.answer_scores:
        for _, answer in codings_of(measured.valueCodeableConcept):
            if answer in definition.answer_scores:
                value, unit = definition.answer_scores[answer], definition.unit
                break
    if value is None and definition.text_scores:
        said = " ".join([measured.valueString or "", text_of(measured.valueCodeableConcept)]).lower()
        value = next(
            (
                score
                for phrase, score in definition.text_scores.items()
                if re.search(rf"\b{re.escape(phrase)}\b", said)
            ),
            None,
        )
        unit = definition.unit if value is not None else None
    if value is None:
        if not definition.answer_scores:
            return
        # A scored assessment is on record but unreadable: keep it, so that "no result
        # on record" is never concluded from it, and say so.
        into.problems.append(f"{source}: {definition.display} value not recognised")
    elif unit is None:
        problem = problem or "the result has no unit"
    into.labs[analyte].append(
        LabResult(
            analyte=analyte,
            value=value,
            unit=unit,
            when=when,
            source=source,
            code=code,
            display=text_of(measured.code) or definition.display,
            reference_high=_reference_high(measured, mappings.unit_aliases),
            unit_problem=problem,
            comparator=comparator if comparator in _BOUND_COMPARATORS else None,
        )
    )


def _percent(
    observation: ObservationShape,
    analyte: str,
    code: str,
    when: datetime | None,
    source: SourceRef,
    into: Collector,
) -> None:
    """A differential percentage (neutrophils %), kept to derive the absolute count from."""
    quantity = observation.valueQuantity
    if quantity is None or quantity.value is None:
        return
    unit = into.unit(quantity.code or quantity.unit)
    if unit != "%":
        into.problems.append(f"{source}: differential percentage in '{unit}', not %; ignored")
        return
    into.percents[analyte].append(
        LabResult(
            analyte=analyte,
            value=float(quantity.value),
            unit="%",
            when=when,
            source=source,
            code=code,
            display=text_of(observation.code) or code,
        )
    )


def _qualitative(
    observation: ObservationShape, test: str, when: datetime | None, source: SourceRef, into: Collector
) -> None:
    """A test's result as positive, negative or not interpretable, by code first, then by text."""
    answers = into.mappings.qualitative_answers
    texts: list[str] = []
    codes: list[str] = []
    interpretation = observation.interpretation
    interpretations = interpretation if isinstance(interpretation, list) else [interpretation]
    for concept in [observation.valueCodeableConcept, *interpretations]:
        codes += [code for _, code in codings_of(concept)]
        texts.append(text_of(concept))
    if observation.valueString is not None:
        texts.append(observation.valueString)
    if observation.valueBoolean is not None:
        texts.append("positive" if observation.valueBoolean else "negative")
    polarity: str | None = None
    if any(code in answers.negative.codes for code in codes):
        polarity = "negative"
    elif any(code in answers.positive.codes for code in codes):
        polarity = "positive"
    else:
        lowered = " ".join(texts).lower()
        if any(re.search(rf"\b{re.escape(t)}\b", lowered) for t in answers.negative.text):
            polarity = "negative"
        elif any(re.search(rf"\b{re.escape(t)}\b", lowered) for t in answers.positive.text):
            polarity = "positive"
    into.tests[test].append(
        TestResult(
            test=test, polarity=polarity, text=" | ".join(t for t in texts if t), when=when, source=source
        )
    )
