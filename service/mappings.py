"""Code mappings loaded from ``mappings/*.yaml``: analytes, value sets, drug classes, unit aliases.

The YAML is the clinical informaticist's; this module only validates it (a broken
file stops start-up with the file and the field path) and builds lookup indexes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import ConfigurationError
from service.units import number_text

__all__ = [
    "Analyte",
    "DrugClass",
    "Mappings",
    "QualitativeTest",
    "ValueSet",
    "load_mappings",
    "mappings_from_texts",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DefaultUpperLimit(_Frozen):
    value: float
    unit: str
    source: str


class LabOrder(_Frozen):
    """What to order when a result is missing: a LOINC code and its short name."""

    loinc: str
    label: str


class ObservationDefinition(_Frozen):
    """What every Observation-borne fact shares: its codes, search group and order hint."""

    prefetch_group: str
    display: str
    loinc: list[str]
    order_hint: str
    order: LabOrder | None = None
    lookback_days: int | None = None


class Analyte(ObservationDefinition):
    unit: str
    molar_mass_g_per_mol: float | None = None
    default_uln: DefaultUpperLimit | None = None
    answer_scores: dict[str, float] = Field(default_factory=dict)
    text_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Phrases (whole words, lower case) read from valueString or the answer's text "
        "when no answer code is recognised, e.g. 'class iii' -> 3.",
    )
    percent_of_white_cells_loinc: list[str] = Field(default_factory=list)


DERIVATION_INPUTS: dict[str, tuple[str, ...]] = {
    "white_cell_differential": ("total",),
    "cockcroft_gault": ("creatinine", "weight"),
}
"""Each derivation method and the inputs it names (``analytes.yaml`` ``derived``)."""


class DerivedAnalyte(_Frozen):
    """An analyte computed from others where none is measured (``analytes.yaml`` ``derived``)."""

    method: Literal["white_cell_differential", "cockcroft_gault"]
    inputs: dict[str, str]


class PerformanceStatusEquivalence(_Frozen):
    ecog: int
    karnofsky_min: int
    karnofsky_max: int


class Staging(ObservationDefinition):
    snomed_stage: dict[str, int]


class QualitativeTest(ObservationDefinition):
    hgnc_genes: list[str] = Field(default_factory=list)


class AnswerSet(_Frozen):
    codes: list[str]
    text: list[str]


class QualitativeAnswers(_Frozen):
    positive: AnswerSet
    negative: AnswerSet


class ValueSet(_Frozen):
    display: str
    icd10_prefixes: list[str] = Field(default_factory=list)
    snomed: list[str] = Field(default_factory=list)
    cpt_prefixes: list[str] = Field(default_factory=list)
    text_patterns: list[str] = Field(default_factory=list)
    names_uncertain_behaviour: bool = Field(
        default=False,
        description="The codes name a neoplasm without saying whether it is malignant "
        "('Neoplasm of prostate'): a rule that finds one shows its code, for the clinician to check.",
    )
    includes_procedures: bool = Field(
        default=False,
        description="Also matched against the patient's Procedures (a transplant, dialysis or "
        "radiotherapy is often recorded only as a procedure); other value sets see Conditions only.",
    )


class DrugMember(_Frozen):
    rxnorm: list[str] = Field(default_factory=list)
    atc: list[str] = Field(default_factory=list)
    cvx: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    prednisone_equivalent_factor: float | None = None


class DrugClass(_Frozen):
    display: str
    members: dict[str, DrugMember] = Field(default_factory=dict)
    atc_prefixes: list[str] = Field(default_factory=list)
    includes: list[str] = Field(default_factory=list)
    non_systemic_routes: list[str] = Field(default_factory=list)
    includes_immunizations: bool = Field(
        default=False,
        description="Also matched against the patient's Immunizations (by CVX code or name); "
        "other classes see medications only.",
    )


class _AnalyteFile(_Frozen):
    analytes: dict[str, Analyte]
    panels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per prefetch group, LOINC codes of panels whose results come as components.",
    )
    qualitative_tests: dict[str, QualitativeTest]
    qualitative_answers: QualitativeAnswers
    performance_status_equivalence: list[PerformanceStatusEquivalence]
    staging: Staging
    derived: dict[str, DerivedAnalyte] | None = Field(
        default=None,
        description="Analytes computed from others; files written before the block existed get "
        "the derivations the code made then.",
    )


class _ConditionFile(_Frozen):
    value_sets: dict[str, ValueSet]
    text_qualifiers: list[str] = Field(default_factory=list)


class _MedicationFile(_Frozen):
    classes: dict[str, DrugClass]
    active_order_horizon_days: int | None = Field(
        default=None,
        gt=0,
        description="An order still 'active' whose newest evidence (authored, dosage period, "
        "administration) is older than this is stale: not current, and the card asks to confirm it. "
        "Absent only in criteria versions recorded before the horizon existed, which replay as "
        "they were decided: no order went stale.",
    )


class _UnitFile(_Frozen):
    aliases: dict[str, str]
    display: dict[str, str] = Field(default_factory=dict)


class DrugClassRoles(_Frozen):
    """Drug classes the code relies on, by role (``roles.yaml``)."""

    corticosteroid_dose: str = Field(description="the steroid_dose rule (prednisone-equivalent daily dose)")
    current_anticancer_therapy: str = Field(
        description="order-select: which drafted drugs restart a trial's washout"
    )


class AnalyteRoles(_Frozen):
    """Analytes the code relies on, by role (``roles.yaml``)."""

    ecog_performance_status: str = Field(description="the performance_status rule (ECOG)")
    karnofsky_performance_status: str = Field(description="the performance_status rule (Karnofsky)")

    @model_validator(mode="before")
    @classmethod
    def _without_legacy_roles(cls, data: Any) -> Any:
        """Records written before ``derived`` existed name its inputs here: read, not used."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _LEGACY_ANALYTE_ROLES}
        return data


