"""Condition -> a diagnosis (with its stage, where it carries one)."""

from __future__ import annotations

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
from service.facts.model import Diagnosis

__all__ = ["ConditionShape", "read_condition"]

_EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
# "unconfirmed" is the parent of provisional and differential: none is an established diagnosis.
_UNCONFIRMED_VERIFICATION = {"unconfirmed", "provisional", "differential"}


class ConditionStage(Shape):
    summary: CodeableConcept | None = None


class ConditionShape(Shape):
    code: CodeableConcept | None = None
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    onsetDateTime: str | None = None
    onsetPeriod: Period | None = None
    abatementDateTime: str | None = None
    abatementPeriod: Period | None = None
    recordedDate: str | None = None
    stage: list[ConditionStage] | None = None


def read_condition(condition: ConditionShape, source: SourceRef, into: Collector) -> None:
    """A diagnosis unless refuted or entered in error; unconfirmed ones are marked so."""
    verification = {code for _, code in codings_of(condition.verificationStatus)}
    if verification & _EXCLUDED_VERIFICATION:
        return
    clinical = [code for _, code in codings_of(condition.clinicalStatus)]
    onset = parse_fhir_datetime(condition.onsetDateTime)
    if onset is None and condition.onsetPeriod is not None:
        onset = parse_fhir_datetime(condition.onsetPeriod.start)
    for stage in condition.stage or ():
        into.add_stage(codings_of(stage.summary), text_of(stage.summary), onset, source)
    staging = into.mappings.staging.snomed_stage
    staged = [c for c in codings_of(condition.code) if c[1] in staging]
    if staged:  # "Non-small cell carcinoma of lung, TNM stage 1": the diagnosis carries its stage
        into.add_stage(staged, text_of(condition.code), onset, source)
    abatement = parse_fhir_datetime(condition.abatementDateTime)
    if abatement is None and condition.abatementPeriod is not None:
        abatement = parse_fhir_datetime(condition.abatementPeriod.end)
    named = text_of(condition.code)
    into.diagnoses.append(
        Diagnosis(
            codings=tuple(codings_of(condition.code)),
            text=named.lower(),
            display=named or "condition",
            clinical_status=clinical[0] if clinical else None,
            onset=onset,
            abatement=abatement,
            recorded=parse_fhir_datetime(condition.recordedDate),
            unconfirmed=bool(verification & _UNCONFIRMED_VERIFICATION),
            source=source,
        )
    )
