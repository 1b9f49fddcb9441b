"""Trial criteria as data: pydantic models of ``criteria/*.yaml`` and their loader.

Each criterion holds either one computable ``rule`` (a discriminated union on
``kind``, with a closed vocabulary) or ``requires_clinician_review`` with a reason.
A rule states what must hold for the patient to stay eligible, for exclusion
criteria too ("FEV1 < 2 L" excludes, so the rule is FEV1 >= 2 L), which keeps the
engine free of polarity flips.  ``criteria/schema.json`` is generated from these
models so there is one source of truth.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from service.errors import ConfigurationError
from service.mappings import Mappings

__all__ = [
    "LABEL_MAX_LENGTH",
    "Arm",
    "Criterion",
    "CriteriaSet",
    "PerformanceStatusRule",
    "Rule",
    "StageRule",
    "Trial",
    "criteria_json_schema",
    "criteria_from_raw",
    "criteria_from_snapshot",
    "load_criteria",
    "walk_rules",
]

Comparison = Literal["ge", "gt", "le", "lt"]

LABEL_MAX_LENGTH = 60
"""A label must fit one line of an EHR side panel about 400 px wide."""

Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=LABEL_MAX_LENGTH),
    Field(
        description="What a clinician reads in a card or side panel: a short name in clinical "
        "words, never an id or internal tag (e.g. 'Absolute neutrophil count', 'Live vaccine "
        "in the last 28 days', 'Cohort 2 (PD-L1 TPS ≥ 1%)').",
    ),
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgeRule(_Frozen):
    """Age in whole years at the evaluation time, from Patient.birthDate."""

    kind: Literal["age"]
    min_years: int | None = None
    max_years: int | None = None
    above_max: Literal["not_met", "needs_review"] = "not_met"
    above_max_note: str | None = None


class ConditionalLimit(_Frozen):
    """A different limit that applies when the patient has a condition (e.g. liver metastases)."""

    when_value_set: str
    value: float | None = None
    times_uln: float | None = None


class LabRule(_Frozen):
    """A numeric Observation compared with a fixed limit or a multiple of the ULN."""

    kind: Literal["lab"]
    analyte: str
    comparison: Comparison
    value: float | None = None
    unit: str | None = None
    times_uln: float | None = None
    lookback_days: int | None = None
    protocol_window_days: int | None = None
    conditional_limits: list[ConditionalLimit] = Field(default_factory=list)
    derive_cockcroft_gault: bool = False
    max_plausible_weight_kg: float | None = Field(
        default=None,
        gt=0,
        description="With derive_cockcroft_gault, comparison ge and no body weight on record: the "
        "weight Cockcroft-Gault would need to reach the limit is computed; above this weight the "
        "criterion is not met, otherwise it stays unknown and says what weight would be needed.",
    )

    @model_validator(mode="after")
    def _one_limit(self) -> LabRule:
        if (self.value is None) == (self.times_uln is None):
            raise ValueError("give exactly one of 'value' (with 'unit') or 'times_uln'")
        if self.value is not None and self.unit is None:
            raise ValueError("'value' needs a 'unit' (UCUM)")
        if self.max_plausible_weight_kg is not None and not (
            self.derive_cockcroft_gault and self.comparison == "ge" and self.value is not None
        ):
            raise ValueError(
                "'max_plausible_weight_kg' applies only with derive_cockcroft_gault, comparison ge and a value"
            )
        return self


class NoResultRule(_Frozen):
    """Met when the analyte has no result at all (e.g. 'no available historical TPS')."""

    kind: Literal["no_result"]
    analyte: str


class NegativeTestRule(_Frozen):
    """A qualitative test must be negative, and no diagnosis of the disease may be recorded."""

    kind: Literal["negative_test"]
    test: str
    value_sets: list[str] = Field(default_factory=list)
    only_for_sex: Literal["female", "male"] | None = None
    diagnosis_within_days: int | None = Field(
        default=None,
        description="Count a recorded diagnosis only if its onset (or recording) is this recent: "
        "problem lists leave pregnancy codes active long after delivery.",
    )
    newer_negative_test_wins: bool = Field(
        default=False,
        description="A negative test newer than the diagnosis outweighs it (pregnancy; never for HIV).",
    )


class NoConditionRule(_Frozen):
    """No active (or, with ``include_history``, past) diagnosis in the value sets."""

    kind: Literal["no_condition"]
    value_sets: list[str]
    include_history: bool = False
    onset_within_days: int | None = None
    unless_value_sets: list[str] = Field(default_factory=list)
    presence_state: Literal["not_met", "unknown"] = "not_met"
    presence_note: str | None = None
    not_met_if_on_classes: list[str] = Field(default_factory=list)
    absence_state: Literal["met", "needs_review"] = Field(
        default="met",
        description="State when nothing is recorded: 'needs_review' where the problem list cannot "
        "settle it (an ECG or a report must be read), so absence is never shown as met.",
    )
    absence_note: str | None = None

    @model_validator(mode="after")
    def _absence_note_needs_review(self) -> NoConditionRule:
        if self.absence_note is not None and self.absence_state != "needs_review":
            raise ValueError("'absence_note' is shown only with absence_state: needs_review")
        return self


class HistologyRule(_Frozen):
    """The cancer's histology: met if coded as required, not met if coded as excluded."""

    kind: Literal["histology"]
    required_value_sets: list[str]
    excluded_value_sets: list[str] = Field(default_factory=list)


