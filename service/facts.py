"""FHIR R4 resources -> the small typed facts the engine understands.

FHIR shapes stop here: LOINC lookups, UCUM normalisation, statuses, reference
ranges, partial dates and dose arithmetic all live in this module, so the engine
never sees a resource.  Resources are read as plain JSON (validating thousands of
Observations with full models costs more than the whole evaluation); anything
malformed is skipped and named in ``PatientFacts.data_problems``, which the cards
show, rather than failing the call.
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from service.mappings import Mappings
from service.units import UnitConversionError, convert, normalise_unit

__all__ = [
    "ADMINISTRATIONS",
    "IMMUNIZATIONS",
    "MEDICATION_REQUESTS",
    "PROCEDURES",
    "Diagnosis",
    "DrugExposure",
    "LabResult",
    "PatientFacts",
    "SourceRef",
    "StageFact",
    "TestResult",
    "age_in_years",
    "build_facts",
    "concept_codings",
    "concept_text",
    "draft_order_exposures",
    "unique_resources",
    "medication_concept",
    "parse_fhir_datetime",
]

LOINC = "http://loinc.org"
PROCEDURES = "procedures"
IMMUNIZATIONS = "immunizations"
MEDICATION_REQUESTS = "medication-requests"  # a source whose loss makes drug criteria unknown
ADMINISTRATIONS = "medication-administrations"
"""Keys of ``PatientFacts.unavailable`` (and the prefetch keys) for the two sources only some
criteria read (and the MedicationAdministrations); the rest of that dict is keyed by analyte or test."""
_IGNORED_OBSERVATION_STATUSES = {"entered-in-error", "cancelled", "registered"}
_IGNORED_STATEMENT_STATUSES = {"entered-in-error", "not-taken", "intended"}
_ACTIVE_CLINICAL_STATUSES = {"active", "recurrence", "relapse"}
_EXCLUDED_VERIFICATION = {"refuted", "entered-in-error"}
_BOUND_COMPARATORS = {"<", "<=", ">", ">="}
# A dose counted in tablets or capsules, and a single "N MG" strength in the product name.
_DOSE_FORM_UNIT = re.compile(r"(?i)^\{?(tbl|tab|tablet|tablets|cap|capsule|capsules)\}?$")
_STRENGTH = re.compile(r"(?i)(?<![\d.])(\d+(?:\.\d+)?)\s*mg\b(\s*/)?")
# "unconfirmed" is the parent of provisional and differential: none is an established diagnosis.
_UNCONFIRMED_VERIFICATION = {"unconfirmed", "provisional", "differential"}
_IGNORED_ADMINISTRATION_STATUSES = {"entered-in-error", "not-done"}
# Procedures that did not happen (or not yet) say nothing about the patient's history;
# one of unknown status is kept (a dialysis record without a status is still dialysis).
_IGNORED_PROCEDURE_STATUSES = {"entered-in-error", "not-done", "preparation"}
_IGNORED_IMMUNIZATION_STATUSES = {"entered-in-error", "not-done"}
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


@dataclass(frozen=True)
class SourceRef:
    """Which resource (and version) a fact came from."""

    resource_type: str
    id: str
    version_id: str | None = None

    def __str__(self) -> str:
        base = f"{self.resource_type}/{self.id}"
        return f"{base}/_history/{self.version_id}" if self.version_id else base


@dataclass(frozen=True)
class LabResult:
    analyte: str
    value: float | None
    unit: str | None
    when: datetime | None
    source: SourceRef
    code: str
    display: str
    reference_high: tuple[float, str | None] | None = None
    unit_problem: str | None = None
    comparator: str | None = None  # '<', '<=', '>', '>=': the value is a bound, not a measurement
    derivation: str | None = None


@dataclass(frozen=True)
class TestResult:
    test: str
    polarity: str | None
    text: str
    when: datetime | None
    source: SourceRef


@dataclass(frozen=True)
class Diagnosis:
    codings: tuple[tuple[str, str], ...]
    text: str
    display: str
    clinical_status: str | None
    onset: datetime | None
    abatement: datetime | None
    recorded: datetime | None
    source: SourceRef
    is_procedure: bool = False
    unconfirmed: bool = False  # verificationStatus unconfirmed, provisional or differential

    @property
    def is_active(self) -> bool:
        if self.clinical_status is None:
            return self.abatement is None
        return self.clinical_status in _ACTIVE_CLINICAL_STATUSES


@dataclass(frozen=True)
class DrugExposure:
    codings: tuple[tuple[str, str], ...]
    text: str
    status: str
    start: datetime | None
    end: datetime | None
    source: SourceRef
    dose_mg_per_day: float | None = None
    dose_problem: str | None = None
    route: str = ""
    unidentified: str | None = None
    """Why the drug cannot be named (a medicationReference to a Medication not in the data)."""
    last_evidence: tuple[datetime, str] | None = None
    """The newest dated sign of an order being acted on, and what it is ("authored", "given")."""


@dataclass(frozen=True)
class StageFact:
    """A cancer stage group (1-4) from a staging Observation or Condition.stage."""

    stage: int
    text: str
    when: datetime | None
    source: SourceRef


@dataclass
class PatientFacts:
    patient_id: str
    birth_date: date | None = None
    sex: str | None = None
    labs: dict[str, list[LabResult]] = field(default_factory=dict)
    tests: dict[str, list[TestResult]] = field(default_factory=dict)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    procedures: list[Diagnosis] = field(default_factory=list)
    drugs: list[DrugExposure] = field(default_factory=list)
    immunizations: list[DrugExposure] = field(default_factory=list)  # seen only by classes that include them
    draft_orders: list[DrugExposure] = field(default_factory=list)  # order-select: the selected drafts
    inputs: list[SourceRef] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    stages: list[StageFact] = field(default_factory=list)
    deceased: bool = False
    birth_date_latest: date | None = None  # the last day a partial birthDate ("1935-11") allows


_STAGE_TEXT = re.compile(r"(?i)(?:\bstage\s*|^\s*)(IV|III|II|I|4|3|2|1)(?:[ABC]\d?)?\b")
_STAGE_NUMERALS = {"I": 1, "II": 2, "III": 3, "IV": 4, "1": 1, "2": 2, "3": 3, "4": 4}
# A reference range given only as text: "0-40 U/L", "7 - 56", "< 1.2 mg/dL", "<=40".
_REFERENCE_TEXT = re.compile(
    r"^\s*(?:\d+(?:\.\d+)?\s*(?:-|–|to)\s*|(?:<=?|≤)\s*)(?P<high>\d+(?:\.\d+)?)\s*(?P<unit>[^\s\d][^\s]*)?\s*$"
)
_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def parse_fhir_datetime(value: Any) -> datetime | None:
    """Parse a FHIR date/dateTime/instant; partial dates take their first day; naive is UTC."""
    if not isinstance(value, str) or not value:
        return None
    match = _DATE_RE.match(value) if len(value) <= 11 else None  # longer text has a time part
    if match:
        year, month, day = match.groups()
        return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ref(resource: dict[str, Any]) -> SourceRef:
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    # A versionId that is not a FHIR id (a number, an object) cannot name a version: dropped.
    version_id = version if isinstance(version, str) and version else None
    return SourceRef(str(resource.get("resourceType")), str(resource.get("id")), version_id)


def concept_codings(concept: Any) -> list[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept, tolerating anything that is not one."""
    if not isinstance(concept, dict):
        return []
    result = []
    listed = concept.get("coding")
    for coding in listed if isinstance(listed, list) else []:
        if isinstance(coding, dict):
            code = coding.get("code")
            if isinstance(code, str):
                result.append((str(coding.get("system") or ""), code))
    return result


