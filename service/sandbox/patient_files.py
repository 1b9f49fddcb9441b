"""The sandbox's synthetic patients, read from ``deploy/sandbox/patients/*.yaml``.

One YAML file per patient holds who the patient is, what the record contains in compact
entries (``observation``, ``condition``, ``medication``, ``procedure``, ``immunization``,
``series``, or a named ``block`` from ``deploy/sandbox/blocks.yaml``) and what the service
is expected to decide.  Dates are written as days before the day the patient is generated
for (``days_ago: 20``), at 09:00 UTC, so the data never goes stale.  Resource ids follow
the order of the entries (``<patient>-obs-7``), so a reload replaces rather than duplicates.

The files are validated by the models below (unknown fields refused); a broken file
raises :class:`ConfigurationError` naming the file and the field path.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from service.errors import ConfigurationError
from service.settings import REPO_ROOT

__all__ = [
    "BLOCKS_FILE",
    "PATIENTS_DIR",
    "Block",
    "Expected",
    "PatientFile",
    "TrialExpectation",
    "build_resources",
    "patient_resources",
    "load_blocks",
    "read_patient_files",
]

PATIENTS_DIR = REPO_ROOT / "deploy" / "sandbox" / "patients"
BLOCKS_FILE = REPO_ROOT / "deploy" / "sandbox" / "blocks.yaml"

SYSTEMS = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "icd10": "http://hl7.org/fhir/sid/icd-10-cm",
    "cpt": "http://www.ama-assn.org/go/cpt",
    "cvx": "http://hl7.org/fhir/sid/cvx",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
}
UCUM = "http://unitsofmeasure.org"
_ANSWERS = {
    "positive": {"system": SYSTEMS["loinc"], "code": "LA6576-8", "display": "Positive"},
    "negative": {"system": SYSTEMS["loinc"], "code": "LA6577-6", "display": "Negative"},
}
System = Literal["loinc", "snomed", "icd10", "cpt", "cvx", "rxnorm"]
Number = int | float  # an int stays an int in the resource: 240, not 240.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Coding(_Strict):
    system: System
    code: str


class Observation(_Strict):
    """A LOINC-coded result: a quantity, an integer, a positive/negative answer, a code or text."""

    loinc: str
    days_ago: float
    display: str | None = None
    category: str = "laboratory"
    status: str = "final"
    value: Number | None = None
    unit: str | None = None
    ref_high: Number | None = None
    value_integer: int | None = None
    result: Literal["positive", "negative"] | None = None
    value_coding: Coding | None = None
    value_text: str | None = None

    @model_validator(mode="after")
    def _unit_with_value(self) -> Observation:
        if (self.value is None) != (self.unit is None):
            raise ValueError("value and unit go together")
        return self


class Series(_Strict):
    """``count`` results of one LOINC code, one every ``every_days``, cycling through ``values``."""

    loinc: str
    unit: str
    values: list[Number] = Field(min_length=1)
    count: int = Field(ge=1)
    first_days_ago: float
    every_days: float


class Condition(_Strict):
    system: System
    code: str
    display: str
    onset_days_ago: float
    status: str = "active"
    abatement_days_ago: float | None = None


class Medication(_Strict):
    """A MedicationStatement; without ``end_days_ago`` it is still going on."""

    name: str
    start_days_ago: float
    end_days_ago: float | None = None
    rxnorm: str | None = None
    status: str = "completed"
    dose_mg: Number | None = None
    per_day: int = 1
    route: str | None = None


class Procedure(_Strict):
    system: System
    code: str
    display: str
    days_ago: float
    until_days_ago: float | None = None
    status: str = "completed"


class Immunization(_Strict):
    cvx: str
    display: str
    days_ago: float


class BlockUse(_Strict):
    """A named block; ``days_ago`` re-dates its results, ``change`` edits entries by code."""

    block: str
    days_ago: float | None = None
    change: dict[str, dict[str, Any]] = Field(default_factory=dict)


_KINDS = ("observation", "series", "condition", "medication", "procedure", "immunization")


class Entry(_Strict):
    """One line of a record: exactly one of the kinds, or a ``block``."""

    observation: Observation | None = None
    series: Series | None = None
    condition: Condition | None = None
    medication: Medication | None = None
    procedure: Procedure | None = None
    immunization: Immunization | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Entry:
        given = [kind for kind in _KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"an entry is exactly one of {', '.join(_KINDS)} or block; found {given}")
        return self


# Which model reads an item is decided by its ``block`` key, so an error names one model's field.
_BLOCK_USE, _ENTRY = "<block use>", "<entry>"


def _item_kind(raw: Any) -> str:
    if isinstance(raw, BlockUse) or (isinstance(raw, dict) and "block" in raw):
        return _BLOCK_USE
    return _ENTRY


Item = Annotated[
    Annotated[BlockUse, Tag(_BLOCK_USE)] | Annotated[Entry, Tag(_ENTRY)], Discriminator(_item_kind)
]


class TrialExpectation(_Strict):
    """A trial's expected status, with exactly the criteria that rule it out or are not yet met."""

    status: Literal["may_be_eligible", "ruled_out", "not_applicable"]
    rules_out: tuple[str, ...] = ()
    not_yet: tuple[str, ...] = ()