_LEGACY_ANALYTE_ROLES = ("serum_creatinine", "body_weight", "white_blood_cell_count")


class GenomicsRoles(_Frozen):
    """LOINC codes of a variant panel whose components name the gene studied."""

    variant_panel_loinc: list[str] = Field(min_length=1)
    gene_studied_loinc: list[str] = Field(min_length=1)


class Roles(_Frozen):
    """``roles.yaml``: every name in the mappings that the service's code looks up."""

    drug_classes: DrugClassRoles
    analytes: AnalyteRoles
    genomics: GenomicsRoles


@dataclass(frozen=True)
class DrugMatch:
    """Which member of which class a medication matched, and how."""

    member: str
    matched_by: str
    prednisone_equivalent_factor: float | None = None


@dataclass(frozen=True)
class _DrugIndex:
    rxnorm: dict[str, tuple[str, DrugMember]]
    atc: dict[str, tuple[str, DrugMember]]
    cvx: dict[str, tuple[str, DrugMember]]
    atc_prefixes: tuple[str, ...]
    any_name: re.Pattern[str] | None


@dataclass
class Mappings:
    """All code mappings, with the indexes the fact builder needs."""

    analytes: dict[str, Analyte]
    qualitative_tests: dict[str, QualitativeTest]
    qualitative_answers: QualitativeAnswers
    performance_status_equivalence: list[PerformanceStatusEquivalence]
    staging: Staging
    value_sets: dict[str, ValueSet]
    drug_classes: dict[str, DrugClass]
    unit_aliases: dict[str, str]
    roles: Roles
    unit_display: dict[str, str] = field(default_factory=dict)
    source_text: dict[str, str] = field(default_factory=dict)
    panels: dict[str, list[str]] = field(default_factory=dict)
    text_qualifiers: list[str] = field(default_factory=list)
    active_order_horizon_days: int | None = None
    derived: dict[str, DerivedAnalyte] = field(default_factory=dict)

    def derivations(self, method: str) -> dict[str, DerivedAnalyte]:
        """The derived analytes computed by ``method``, by the analyte they yield."""
        return {output: d for output, d in self.derived.items() if d.method == method}

    @cached_property
    def _qualified(self) -> re.Pattern[str] | None:
        """Phrases that keep a free-text entry out of every value set ("history of", "screening")."""
        if not self.text_qualifiers:
            return None
        return re.compile(r"(?i)\b(" + "|".join(re.escape(q) for q in self.text_qualifiers) + r")\b")

    @cached_property
    def analyte_by_loinc(self) -> dict[str, str]:
        return {code: key for key, analyte in self.analytes.items() for code in analyte.loinc}

    @cached_property
    def percent_analyte_by_loinc(self) -> dict[str, str]:
        """LOINC codes of differential percentages, to the absolute count they yield."""
        return {
            code: key
            for key, analyte in self.analytes.items()
            for code in analyte.percent_of_white_cells_loinc
        }

    @cached_property
    def qualitative_test_by_loinc(self) -> dict[str, str]:
        return {code: key for key, test in self.qualitative_tests.items() for code in test.loinc}

    @cached_property
    def definitions_by_group(self) -> dict[str, list[str]]:
        """The analytes and tests each prefetch group's search brings, by name, in file order."""
        groups: dict[str, list[str]] = {}
        for name, definition in self.observation_definitions.items():
            groups.setdefault(definition.prefetch_group, []).append(name)
        return groups

    @cached_property
    def observation_codes_by_group(self) -> dict[str, list[str]]:
        """LOINC codes per prefetch group, in file order (genomics panels included)."""
        groups: dict[str, list[str]] = {}
        for definition in self.observation_definitions.values():
            codes = groups.setdefault(definition.prefetch_group, [])
            codes.extend(c for c in definition.loinc if c not in codes)
            if isinstance(definition, Analyte):
                codes.extend(c for c in definition.percent_of_white_cells_loinc if c not in codes)
            if isinstance(definition, QualitativeTest) and definition.hgnc_genes:
                codes.extend(c for c in self.roles.genomics.variant_panel_loinc if c not in codes)
        for group, panel_codes in self.panels.items():
            codes = groups.setdefault(group, [])
            codes.extend(c for c in panel_codes if c not in codes)
        return groups

    @cached_property
    def observation_definitions(self) -> dict[str, ObservationDefinition]:
        """Analytes and qualitative tests by key (the keys never collide: checked at load)."""
        return {**self.analytes, **self.qualitative_tests, "staging": self.staging}

    @cached_property
    def qualitative_test_by_gene(self) -> dict[str, str]:
        return {gene: key for key, test in self.qualitative_tests.items() for gene in test.hgnc_genes}

    def quantity_text(self, value: float, unit: str | None) -> str:
        """A value as a lab report prints it: three significant figures, the unit as clinicians
        write it (``units.yaml`` ``display``), nothing for unitless ratios such as the INR."""
        number = number_text(value)
        shown = self.unit_display.get(unit or "", unit or "")
        return f"{number} {shown}" if shown else number

    def class_members(self, class_name: str) -> list[tuple[str, DrugMember]]:
        """Members of a class including the classes it ``includes``, transitively."""
        drug_class = self.drug_classes[class_name]
        members = list(drug_class.members.items())
        for included in drug_class.includes:
            members.extend(self.class_members(included))
        return members

    def class_atc_prefixes(self, class_name: str) -> list[str]:
        drug_class = self.drug_classes[class_name]
        prefixes = list(drug_class.atc_prefixes)
        for included in drug_class.includes:
            prefixes.extend(self.class_atc_prefixes(included))
        return prefixes

    @cached_property
    def _name_patterns(self) -> dict[str, list[tuple[re.Pattern[str], str, DrugMember]]]:
        patterns: dict[str, list[tuple[re.Pattern[str], str, DrugMember]]] = {}
        for class_name in self.drug_classes:
            patterns[class_name] = [
                (re.compile(r"(?<![\w-])" + re.escape(name.lower()) + r"(?![\w-])"), key, member)
                for key, member in self.class_members(class_name)
                for name in member.names
            ]
        return patterns

    @cached_property
    def _drug_indexes(self) -> dict[str, _DrugIndex]:
        """Per class: code -> first member carrying it, ATC prefixes, and all names as one pattern."""
        indexes = {}
        for class_name in self.drug_classes:
            rxnorm: dict[str, tuple[str, DrugMember]] = {}
            atc: dict[str, tuple[str, DrugMember]] = {}
            cvx: dict[str, tuple[str, DrugMember]] = {}
            for key, member in self.class_members(class_name):
                for code in member.rxnorm:
                    rxnorm.setdefault(code, (key, member))
                for code in member.atc:
                    atc.setdefault(code, (key, member))
                for code in member.cvx:
                    cvx.setdefault(_cvx_key(code), (key, member))
            names = [
                re.escape(name.lower())
                for _, member in self.class_members(class_name)
                for name in member.names
            ]
            indexes[class_name] = _DrugIndex(
                rxnorm=rxnorm,
                atc=atc,
                cvx=cvx,
                atc_prefixes=tuple(self.class_atc_prefixes(class_name)),
                # the boundaries of _name_patterns, factored out of the alternation
                any_name=re.compile(r"(?<![\w-])(?:" + "|".join(names) + r")(?![\w-])") if names else None,
            )
        return indexes

    def match_drug(self, class_name: str, codings: list[tuple[str, str]], text: str) -> DrugMatch | None:
        """Match a medication (codings as (system, code) and its free text) against a class.

        Codes are looked up in per-class indexes; the names are first tried as one
        alternation, so the member-by-member search (first member in file order wins)
        runs only for a medication that does match some name of the class.
        """
        index = self._drug_indexes[class_name]
        for system, code in codings:
            if "rxnorm" in system:
                found = index.rxnorm.get(code)
                if found is not None:
                    return DrugMatch(found[0], f"RxNorm {code}", found[1].prednisone_equivalent_factor)
            elif "cvx" in system.lower():
                found = index.cvx.get(_cvx_key(code))
                if found is not None:
                    return DrugMatch(found[0], f"CVX {code}")
            elif "atc" in system.lower():
                found = index.atc.get(code)
                if found is not None:
                    return DrugMatch(found[0], f"ATC {code}", found[1].prednisone_equivalent_factor)
                if code.startswith(index.atc_prefixes):
                    return DrugMatch(code, f"ATC {code}")
        lowered = text.lower()
        if index.any_name is None or index.any_name.search(lowered) is None:
            return None
        for pattern, key, member in self._name_patterns[class_name]:
            if pattern.search(lowered):
                return DrugMatch(key, f"name '{key}'", member.prednisone_equivalent_factor)
        return None

    @cached_property
    def _value_sets_by_code(self) -> dict[str, dict[str, set[str]]]:
        """Per code system ('snomed' exact codes, 'icd10' and 'cpt' prefixes without dots):
        code or prefix -> the value sets listing it."""
        index: dict[str, dict[str, set[str]]] = {"snomed": {}, "icd10": {}, "cpt": {}}
        for name, members in self.value_sets.items():
            for system, codes in (
                ("snomed", members.snomed),
                ("icd10", [p.replace(".", "").upper() for p in members.icd10_prefixes]),
                ("cpt", [p.upper() for p in members.cpt_prefixes]),
            ):
                for code in codes:
                    index[system].setdefault(code, set()).add(name)
        return index

    @cached_property
    def _text_patterns(self) -> dict[str, tuple[re.Pattern[str], ...]]:
        return {
            name: tuple(re.compile(p) for p in members.text_patterns)
            for name, members in self.value_sets.items()
            if members.text_patterns
        }

    def value_sets_containing(self, codings: list[tuple[str, str]], text: str = "") -> set[str]:
        """Every value set any (system, code) coding belongs to, found by code lookups.

        Text patterns are a fallback only for entries none of whose codes is in any value
        set: free-text problem-list entries, and entries coded with concepts our lists
        lack ("Adenocarcinoma of stomach" under a SNOMED CT code we do not carry).  An
        entry with a known code is judged by its codes alone.  One pass per entry.
        """
        found: set[str] = set()
        index = self._value_sets_by_code
        systems = [(_code_system(system), code) for system, code in codings]
        for system, code in systems:
            if system == "snomed":
                found |= index["snomed"].get(code, set())
            elif system is not None:
                normalised = code.replace(".", "").upper()
                for length in range(len(normalised) + 1):
                    found |= index[system].get(normalised[:length], set())
        # ICD-10-CM codes are covered by prefix, so an unmatched one (Z85.118 history of lung
        # cancer, Z12.2 screening) is not a diagnosis of ours; neither is a qualified text.
        if (
            not found
            and text
            and all(system != "icd10" for system, _ in systems)
            and not (self._qualified and self._qualified.search(text))
        ):
            found.update(
                name
                for name, patterns in self._text_patterns.items()
                if any(pattern.search(text) for pattern in patterns)
            )
        return found