def concept_text(concept: Any) -> str:
    """The concept's text and codings' displays, de-duplicated, joined with ' | '."""
    if not isinstance(concept, dict):
        return ""
    unique: dict[str, None] = {}
    text = concept.get("text")
    if isinstance(text, str) and text:
        unique[text] = None
    listed = concept.get("coding")
    for coding in listed if isinstance(listed, list) else []:
        if isinstance(coding, dict):
            display = coding.get("display")
            if isinstance(display, str) and display:
                unique[display] = None
    return " | ".join(unique)


def _effective(resource: dict[str, Any]) -> datetime | None:
    for key in ("effectiveDateTime", "effectiveInstant", "issued"):
        if key in resource:
            return parse_fhir_datetime(resource[key])
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        return parse_fhir_datetime(period.get("end") or period.get("start"))
    return None


def _reference_high(observation: dict[str, Any], aliases: dict[str, str]) -> tuple[float, str | None] | None:
    for reference_range in observation.get("referenceRange") or []:
        if not isinstance(reference_range, dict):
            continue
        codes = {code for _, code in concept_codings(reference_range.get("type"))}
        if codes and "normal" not in codes:
            continue
        high = reference_range.get("high")
        if isinstance(high, dict) and isinstance(high.get("value"), int | float):
            unit = normalise_unit(high.get("code") or high.get("unit"), aliases)
            return float(high["value"]), unit
        text = reference_range.get("text")
        match = _REFERENCE_TEXT.match(text) if isinstance(text, str) else None
        if match:
            return float(match.group("high")), normalise_unit(match.group("unit"), aliases)
    return None


