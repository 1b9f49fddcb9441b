"""Where the readers put what they read, for one patient; ``build_facts`` freezes it."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from service.facts.common import SourceRef
from service.facts.model import (
    Diagnosis,
    DrugExposure,
    ImmunizationFact,
    LabResult,
    ProcedureFact,
    StageFact,
    TestResult,
)
from service.mappings import Mappings
from service.units import normalise_unit

if TYPE_CHECKING:
    from service.facts.medication import MedicationShape

__all__ = ["Collector"]

_STAGE_TEXT = re.compile(r"(?i)(?:\bstage\s*|^\s*)(IV|III|II|I|4|3|2|1)(?:[ABC]\d?)?\b")
_STAGE_NUMERALS = {"I": 1, "II": 2, "III": 3, "IV": 4, "1": 1, "2": 2, "3": 3, "4": 4}


@dataclass
class Collector:
    """The facts read so far, in the order the resources came; mutable only while building."""

    mappings: Mappings
    medications: dict[str, MedicationShape] = field(default_factory=dict)
    """The Medications in the data, decoded, by "Medication/id" (as ``_include`` brings them)."""
    birth_date: date | None = None
    birth_date_latest: date | None = None
    sex: str | None = None
    deceased: bool = False
    labs: defaultdict[str, list[LabResult]] = field(default_factory=lambda: defaultdict(list))
    percents: defaultdict[str, list[LabResult]] = field(default_factory=lambda: defaultdict(list))
    tests: defaultdict[str, list[TestResult]] = field(default_factory=lambda: defaultdict(list))
    diagnoses: list[Diagnosis] = field(default_factory=list)
    procedures: list[ProcedureFact] = field(default_factory=list)
    drugs: list[DrugExposure] = field(default_factory=list)
    immunizations: list[ImmunizationFact] = field(default_factory=list)
    stages: list[StageFact] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    given_for_request: defaultdict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    """When each MedicationRequest (by "MedicationRequest/id") was given, from its administrations."""
    _units: dict[str | None, str | None] = field(default_factory=dict)

    def unit(self, written: str | None) -> str | None:
        """``normalise_unit`` with the mappings' aliases, once per distinct unit string a call."""
        if written not in self._units:
            self._units[written] = normalise_unit(written, self.mappings.unit_aliases)
        return self._units[written]

    def add_stage(
        self, codings: list[tuple[str, str]], text: str, when: datetime | None, source: SourceRef
    ) -> None:
        """A stage group from SNOMED codes, else from text ("Stage IIIB"); nothing if neither says one."""
        snomed_stage = self.mappings.staging.snomed_stage
        stage = next((snomed_stage[c] for _, c in codings if c in snomed_stage), None)
        if stage is None:
            match = _STAGE_TEXT.search(text)
            if match:
                stage = _STAGE_NUMERALS[match.group(1).upper()]
        if stage is not None:
            self.stages.append(
                StageFact(stage=stage, text=text or f"stage {stage}", when=when, source=source)
            )