def _cvx_key(code: str) -> str:
    """CVX "03" and "3" are the same code."""
    return code.lstrip("0") or "0"


def _code_system(system: str) -> str | None:
    """'snomed', 'icd10' (ICD-10-CM and other ICD-10 editions), 'cpt' or None for a coding system URI."""
    lowered = system.lower()
    if "snomed" in lowered:
        return "snomed"
    if "icd-10-pcs" in lowered or "medicare/coding/icd10" in lowered:
        return None  # ICD-10-PCS procedure codes share letters with ICD-10-CM chapters
    if "icd-10" in lowered or "icd10" in lowered:
        return "icd10"
    if "cpt" in lowered or "ama-assn" in lowered:
        return "cpt"
    return None


def _read(path: Path, model: type[BaseModel], texts: dict[str, str]) -> Any:
    try:
        raw = yaml.safe_load(texts[path.name])
    except KeyError as exc:
        raise ConfigurationError(f"{path}: missing") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: cannot be read as YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigurationError(f"{path}: {problems}") from exc


def load_mappings(directory: Path) -> Mappings:
    """Load and cross-check every mapping file in ``directory``."""
    try:
        texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.yaml"))}
    except OSError as exc:
        raise ConfigurationError(f"{directory}: cannot be read: {exc}") from exc
    return mappings_from_texts(texts, directory)