class NoMedicationRule(_Frozen):
    """No exposure to a drug class within a window (e.g. prior cell therapy within 20 years)."""

    kind: Literal["no_medication"]
    classes: list[str]
    within_days: int | None = None
    unless_classes: list[str] = Field(default_factory=list)
    note: str | None = None


class OnMedicationRule(_Frozen):
    """Met when a drug class is active or was taken within ``within_days``."""

    kind: Literal["on_medication"]
    classes: list[str]
    within_days: int = 0


class WashoutRule(_Frozen):
    """The last dose of a drug class must be at least ``days`` before enrolment."""

    kind: Literal["washout"]
    classes: list[str]
    days: int
    procedure_value_sets: list[str] = Field(
        default_factory=list,
        description="Procedures that count as therapy too (radiotherapy): the washout runs from "
        "the end of the last one; the value sets must have includes_procedures.",
    )
    procedure_course_days: int = Field(
        default=90,
        gt=0,
        description="A completed procedure course recorded with only its start is taken to have "
        "ended within this many days of it (a course of radiotherapy rarely runs longer).",
    )


class SteroidDoseRule(_Frozen):
    """Daily systemic corticosteroid dose in prednisone-equivalent mg must satisfy the limit."""

    kind: Literal["steroid_dose"]
    comparison: Comparison
    prednisone_mg_per_day: float


class NoDriverAlterationRule(_Frozen):
    """No EGFR/ALK/ROS1 driver: negative tests or wild-type diagnoses; positive ones exclude."""

    kind: Literal["no_driver_alteration"]
    tests: list[str]
    positive_value_sets: list[str]
    negative_value_sets: list[str]
    implying_medication_classes: list[str] = Field(default_factory=list)


class PerformanceStatusRule(_Frozen):
    """ECOG and/or Karnofsky: the newest assessment in either scale decides.

    They measure the same thing, so an ECOG 3 is not rescued by a missing Karnofsky;
    a criterion on one scale reads the other through the equivalence in the mappings.
    """

    kind: Literal["performance_status"]
    ecog_max: int | None = None
    karnofsky_min: int | None = None

    @model_validator(mode="after")
    def _a_limit(self) -> PerformanceStatusRule:
        if self.ecog_max is None and self.karnofsky_min is None:
            raise ValueError("give ecog_max, karnofsky_min or both")
        return self


class StageRule(_Frozen):
    """The newest recorded cancer stage group: met at or above ``met_from``."""

    kind: Literal["stage"]
    met_from: int
    review_from: int | None = None
    review_note: str | None = None
    met_if_value_sets: list[str] = Field(
        default_factory=list,
        description="Active conditions that establish the stage on their own (a coded distant "
        "metastasis is stage IV whatever stage group was recorded at diagnosis).",
    )


class AllRule(_Frozen):
    kind: Literal["all"]
    rules: list[Rule]


class AnyRule(_Frozen):
    kind: Literal["any"]
    rules: list[Rule]


Rule = Annotated[
    AgeRule
    | LabRule
    | NoResultRule
    | NegativeTestRule
    | NoConditionRule
    | HistologyRule
    | NoMedicationRule
    | OnMedicationRule
    | WashoutRule
    | SteroidDoseRule
    | NoDriverAlterationRule
    | PerformanceStatusRule
    | StageRule
    | AllRule
    | AnyRule,
    Field(discriminator="kind"),
]


class Criterion(_Frozen):
    id: str
    label: Label
    type: Literal["inclusion", "exclusion"]
    text: str
    source: str
    rule: Rule | None = None
    requires_clinician_review: str | None = None
    note: str | None = None
    evidence_classes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rule_or_review(self) -> Criterion:
        if (self.rule is None) == (self.requires_clinician_review is None):
            raise ValueError("give exactly one of 'rule' or 'requires_clinician_review'")
        return self