class Expected(_Strict):
    """What the service decides for this patient (patient-view, full prefetch)."""

    cards: tuple[str, ...]
    trials: dict[str, TrialExpectation]


class PatientFile(_Strict):
    id: str
    description: str
    age: int = Field(ge=0)
    gender: Literal["male", "female", "other", "unknown"]
    deceased_days_ago: float | None = None
    expected: Expected
    resources: list[Item] = Field(default_factory=list)


class Block(_Strict):
    entries: list[Item]


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot be read as YAML: {exc}") from exc


def _problems(exc: ValidationError) -> str:
    """``resources.3.observation.days_ago: Field required``; the union's tags are left out."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'] if p not in (_BLOCK_USE, _ENTRY)) or '(top level)'}: {err['msg']}"
        for err in exc.errors()
    )


def load_blocks(path: Path = BLOCKS_FILE) -> dict[str, Block]:
    """The named blocks patient files use (a diagnosis, a normal lab panel, a work-up)."""
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("blocks"), dict):
        raise ConfigurationError(f"{path}: expected a mapping 'blocks: {{name: [entries]}}'")
    blocks = {}
    for name, entries in raw["blocks"].items():
        try:
            blocks[str(name)] = Block.model_validate({"entries": entries})
        except ValidationError as exc:
            raise ConfigurationError(f"{path}: block '{name}': {_problems(exc)}") from exc
    return blocks


def patient_paths(directory: Path = PATIENTS_DIR) -> dict[str, Path]:
    """Each patient file by patient id (its file name), in file-name order."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ConfigurationError(f"{directory}: no synthetic patient files (*.yaml)")
    return {path.stem: path for path in paths}


def read_patient_file(path: Path) -> PatientFile:
    """One patient file, validated; a broken one raises naming the file and the field."""
    try:
        patient = PatientFile.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: {_problems(exc)}") from exc
    if patient.id != path.stem:
        raise ConfigurationError(f"{path}: id: '{patient.id}' differs from the file name '{path.stem}'")
    return patient


def read_patient_files(directory: Path = PATIENTS_DIR) -> list[PatientFile]:
    """Every ``*.yaml`` patient file, in file-name order."""
    return [read_patient_file(path) for path in patient_paths(directory).values()]


def _changed(entry: Entry, block: BlockUse, where: str) -> Entry:
    """The block's entry with the use's ``days_ago`` and its ``change`` for the entry's code."""
    kind = next(k for k in _KINDS if getattr(entry, k) is not None)
    spec: BaseModel = getattr(entry, kind)
    fields = spec.model_dump(exclude_unset=True)
    if block.days_ago is not None and "days_ago" in type(spec).model_fields:
        fields["days_ago"] = block.days_ago
    code = fields.get("loinc") or fields.get("code") or fields.get("cvx")
    fields.update(block.change.get(str(code), {}))
    try:
        return Entry.model_validate({kind: fields})
    except ValidationError as exc:
        raise ConfigurationError(f"{where}: change of '{code}': {_problems(exc)}") from exc


