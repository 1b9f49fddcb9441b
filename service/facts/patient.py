"""Patient -> birth date (with the last day a partial one allows), sex, deceased."""

from __future__ import annotations

import msgspec

from service.facts.collector import Collector
from service.facts.common import Shape, SourceRef, last_day_meant, parse_fhir_datetime

__all__ = ["PatientShape", "read_patient"]


class PatientShape(Shape):
    birthDate: str | None = None
    gender: str | None = None
    deceasedBoolean: bool | None = None
    deceasedDateTime: str | None | msgspec.UnsetType = msgspec.UNSET


def read_patient(patient: PatientShape, source: SourceRef, into: Collector) -> None:
    """The demographics the age, sex and vital-status criteria read."""
    birth = parse_fhir_datetime(patient.birthDate)
    into.birth_date = birth.date() if birth else None
    into.birth_date_latest = last_day_meant(patient.birthDate, into.birth_date)
    into.sex = patient.gender
    into.deceased = patient.deceasedBoolean is True or patient.deceasedDateTime is not msgspec.UNSET