class Arm(_Frozen):
    id: str
    label: Label
    title: str
    description: str
    criteria: list[Criterion] = Field(default_factory=list)


class Disease(_Frozen):
    """The cancer the trial is for: the gate before any card is considered."""

    display: str
    value_sets: list[str]
    text: str
    source: str


class Site(_Frozen):
    name: str
    city: str | None = None
    country: str | None = None


class Trial(_Frozen):
    id: str
    title: str
    short_title: str
    registry_url: str | None = None
    registry_note: str | None = None
    sponsor: str
    phase: str
    sites: list[Site]
    recruitment_status: str
    status_as_of: str
    status_source: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1),
        Field(
            description="Where the recruitment status was read, as a card names it: "
            "'registry record', 'CancerFax trial page'.",
        ),
    ]
    status_source_date: Annotated[
        date | None,
        Field(
            strict=False,
            description="The date of that record (ISO, e.g. the registry's last update), so a "
            "card says 'Recruiting per registry record of 2022-10-21'; null when the source "
            "gives none.",
        ),
    ] = None
    interventions: list[str]
    sources: dict[str, str]
    criteria_complete: bool
    completeness_note: str | None = None
    new_therapy_warning: str | None = None
    disease: Disease
    arms: list[Arm] = Field(default_factory=list)
    inclusion: list[Criterion] = Field(default_factory=list)
    exclusion: list[Criterion] = Field(default_factory=list)

    def all_criteria(self) -> list[Criterion]:
        return [*self.inclusion, *self.exclusion, *(c for arm in self.arms for c in arm.criteria)]


class CriteriaSet(BaseModel):
    """Every trial loaded, plus the fingerprint that identifies this exact version."""

    model_config = ConfigDict(frozen=True)

    trials: list[Trial]
    fingerprint: str
    snapshot: dict[str, Any]


def criteria_json_schema() -> dict[str, Any]:
    """The JSON schema of one criteria file (written to ``criteria/schema.json``)."""
    return Trial.model_json_schema()


def walk_rules(rule: Any) -> list[Any]:
    """The rule and every rule inside it, combinators included (none for a criterion without one)."""
    if isinstance(rule, AllRule | AnyRule):
        return [rule, *(r for child in rule.rules for r in walk_rules(child))]
    return [rule] if rule is not None else []


def _check_references(trial: Trial, mappings: Mappings, path: Path) -> None:
    """Refuse a criterion that names an analyte, value set or class the mappings lack."""

    def refuse(criterion_id: str, field: str, name: str, known: list[str]) -> None:
        near = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigurationError(f"{path}: criterion '{criterion_id}': {field}: unknown name '{name}'{hint}")

    analytes = list(mappings.analytes)
    tests = list(mappings.qualitative_tests)
    value_sets = list(mappings.value_sets)
    classes = list(mappings.drug_classes)
    for name in trial.disease.value_sets:
        if name not in value_sets:
            refuse("disease", "value_sets", name, value_sets)
    for criterion in trial.all_criteria():
        for name in criterion.evidence_classes:
            if name not in classes:
                refuse(criterion.id, "evidence_classes", name, classes)
        for rule in walk_rules(criterion.rule):
            checks: list[tuple[str, list[Any], list[str]]] = [
                ("analyte", [getattr(rule, "analyte", None)], analytes),
                ("test", [getattr(rule, "test", None)], tests),
                ("tests", getattr(rule, "tests", []), tests),
                ("value_sets", getattr(rule, "value_sets", []), value_sets),
                ("unless_value_sets", getattr(rule, "unless_value_sets", []), value_sets),
                ("required_value_sets", getattr(rule, "required_value_sets", []), value_sets),
                ("excluded_value_sets", getattr(rule, "excluded_value_sets", []), value_sets),
                ("positive_value_sets", getattr(rule, "positive_value_sets", []), value_sets),
                ("negative_value_sets", getattr(rule, "negative_value_sets", []), value_sets),
                ("met_if_value_sets", getattr(rule, "met_if_value_sets", []), value_sets),
                ("procedure_value_sets", getattr(rule, "procedure_value_sets", []), value_sets),
                ("classes", getattr(rule, "classes", []), classes),
                ("unless_classes", getattr(rule, "unless_classes", []), classes),
                ("not_met_if_on_classes", getattr(rule, "not_met_if_on_classes", []), classes),
                (
                    "implying_medication_classes",
                    getattr(rule, "implying_medication_classes", []),
                    classes,
                ),
                (
                    "conditional_limits",
                    [c.when_value_set for c in getattr(rule, "conditional_limits", [])],
                    value_sets,
                ),
            ]
            for field, names, known in checks:
                for name in names:
                    if name is not None and name not in known:
                        refuse(criterion.id, field, name, known)
            if isinstance(rule, LabRule) and rule.derive_cockcroft_gault:
                if rule.analyte not in mappings.derivations("cockcroft_gault"):
                    raise ConfigurationError(
                        f"{path}: criterion '{criterion.id}': derive_cockcroft_gault: analyte "
                        f"'{rule.analyte}' is not derived by cockcroft_gault (declare it under derived "
                        "in analytes.yaml)"
                    )
            for name in getattr(rule, "procedure_value_sets", []):
                if not mappings.value_sets[name].includes_procedures:
                    raise ConfigurationError(
                        f"{path}: criterion '{criterion.id}': procedure_value_sets: value set '{name}' "
                        "is not matched against Procedures (set includes_procedures: true in the mappings)"
                    )


