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
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from service.errors import ConfigurationError
from service.sandbox._resources import ResourceWriter
from service.settings import REPO_ROOT

__all__ = [
    "BLOCKS_FILE",
    "PATIENTS_DIR",
    "Block",
    "BlockUse",
    "Condition",
    "Entry",
    "Expected",
    "Immunization",
    "Medication",
    "Observation",
    "PatientFile",
    "Procedure",
    "Series",
    "TrialExpectation",
    "build_resources",
    "load_blocks",
    "patient_paths",
    "patient_resources",
    "read_patient_file",
    "read_patient_files",
]

PATIENTS_DIR = REPO_ROOT / "deploy" / "sandbox" / "patients"
BLOCKS_FILE = REPO_ROOT / "deploy" / "sandbox" / "blocks.yaml"

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
    def _one_value(self) -> Observation:
        if (self.value is None) != (self.unit is None):
            raise ValueError("value and unit go together")
        forms = ("value", "value_integer", "result", "value_coding", "value_text")
        given = [form for form in forms if getattr(self, form) is not None]
        if len(given) > 1:
            raise ValueError(f"one value at most, found {', '.join(given)}")
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

    def kind(self) -> tuple[str, BaseModel]:
        """The entry's kind and its fields."""
        kind = next(k for k in _KINDS if getattr(self, k) is not None)
        spec: BaseModel = getattr(self, kind)
        return kind, spec

    def code(self) -> str:
        """What ``change`` finds the entry by: its LOINC, its code or its CVX code."""
        spec = self.kind()[1]
        return str(getattr(spec, "loinc", None) or getattr(spec, "code", None) or getattr(spec, "cvx", ""))


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


def _changed(entry: Entry, use: BlockUse, where: str) -> Entry:
    """The block's entry with the use's ``days_ago`` and its ``change`` for the entry's code."""
    kind, spec = entry.kind()
    fields = spec.model_dump(exclude_unset=True)
    if use.days_ago is not None and "days_ago" in type(spec).model_fields:
        fields["days_ago"] = use.days_ago
    fields.update(use.change.get(entry.code(), {}))
    try:
        return Entry.model_validate({kind: fields})
    except ValidationError as exc:
        raise ConfigurationError(f"{where}: change of '{entry.code()}': {_problems(exc)}") from exc


def _series(series: Series) -> list[Entry]:
    return [
        Entry(
            observation=Observation(
                loinc=series.loinc,
                value=series.values[index % len(series.values)],
                unit=series.unit,
                days_ago=series.first_days_ago + index * series.every_days,
            )
        )
        for index in range(series.count)
    ]


def _flatten(
    items: Iterable[BlockUse | Entry], blocks: dict[str, Block], where: str, within: tuple[str, ...] = ()
) -> list[Entry]:
    """The entries with every block used replaced by its (changed) entries, and series expanded."""
    flat: list[Entry] = []
    for item in items:
        if isinstance(item, Entry):
            flat += _series(item.series) if item.series else [item]
            continue
        if item.block not in blocks:
            known = ", ".join(sorted(blocks))
            raise ConfigurationError(f"{where}: block: unknown block '{item.block}'; one of: {known}")
        if item.block in within:
            raise ConfigurationError(f"{where}: block: '{item.block}' uses itself ({' > '.join(within)})")
        inner = _flatten(blocks[item.block].entries, blocks, where, (*within, item.block))
        for code in item.change:
            if not any(entry.code() == code for entry in inner):
                raise ConfigurationError(f"{where}: change: block '{item.block}' has no entry coded '{code}'")
        flat += [_changed(entry, item, where) for entry in inner]
    return flat


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
    writer = ResourceWriter(patient_id, today)
    resources = [writer.patient(gender, age, deceased_days_ago)]
    for entry in _flatten(items, blocks, where or patient_id):
        kind, spec = entry.kind()
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