def _flatten(items: Iterable[BlockUse | Entry], blocks: dict[str, Block], where: str) -> list[Entry]:
    flat: list[Entry] = []
    for item in items:
        if isinstance(item, Entry):
            flat.append(item)
            continue
        if item.block not in blocks:
            raise ConfigurationError(
                f"{where}: block: unknown block '{item.block}'; one of: {', '.join(sorted(blocks))}"
            )
        inner = _flatten(blocks[item.block].entries, blocks, where)
        for code in item.change:
            if not any(_entry_code(e) == code for e in inner):
                raise ConfigurationError(f"{where}: change: block '{item.block}' has no entry coded '{code}'")
        flat += [_changed(entry, item, where) for entry in inner]
    return flat


def _entry_code(entry: Entry) -> str | None:
    for kind in _KINDS:
        spec = getattr(entry, kind)
        if spec is not None:
            return getattr(spec, "loinc", None) or getattr(spec, "code", None) or getattr(spec, "cvx", None)
    return None


class _Writer:
    """Turns entries into FHIR R4 resources with ids ``<patient>-<kind>-<n>`` in entry order."""

    def __init__(self, patient_id: str, today: date) -> None:
        self.id = patient_id
        self.today = today
        self.counter = 0
        self.subject = {"reference": f"Patient/{patient_id}"}

    def next_id(self, kind: str) -> str:
        self.counter += 1
        return f"{self.id}-{kind}-{self.counter}"

    def when(self, days_ago: float) -> str:
        moment = datetime.combine(self.today, time(9, 0), tzinfo=UTC) - timedelta(days=days_ago)
        return moment.isoformat().replace("+00:00", "Z")

    def observation(self, spec: Observation) -> dict[str, Any]:
        coding = {"system": SYSTEMS["loinc"], "code": spec.loinc}
        if spec.display:
            coding["display"] = spec.display
        category = {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": spec.category,
        }
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self.next_id("obs"),
            "status": spec.status,
            "category": [{"coding": [category]}],
            "code": {"coding": [coding]},
            "subject": self.subject,
            "effectiveDateTime": self.when(spec.days_ago),
        }
        if spec.value is not None:
            resource["valueQuantity"] = _quantity(spec.value, spec.unit)
        if spec.value_integer is not None:
            resource["valueInteger"] = spec.value_integer
        if spec.result is not None:
            resource["valueCodeableConcept"] = {"coding": [_ANSWERS[spec.result]]}
        if spec.value_coding is not None:
            coded = {"system": SYSTEMS[spec.value_coding.system], "code": spec.value_coding.code}
            resource["valueCodeableConcept"] = {"coding": [coded]}
        if spec.value_text is not None:
            resource["valueCodeableConcept"] = {"text": spec.value_text}
        if spec.ref_high is not None:
            resource["referenceRange"] = [{"high": _quantity(spec.ref_high, spec.unit)}]
        return resource

    def condition(self, spec: Condition) -> dict[str, Any]:
        terminology = "http://terminology.hl7.org/CodeSystem/"
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self.next_id("cond"),
            "clinicalStatus": {
                "coding": [{"system": terminology + "condition-clinical", "code": spec.status}]
            },
            "verificationStatus": {
                "coding": [{"system": terminology + "condition-ver-status", "code": "confirmed"}]
            },
            "category": [
                {"coding": [{"system": terminology + "condition-category", "code": "problem-list-item"}]}
            ],
            "code": _concept(spec.system, spec.code, spec.display),
            "subject": self.subject,
            "onsetDateTime": self.when(spec.onset_days_ago),
        }
        if spec.abatement_days_ago is not None:
            resource["abatementDateTime"] = self.when(spec.abatement_days_ago)
        return resource

    def medication(self, spec: Medication) -> dict[str, Any]:
        coding = (
            [{"system": SYSTEMS["rxnorm"], "code": spec.rxnorm, "display": spec.name}] if spec.rxnorm else []
        )
        period = {"start": self.when(spec.start_days_ago)}
        if spec.end_days_ago is not None:
            period["end"] = self.when(spec.end_days_ago)
        resource: dict[str, Any] = {
            "resourceType": "MedicationStatement",
            "id": self.next_id("med"),
            "status": spec.status,
            "medicationCodeableConcept": {"coding": coding, "text": spec.name}
            if coding
            else {"text": spec.name},
            "subject": self.subject,
            "effectivePeriod": period,
        }
        if spec.dose_mg is not None:
            dosage: dict[str, Any] = {
                "timing": {"repeat": {"frequency": spec.per_day, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": _quantity(spec.dose_mg, "mg")}],
            }
            if spec.route:
                dosage["route"] = {"text": spec.route}
            resource["dosage"] = [dosage]
        return resource

    def procedure(self, spec: Procedure) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": self.next_id("proc"),
            "status": spec.status,
            "code": _concept(spec.system, spec.code, spec.display),
            "subject": self.subject,
        }
        if spec.until_days_ago is None:
            resource["performedDateTime"] = self.when(spec.days_ago)
        else:
            resource["performedPeriod"] = {
                "start": self.when(spec.days_ago),
                "end": self.when(spec.until_days_ago),
            }
        return resource

    def immunization(self, spec: Immunization) -> dict[str, Any]:
        return {
            "resourceType": "Immunization",
            "id": self.next_id("imm"),
            "status": "completed",
            "vaccineCode": {
                "coding": [{"system": SYSTEMS["cvx"], "code": spec.cvx, "display": spec.display}]
            },
            "patient": self.subject,
            "occurrenceDateTime": self.when(spec.days_ago),
        }

    def series(self, spec: Series) -> list[dict[str, Any]]:
        return [
            self.observation(
                Observation(
                    loinc=spec.loinc,
                    value=spec.values[index % len(spec.values)],
                    unit=spec.unit,
                    days_ago=spec.first_days_ago + index * spec.every_days,
                )
            )
            for index in range(spec.count)
        ]


def _quantity(value: Number, unit: str | None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _concept(system: System, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": SYSTEMS[system], "code": code, "display": display}], "text": display}


def birth_date(today: date, age: int) -> date:
    """``age`` years and 40 days before ``today`` (the 28th at most, so every month has the day)."""
    return date(today.year - age, today.month, min(today.day, 28)) - timedelta(days=40)


def build_resources(
    patient_id: str,
    today: date,
    items: Iterable[BlockUse | Entry],
    blocks: dict[str, Block],
    *,
    age: int,
    gender: str,
    deceased_days_ago: float | None = None,
    where: str = "",
) -> list[dict[str, Any]]:
    """The FHIR resources of a record, dated relative to ``today``: the Patient, then the entries."""
    writer = _Writer(patient_id, today)
    person: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "gender": gender,
        "birthDate": birth_date(today, age).isoformat(),
        "name": [{"family": "Synthetic", "given": [patient_id]}],
    }
    if deceased_days_ago is not None:
        person["deceasedDateTime"] = writer.when(deceased_days_ago)
    resources = [person]
    for entry in _flatten(items, blocks, where or patient_id):
        if entry.series is not None:
            resources += writer.series(entry.series)
        for kind in ("observation", "condition", "medication", "procedure", "immunization"):
            spec = getattr(entry, kind)
            if spec is not None:
                resources.append(getattr(writer, kind)(spec))
    return resources


def patient_resources(
    patient: PatientFile, today: date, blocks: dict[str, Block], where: str
) -> list[dict[str, Any]]:
    """A patient file's resources, dated relative to ``today``."""
    return build_resources(
        patient.id,
        today,
        patient.resources,
        blocks,
        age=patient.age,
        gender=patient.gender,
        deceased_days_ago=patient.deceased_days_ago,
        where=where,
    )