def _check_roles(roles: Roles, analytes: _AnalyteFile, medications: _MedicationFile, directory: Path) -> None:
    """Every name the code relies on is defined: all missing ones in one message."""
    problems = []
    tables: list[tuple[str, BaseModel, set[str], str]] = [
        ("drug_classes", roles.drug_classes, set(medications.classes), "medications.yaml classes"),
        ("analytes", roles.analytes, set(analytes.analytes), "analytes.yaml analytes"),
    ]
    for block, assigned, defined, where in tables:
        for role, field_info in type(assigned).model_fields.items():
            name = getattr(assigned, role)
            if name not in defined:
                problems.append(
                    f"{block}.{role}: '{name}' is not defined in {where}; needed by {field_info.description}"
                )
    if problems:
        raise ConfigurationError(f"{directory / 'roles.yaml'}: " + "; ".join(problems))


def _legacy_derived(analytes: _AnalyteFile) -> dict[str, DerivedAnalyte]:
    """The derivations the code made before ``derived`` declared them (for mappings recorded
    then, which replay reads): absolute counts wherever an analyte lists differential codes,
    and Cockcroft-Gault clearance from the creatinine and weight then named in roles."""
    derived = {
        output: DerivedAnalyte(method="white_cell_differential", inputs={"total": "white_blood_cell_count"})
        for output, analyte in analytes.analytes.items()
        if analyte.percent_of_white_cells_loinc
    }
    if "creatinine_clearance" in analytes.analytes:
        derived["creatinine_clearance"] = DerivedAnalyte(
            method="cockcroft_gault", inputs={"creatinine": "serum_creatinine", "weight": "body_weight"}
        )
    return derived