def _last_day_meant(value: Any, first_day: date | None) -> date | None:
    """The last day a partial FHIR date means: "1935" -> 1935-12-31, "1935-11" -> 1935-11-30."""
    if first_day is None or not isinstance(value, str):
        return first_day
    if len(value) == 4:
        return date(first_day.year, 12, 31)
    if len(value) == 7:
        return date(first_day.year, first_day.month, calendar.monthrange(first_day.year, first_day.month)[1])
    return first_day


def _dict_at(resource: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The object at a path of keys, or an empty one where any step is missing or not an object."""
    value: Any = resource
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _dosage_bounds(dosages: Any) -> tuple[datetime | None, datetime | None]:
    """Earliest start and latest end of the dosages' ``timing.repeat.boundsPeriod``."""
    starts, ends = [], []
    for dosage in dosages if isinstance(dosages, list) else []:
        bounds = _dict_at(dosage, "timing", "repeat", "boundsPeriod") if isinstance(dosage, dict) else {}
        start, end = parse_fhir_datetime(bounds.get("start")), parse_fhir_datetime(bounds.get("end"))
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
    return (min(starts) if starts else None, max(ends) if ends else None)


def _medication_key(reference: str) -> str:
    """ "Medication/abc" for "Medication/abc", "https://ehr/fhir/Medication/abc/_history/2" and the like."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def _referenced_medication(
    resource: dict[str, Any], reference: dict[str, Any], medications: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The Medication a ``medicationReference`` points to: contained ("#id"), or one of ``medications``."""
    target = str(reference.get("reference") or "")
    if target.startswith("#"):
        contained_resources = resource.get("contained")
        for contained in contained_resources if isinstance(contained_resources, list) else []:
            if isinstance(contained, dict) and target == f"#{contained.get('id')}":
                return contained
        return None
    return medications.get(_medication_key(target)) if target else None


def medication_concept(resource: dict[str, Any], medications: dict[str, dict[str, Any]] | None = None) -> Any:
    """A medication resource's CodeableConcept: its own, or its referenced Medication's code
    (contained, or one of ``medications`` keyed "Medication/id", as ``_include`` brings them)."""
    concept = resource.get("medicationCodeableConcept")
    reference = resource.get("medicationReference")
    if concept is None and isinstance(reference, dict):
        concept = {"text": str(reference.get("display") or "")}
        target = _referenced_medication(resource, reference, medications or {})
        if target is not None and isinstance(target.get("code"), dict):
            concept = {**target["code"], "text": concept_text(target["code"]) or concept["text"]}
    return concept


def _unidentified(resource: dict[str, Any], concept: Any) -> str | None:
    """Why a medication record names no drug we could match, or None when it names one."""
    if concept_codings(concept) or concept_text(concept):
        return None
    reference = resource.get("medicationReference")
    if isinstance(reference, dict) and reference.get("reference"):
        return f"it refers to {reference['reference']}, which is not in the data"
    return "it records no medication code or name"


class _FactBuilder:
    def __init__(
        self, mappings: Mappings, patient_id: str, medications: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.mappings = mappings
        self.medications = medications or {}
        self.given_for_request: dict[str, list[datetime]] = defaultdict(list)
        self.facts = PatientFacts(patient_id=patient_id)
        self.labs: dict[str, list[LabResult]] = defaultdict(list)
        self.tests: dict[str, list[TestResult]] = defaultdict(list)
        self.percents: dict[str, list[LabResult]] = defaultdict(list)

    def add(self, resource: dict[str, Any]) -> None:
        kind = resource.get("resourceType")
        source = _ref(resource)
        self.facts.inputs.append(source)
        try:
            if kind == "Patient":
                self._patient(resource)
            elif kind == "Observation":
                self._observation(resource, source)
            elif kind == "Condition":
                self._condition(resource, source)
            elif kind in ("MedicationStatement", "MedicationRequest"):
                self._medication(resource, source)
            elif kind == "MedicationAdministration":
                self._administration(resource, source)
            elif kind == "Procedure":
                self._procedure(resource, source)
            elif kind == "Immunization":
                self._immunization(resource, source)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            self.facts.data_problems.append(f"{source} could not be read ({exc}); ignored")

    def _patient(self, patient: dict[str, Any]) -> None:
        birth = parse_fhir_datetime(patient.get("birthDate"))
        self.facts.birth_date = birth.date() if birth else None
        self.facts.birth_date_latest = _last_day_meant(patient.get("birthDate"), self.facts.birth_date)
        gender = patient.get("gender")
        self.facts.sex = gender if isinstance(gender, str) else None
        self.facts.deceased = patient.get("deceasedBoolean") is True or "deceasedDateTime" in patient

    def _observation(self, observation: dict[str, Any], source: SourceRef) -> None:
        if observation.get("status") in _IGNORED_OBSERVATION_STATUSES:
            return
        codings = concept_codings(observation.get("code"))
        loinc_codes = [code for system, code in codings if system == LOINC or not system]
        when = _effective(observation)
        for code in loinc_codes:
            analyte = self.mappings.analyte_by_loinc.get(code)
            if analyte is not None:
                self._numeric(observation, analyte, code, when, source)
                return
            percent_of = self.mappings.percent_analyte_by_loinc.get(code)
            if percent_of is not None:
                self._percent(observation, percent_of, code, when, source)
                return
            if code in self.mappings.staging.loinc:
                concept = observation.get("valueCodeableConcept")
                self._stage(
                    concept_codings(concept),
                    concept_text(concept) or str(observation.get("valueString") or ""),
                    when,
                    source,
                )
                return
            test = self.mappings.qualitative_test_by_loinc.get(code)
            if test is not None:
                self._qualitative(observation, test, when, source)
                return
        components = observation.get("component")
        components = [c for c in components if isinstance(c, dict)] if isinstance(components, list) else []
        genomics = self.mappings.roles.genomics
        if set(genomics.variant_panel_loinc) & set(loinc_codes):
            for component in components:
                if set(genomics.gene_studied_loinc) & {c for _, c in concept_codings(component.get("code"))}:
                    for _, gene in concept_codings(component.get("valueCodeableConcept")):
                        test = self.mappings.qualitative_test_by_gene.get(gene)
                        if test is not None:
                            self._qualitative(observation, test, when, source)
                            return
            return
        # A panel whose results are components (a CBC as one Observation): each component
        # with an analyte's LOINC code is a result of its own, dated and sourced by the panel.
        for component in components:
            for system, code in concept_codings(component.get("code")):
                analyte = self.mappings.analyte_by_loinc.get(code) if system in (LOINC, "") else None
                if analyte is not None:
                    self._numeric(component, analyte, code, when, source)
                    break

    def _numeric(
        self,
        observation: dict[str, Any],
        analyte: str,
        code: str,
        when: datetime | None,
        source: SourceRef,
    ) -> None:
        definition = self.mappings.analytes[analyte]
        value: float | None = None
        unit: str | None = None
        problem: str | None = None
        comparator: str | None = None
        quantity = observation.get("valueQuantity")
        if isinstance(quantity, dict):
            raw_value = quantity.get("value")
            if isinstance(raw_value, bool) or not isinstance(raw_value, (int, float)):
                self.facts.data_problems.append(f"{source} has no numeric value; ignored")
                return
            raw_comparator = quantity.get("comparator")
            if raw_comparator is not None:
                comparator = raw_comparator if isinstance(raw_comparator, str) else repr(raw_comparator)
            if comparator and comparator not in _BOUND_COMPARATORS:
                problem = f"value is qualified ('{comparator}{raw_value}')"
            value = float(raw_value)
            unit = normalise_unit(quantity.get("code") or quantity.get("unit"), self.mappings.unit_aliases)
            if unit is None and definition.unit.startswith("{"):
                unit = definition.unit
        elif isinstance(observation.get("valueInteger"), int):
            value, unit = float(observation["valueInteger"]), definition.unit
        elif isinstance(observation.get("valueCodeableConcept"), dict) and definition.answer_scores:
            for _, answer in concept_codings(observation["valueCodeableConcept"]):
                if answer in definition.answer_scores:
                    value, unit = definition.answer_scores[answer], definition.unit
                    break
        if value is None and definition.text_scores:
            said = " ".join(
                [
                    str(observation.get("valueString") or ""),
                    concept_text(observation.get("valueCodeableConcept")),
                ]
            ).lower()
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
            self.facts.data_problems.append(f"{source}: {definition.display} value not recognised")
        elif unit is None:
            problem = problem or "the result has no unit"
        self.labs[analyte].append(
            LabResult(
                analyte=analyte,
                value=value,
                unit=unit,
                when=when,
                source=source,
                code=code,
                display=concept_text(observation.get("code")) or definition.display,
                reference_high=_reference_high(observation, self.mappings.unit_aliases),
                unit_problem=problem,
                comparator=comparator if comparator in _BOUND_COMPARATORS else None,
            )
        )

    def _percent(
        self, observation: dict[str, Any], analyte: str, code: str, when: datetime | None, source: SourceRef
    ) -> None:
        quantity = observation.get("valueQuantity")
        if (
            not isinstance(quantity, dict)
            or isinstance(quantity.get("value"), bool)
            or not isinstance(quantity.get("value"), int | float)
        ):
            return
        unit = normalise_unit(quantity.get("code") or quantity.get("unit"), self.mappings.unit_aliases)
        if unit != "%":
            self.facts.data_problems.append(f"{source}: differential percentage in '{unit}', not %; ignored")
            return
        self.percents[analyte].append(
            LabResult(
                analyte=analyte,
                value=float(quantity["value"]),
                unit="%",
                when=when,
                source=source,
                code=code,
                display=concept_text(observation.get("code")) or code,
            )
        )

    def _stage(
        self, codings: list[tuple[str, str]], text: str, when: datetime | None, source: SourceRef
    ) -> None:
        stage = next(
            (
                self.mappings.staging.snomed_stage[c]
                for _, c in codings
                if c in self.mappings.staging.snomed_stage
            ),
            None,
        )
        if stage is None:
            match = _STAGE_TEXT.search(text)
            if match:
                stage = _STAGE_NUMERALS[match.group(1).upper()]
        if stage is not None:
            self.facts.stages.append(
                StageFact(stage=stage, text=text or f"stage {stage}", when=when, source=source)
            )

    def _derive_absolute_counts(self) -> None:
        """ANC/ALC from WBC x differential %, where no absolute count shares the specimen time."""
        white_cells = {
            r.when: r
            for r in self.labs.get(self.mappings.roles.analytes.white_blood_cell_count, [])
            if r.when is not None
        }
        for analyte, percents in self.percents.items():
            measured = {r.when for r in self.labs.get(analyte, [])}
            for percent in percents:
                total = white_cells.get(percent.when) if percent.when is not None else None
                if total is None or percent.when in measured or total.value is None or total.unit is None:
                    continue
                try:
                    per_litre = convert(total.value, total.unit, "10*9/L")
                except UnitConversionError:
                    continue
                self.labs[analyte].append(
                    LabResult(
                        analyte=analyte,
                        value=round(per_litre * (percent.value or 0) / 100, 3),
                        unit="10*9/L",
                        when=percent.when,
                        source=percent.source,
                        code=percent.code,
                        display=self.mappings.analytes[analyte].display,
                        derivation=f"computed from WBC {total.value:g} {total.unit} × {percent.value:g} %, {total.source}",
                    )
                )

    def _qualitative(
        self, observation: dict[str, Any], test: str, when: datetime | None, source: SourceRef
    ) -> None:
        answers = self.mappings.qualitative_answers
        texts: list[str] = []
        codes: list[str] = []
        for key in ("valueCodeableConcept", "interpretation"):
            concepts = observation.get(key)
            for concept in concepts if isinstance(concepts, list) else [concepts]:
                codes += [code for _, code in concept_codings(concept)]
                texts.append(concept_text(concept))
        if isinstance(observation.get("valueString"), str):
            texts.append(observation["valueString"])
        if isinstance(observation.get("valueBoolean"), bool):
            texts.append("positive" if observation["valueBoolean"] else "negative")
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
        self.tests[test].append(
            TestResult(
                test=test, polarity=polarity, text=" | ".join(t for t in texts if t), when=when, source=source
            )
        )

    def _condition(self, condition: dict[str, Any], source: SourceRef) -> None:
        verification = {code for _, code in concept_codings(condition.get("verificationStatus"))}
        if verification & _EXCLUDED_VERIFICATION:
            return
        clinical = [code for _, code in concept_codings(condition.get("clinicalStatus"))]
        onset = parse_fhir_datetime(condition.get("onsetDateTime"))
        if onset is None and isinstance(condition.get("onsetPeriod"), dict):
            onset = parse_fhir_datetime(condition["onsetPeriod"].get("start"))
        for stage in condition.get("stage") or []:
            if isinstance(stage, dict):
                summary = stage.get("summary")
                self._stage(concept_codings(summary), concept_text(summary), onset, source)
        staged = [
            c for c in concept_codings(condition.get("code")) if c[1] in self.mappings.staging.snomed_stage
        ]
        if staged:  # "Non-small cell carcinoma of lung, TNM stage 1": the diagnosis carries its stage
            self._stage(staged, concept_text(condition.get("code")), onset, source)
        abatement = parse_fhir_datetime(condition.get("abatementDateTime"))
        if abatement is None and isinstance(condition.get("abatementPeriod"), dict):
            abatement = parse_fhir_datetime(condition["abatementPeriod"].get("end"))
        named = concept_text(condition.get("code"))
        self.facts.diagnoses.append(
            Diagnosis(
                codings=tuple(concept_codings(condition.get("code"))),
                text=named.lower(),
                display=named or "condition",
                clinical_status=clinical[0] if clinical else None,
                onset=onset,
                abatement=abatement,
                recorded=parse_fhir_datetime(condition.get("recordedDate")),
                unconfirmed=bool(verification & _UNCONFIRMED_VERIFICATION),
                source=source,
            )
        )

    def _procedure(self, procedure: dict[str, Any], source: SourceRef) -> None:
        """A Procedure as a dated entry: active while in progress, history once completed."""
        status = str(procedure.get("status") or "unknown")
        if status in _IGNORED_PROCEDURE_STATUSES:
            return
        start = end = None
        period = procedure.get("performedPeriod")
        if isinstance(period, dict):
            start, end = parse_fhir_datetime(period.get("start")), parse_fhir_datetime(period.get("end"))
            if start is not None and end is not None and end < start:
                start, end = end, start  # a reversed period: its later date is when it ended
        elif "performedDateTime" in procedure:
            start = end = parse_fhir_datetime(procedure["performedDateTime"])
        in_progress = status in ("in-progress", "on-hold")
        named = concept_text(procedure.get("code"))
        self.facts.procedures.append(
            Diagnosis(
                codings=tuple(concept_codings(procedure.get("code"))),
                text=named.lower(),
                display=named or "procedure",
                clinical_status="active" if in_progress else f"procedure {status}",
                onset=start,
                abatement=None if in_progress else end,
                recorded=None,
                source=source,
                is_procedure=True,
            )
        )

    def _immunization(self, immunization: dict[str, Any], source: SourceRef) -> None:
        """A vaccination given on a day; only drug classes that include immunizations see it."""
        status = str(immunization.get("status") or "unknown")
        if status in _IGNORED_IMMUNIZATION_STATUSES:
            return
        given = parse_fhir_datetime(immunization.get("occurrenceDateTime"))
        concept = immunization.get("vaccineCode")
        self.facts.immunizations.append(
            DrugExposure(
                codings=tuple(concept_codings(concept)),
                text=concept_text(concept),
                status=status,
                start=given,
                end=given,
                source=source,
            )
        )

    def _medication(self, statement: dict[str, Any], source: SourceRef) -> None:
        status = str(statement.get("status") or "unknown")
        if status in _IGNORED_STATEMENT_STATUSES:
            return
        concept = medication_concept(statement, self.medications)
        start = end = None
        period = statement.get("effectivePeriod")
        if isinstance(period, dict):
            start, end = parse_fhir_datetime(period.get("start")), parse_fhir_datetime(period.get("end"))
        elif "effectiveDateTime" in statement:
            start = end = parse_fhir_datetime(statement["effectiveDateTime"])
            if status == "active":
                end = None
        evidence = [(start, "started"), (end, "ended")]
        if statement.get("resourceType") == "MedicationRequest":
            # The course is the dosage's timing bounds where given, else the prescription's
            # validity; an ended request without either ended when it was written.
            bounds = _dosage_bounds(statement.get("dosageInstruction"))
            validity = _dict_at(statement, "dispenseRequest", "validityPeriod")
            authored = parse_fhir_datetime(statement.get("authoredOn"))
            start = bounds[0] or authored
            end = None
            if status != "active":
                end = bounds[1] or parse_fhir_datetime(validity.get("end"))
                if status == "completed" and end is None:
                    end = start
            evidence = [(authored, "authored"), (bounds[0], "dosage starts"), (bounds[1], "dosage ends")]
        dose, problem, route = self._daily_dose(
            statement.get("dosage") or statement.get("dosageInstruction"), concept_text(concept)
        )
        dated = [(moment, what) for moment, what in evidence if moment is not None]
        self.facts.drugs.append(
            DrugExposure(
                codings=tuple(concept_codings(concept)),
                text=concept_text(concept),
                status=status,
                start=start,
                end=end,
                source=source,
                dose_mg_per_day=dose,
                dose_problem=problem,
                route=route,
                unidentified=_unidentified(statement, concept),
                last_evidence=max(dated, key=lambda item: item[0]) if dated else None,
            )
        )

    def _administration(self, administration: dict[str, Any], source: SourceRef) -> None:
        """A dose given (an infusion of chemotherapy): the most precise date a washout can start from."""
        status = str(administration.get("status") or "unknown")
        if status in _IGNORED_ADMINISTRATION_STATUSES:
            return
        concept = medication_concept(administration, self.medications)
        start = end = parse_fhir_datetime(administration.get("effectiveDateTime"))
        period = administration.get("effectivePeriod")
        if isinstance(period, dict):
            start, end = parse_fhir_datetime(period.get("start")), parse_fhir_datetime(period.get("end"))
            start = start or end
        running = status in ("in-progress", "on-hold")
        given = end or start
        request = _dict_at(administration, "request").get("reference")
        if isinstance(request, str) and given is not None:
            self.given_for_request[request.split("/_history/")[0]].append(given)
        self.facts.drugs.append(
            DrugExposure(
                codings=tuple(concept_codings(concept)),
                text=concept_text(concept),
                status="active" if running else status,
                start=start,
                end=None if running else end,
                source=source,
                dose_problem="an administration records one dose, not a daily dose",
                route=concept_text(_dict_at(administration, "dosage").get("route")).lower(),
                unidentified=_unidentified(administration, concept),
                last_evidence=(given, "given") if given is not None else None,
            )
        )

    def _daily_dose(self, dosages: Any, product: str = "") -> tuple[float | None, str | None, str]:
        """The daily dose in mg over every dosage line, the reason there is none, and the route.

        Lines with the same ``sequence`` (or none) are taken at the same time (a morning and
        an evening dose) and add up; lines with different ``sequence`` numbers follow one
        another (a taper), so which one applies now cannot be told from the order alone.
        """
        lines = [d for d in dosages if isinstance(d, dict)] if isinstance(dosages, list) else []
        if not lines:
            return None, "no dosage recorded", ""
        route = next((r for r in (concept_text(d.get("route")).lower() for d in lines) if r), "")
        per_line = [self._line_dose(line, product) for line in lines]
        problem = next((p for _, p in per_line if p is not None), None)
        if problem is not None:
            return None, problem, route
        doses = [dose or 0.0 for dose, _ in per_line]
        steps: dict[Any, float] = defaultdict(float)
        for line, dose in zip(lines, doses, strict=True):
            steps[line.get("sequence")] += dose
        if len(steps) > 1:
            listed = ", ".join(f"{dose:g}" for dose in steps.values())
            return (
                None,
                f"the dosage changes over time ({listed} mg/day in turn); confirm the current dose",
                route,
            )
        return sum(doses), None, route

    def _line_dose(self, dosage: dict[str, Any], product: str) -> tuple[float | None, str | None]:
        """One dosage line's mg per day, or why it has none."""
        quantity = None
        for dose_and_rate in dosage.get("doseAndRate") or []:
            if isinstance(dose_and_rate, dict) and isinstance(dose_and_rate.get("doseQuantity"), dict):
                quantity = dose_and_rate["doseQuantity"]
                break
        if quantity is None or not isinstance(quantity.get("value"), int | float):
            return None, f"no structured dose ({dosage.get('text') or 'no text'})"
        unit = normalise_unit(quantity.get("code") or quantity.get("unit"), self.mappings.unit_aliases)
        try:
            milligrams = convert(float(quantity["value"]), unit or "", "mg")
        except UnitConversionError:
            # "3 {tbl}" of "predniSONE 5 MG Oral Tablet": the strength is in the product's name
            strengths = _STRENGTH.findall(product) if _DOSE_FORM_UNIT.match(str(unit or "")) else []
            # one strength, and not a concentration ("15 MG/5ML") or a combination product
            if len({mg for mg, _ in strengths}) != 1 or any(per for _, per in strengths):
                return None, f"dose unit '{unit}' is not a mass"
            milligrams = float(quantity["value"]) * float(strengths[0][0])
        per_day = self._doses_per_day(dosage.get("timing"))
        if per_day is None:
            return None, f"no dosing frequency ({dosage.get('text') or 'no text'})"
        return milligrams * per_day, None

    @staticmethod
    def _doses_per_day(timing: Any) -> float | None:
        if not isinstance(timing, dict):
            return None
        repeat = timing.get("repeat")
        if isinstance(repeat, dict) and repeat.get("period") is not None:
            frequency = float(repeat.get("frequency") or 1)
            days = float(repeat["period"]) * _PERIOD_UNIT_DAYS.get(repeat.get("periodUnit") or "d", 1)
            return frequency / days if days > 0 else None
        codes = [code.upper() for _, code in concept_codings(timing.get("code"))]
        for code in codes:
            if code in _TIMING_CODES_PER_DAY:
                return float(_TIMING_CODES_PER_DAY[code])
        return None

    def _link_administrations(self) -> None:
        """An order's newest administration is its newest evidence of being acted on."""
        for index, drug in enumerate(self.facts.drugs):
            given = self.given_for_request.get(f"{drug.source.resource_type}/{drug.source.id}")
            if drug.source.resource_type != "MedicationRequest" or not given:
                continue
            newest = max(given)
            if drug.last_evidence is None or newest > drug.last_evidence[0]:
                self.facts.drugs[index] = replace(drug, last_evidence=(newest, "given"))

    def finish(self) -> PatientFacts:
        self._derive_absolute_counts()
        self._link_administrations()

        def newest_first(item: LabResult | TestResult) -> datetime:
            return item.when or datetime.min.replace(tzinfo=UTC)

        self.facts.labs = {k: sorted(v, key=newest_first, reverse=True) for k, v in self.labs.items()}
        self.facts.tests = {k: sorted(v, key=newest_first, reverse=True) for k, v in self.tests.items()}
        return self.facts


def build_facts(patient_id: str, resources: list[dict[str, Any]], mappings: Mappings) -> PatientFacts:
    """Turn one patient's resources into facts; unreadable resources become data problems."""
    medications = {f"Medication/{r.get('id')}": r for r in resources if r.get("resourceType") == "Medication"}
    builder = _FactBuilder(mappings, patient_id, medications)
    for resource in resources:
        builder.add(resource)
    return builder.finish()


def age_in_years(birth_date: date, at: datetime) -> int:
    """Completed years at ``at`` (a birthday on the evaluation day counts)."""
    on = at.date()
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


def draft_order_exposures(draft_orders: Any, selections: list[str]) -> list[DrugExposure]:
    """The selected draft medication orders of an order-select call, as drug exposures.

    Draft orders come from the EHR's order composer and may be half-filled: entries that
    are not resources, or have no medication, are skipped rather than refused (the
    clinician is still typing).  With no ``selections`` every draft counts.
    """
    exposures: list[DrugExposure] = []
    entries = draft_orders.get("entry") if isinstance(draft_orders, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        source = SourceRef(str(resource.get("resourceType")), str(resource.get("id")))
        if selections and str(source) not in selections:
            continue
        concept = medication_concept(resource)
        codings, text = concept_codings(concept), concept_text(concept)
        if codings or text:
            exposures.append(DrugExposure(tuple(codings), text, "draft", None, None, source))
    return exposures


def unique_resources(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One resource per type and id, the first one seen kept: the same resource may arrive
    under two prefetch keys or searches, and must count once (hook and pre-screen alike)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        seen.setdefault((str(resource.get("resourceType")), str(resource.get("id"))), resource)
    return list(seen.values())