def _describe_error(raw: Any, loc: tuple[int | str, ...], message: str) -> str:
    """``criterion 'hemoglobin': inclusion.10.label: Field required``: the author looks for the id."""
    owner = ""
    node = raw
    for depth, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            kind = "arm" if depth >= 1 and loc[depth - 1] == "arms" else "criterion"
            owner = f"{kind} '{node['id']}': "
    field_path = ".".join(str(part) for part in loc)
    return f"{owner}{field_path}: {message}"


class _TextDatesLoader(yaml.SafeLoader):
    """YAML without implicit timestamps: a date stays the text it was written as.

    The parsed files are the criteria snapshot the audit trail stores as plain JSON,
    which a ``datetime.date`` would break; the models parse the dates they expect.
    """


_TextDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_criteria(directory: Path, mappings: Mappings) -> CriteriaSet:
    """Load every ``*.yaml`` trial file; a broken one raises with the file and field path."""
    raw_trials: dict[Path, Any] = {}
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ConfigurationError(f"{directory}: no trial criteria files (*.yaml)")
    for path in paths:
        try:
            raw_trials[path] = yaml.load(path.read_text(encoding="utf-8"), Loader=_TextDatesLoader)
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"{path}: cannot be read as YAML: {exc}") from exc
    return criteria_from_raw(raw_trials, mappings)


def criteria_from_snapshot(snapshot: dict[str, Any], mappings: Mappings) -> CriteriaSet:
    """Rebuild a recorded criteria version (audit replay).

    Versions recorded before labels were required get each criterion's and arm's id as
    its label: labels change no verdict, and a recorded decision must stay replayable.
    """
    raw = {
        Path(f"{trial_id}.yaml"): _labelled(content)
        for trial_id, content in snapshot.items()
        if trial_id != "__mappings__"
    }
    return criteria_from_raw(raw, mappings)


def _labelled(trial: Any) -> Any:
    """A copy of a recorded trial file with what later versions require and it lacked.

    Each criterion and arm without a label gets its id; a trial without ``status_source``
    gets its ``status_as_of`` text, which is where older files said the same.
    """
    if not isinstance(trial, dict):
        return trial

    def with_label(item: Any) -> Any:
        if isinstance(item, dict) and "label" not in item and isinstance(item.get("id"), str):
            return {**item, "label": item["id"]}
        return item

    def each_labelled(owner: dict[str, Any], key: str) -> dict[str, Any]:
        items = owner.get(key)
        if not isinstance(items, list):
            return owner
        return {**owner, key: [with_label(item) for item in items]}

    copy = each_labelled(each_labelled(trial, "inclusion"), "exclusion")
    if isinstance(copy.get("arms"), list):
        copy["arms"] = [
            each_labelled(with_label(arm), "criteria") if isinstance(arm, dict) else arm
            for arm in copy["arms"]
        ]
    if "status_source" not in copy and "status_as_of" in copy:
        copy["status_source"] = copy["status_as_of"]
    return copy


def criteria_from_raw(raw_trials: dict[Path, Any], mappings: Mappings) -> CriteriaSet:
    """Validate parsed trial files (path -> content); the path only names the file in errors."""
    trials: list[Trial] = []
    snapshot: dict[str, Any] = {}
    for path, raw in raw_trials.items():
        try:
            trial = Trial.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(_describe_error(raw, err["loc"], err["msg"]) for err in exc.errors())
            raise ConfigurationError(f"{path}: {problems}") from exc
        _check_references(trial, mappings, path)
        ids = [c.id for c in trial.all_criteria()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigurationError(f"{path}: duplicate criterion ids {duplicates}")
        trials.append(trial)
        snapshot[trial.id] = raw
    snapshot["__mappings__"] = mappings.source_text
    canonical = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
    fingerprint = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    return CriteriaSet(trials=trials, fingerprint=fingerprint, snapshot=snapshot)