def _check_derived(derived: dict[str, DerivedAnalyte], analytes: _AnalyteFile, directory: Path) -> None:
    """Every derived analyte yields and reads defined analytes, with the inputs its method needs;
    differential percentages are read only for a count declared to be derived from them."""
    where = directory / "analytes.yaml"
    defined = set(analytes.analytes)
    problems = []
    for output, derivation in derived.items():
        if output not in defined:
            problems.append(f"derived.{output}: '{output}' is not defined in analytes")
            continue
        needed = DERIVATION_INPUTS[derivation.method]
        if set(derivation.inputs) != set(needed):
            problems.append(
                f"derived.{output}.inputs: {derivation.method} needs {', '.join(needed)}; "
                f"got {', '.join(derivation.inputs) or 'none'}"
            )
        for role, name in derivation.inputs.items():
            if name not in defined:
                problems.append(
                    f"derived.{output}.inputs.{role}: '{name}' is not defined in analytes; "
                    f"needed by {derivation.method} for {output}"
                )
        if (
            derivation.method == "white_cell_differential"
            and not analytes.analytes[output].percent_of_white_cells_loinc
        ):
            problems.append(
                f"derived.{output}: white_cell_differential needs percent_of_white_cells_loinc on {output}"
            )
    for name, analyte in analytes.analytes.items():
        declared = derived.get(name)
        if analyte.percent_of_white_cells_loinc and (
            declared is None or declared.method != "white_cell_differential"
        ):
            problems.append(
                f"analytes.{name}.percent_of_white_cells_loinc: no white_cell_differential for {name} in derived"
            )
    if problems:
        raise ConfigurationError(f"{where}: " + "; ".join(problems))


def mappings_from_texts(
    texts: dict[str, str], directory: Path = Path("mappings"), *, roles_text: str | None = None
) -> Mappings:
    """Mappings from file texts by name (what an audit record's criteria snapshot keeps).

    ``roles_text`` stands in for a ``roles.yaml`` the texts lack: snapshots recorded before
    the roles were data used exactly the names of the shipped file.
    """
    if "roles.yaml" not in texts and roles_text is not None:
        texts = {**texts, "roles.yaml": roles_text}
    analytes: _AnalyteFile = _read(directory / "analytes.yaml", _AnalyteFile, texts)
    conditions: _ConditionFile = _read(directory / "conditions.yaml", _ConditionFile, texts)
    medications: _MedicationFile = _read(directory / "medications.yaml", _MedicationFile, texts)
    units: _UnitFile = _read(directory / "units.yaml", _UnitFile, texts)
    roles: Roles = _read(directory / "roles.yaml", Roles, texts)
    clash = (set(analytes.analytes) & set(analytes.qualitative_tests)) | (
        {"staging"} & (set(analytes.analytes) | set(analytes.qualitative_tests))
    )
    if clash:
        raise ConfigurationError(f"{directory / 'analytes.yaml'}: keys used twice: {sorted(clash)}")
    groups = {d.prefetch_group for d in [*analytes.analytes.values(), *analytes.qualitative_tests.values()]}
    for group in analytes.panels:
        if group not in groups:
            raise ConfigurationError(
                f"{directory / 'analytes.yaml'}: panels.{group}: no analyte is in prefetch group '{group}'"
            )
    for name, drug_class in medications.classes.items():
        for included in drug_class.includes:
            if included not in medications.classes:
                raise ConfigurationError(
                    f"{directory / 'medications.yaml'}: classes.{name}.includes: unknown class '{included}'"
                )
    _check_roles(roles, analytes, medications, directory)
    derived = analytes.derived if analytes.derived is not None else _legacy_derived(analytes)
    _check_derived(derived, analytes, directory)
    return Mappings(
        derived=derived,
        roles=roles,
        analytes=analytes.analytes,
        qualitative_tests=analytes.qualitative_tests,
        qualitative_answers=analytes.qualitative_answers,
        performance_status_equivalence=analytes.performance_status_equivalence,
        staging=analytes.staging,
        value_sets=conditions.value_sets,
        text_qualifiers=conditions.text_qualifiers,
        drug_classes=medications.classes,
        unit_aliases=units.aliases,
        unit_display=units.display,
        source_text=dict(texts),
        panels=analytes.panels,
        active_order_horizon_days=medications.active_order_horizon_days,
    )
