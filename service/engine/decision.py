"""The decision: what the engine concluded for one patient at one time, as one typed value.

This is the contract between the engine and everything that shows, stores or checks its
conclusion: cards, the review page, the audit store, every export format, the counts and
replay read a :class:`Decision` and nothing else.  None of them may look at mappings,
re-derive a verdict or hold a clinical constant; if they need to know something (when a
result goes stale, which criteria rule a trial out, the patient's age) the engine says it
here.

The types are frozen msgspec structs: the engine builds some hundred of them a call from
values it has already typed, so they are not validated as they are built (a pydantic
dataclass took about 3 µs each, a quarter of a small patient's call), and
:func:`decision_from_data` checks a stored decision field by field on the way back in, so a
record that does not have this shape is refused rather than half-read.  Records written
before the decision had a type (schema version 1: loose ``verdicts`` dicts) are read by
:func:`read_decision`, which upgrades them without re-deciding anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

import msgspec

from service.facts.common import SourceRef

__all__ = [
    "SCHEMA_VERSION",
    "CohortFit",
    "CohortVerdict",
    "CriterionVerdict",
    "Decision",
    "Evidence",
    "InputReference",
    "LabOrderCode",
    "OrderWarning",
    "PatientSummary",
    "State",
    "TrialStatus",
    "TrialVerdict",
    "DecisionShapeError",
    "decision_from_data",
    "decision_json",
    "read_decision",
]

SCHEMA_VERSION = 2
"""2: the typed decision.  1: records before it (loose ``verdicts``, read by an upgrade)."""


class _Frozen(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """The base of the decision's types: immutable, a stored field it does not know is refused,
    and untracked by the garbage collector (a decision holds no cycle)."""


class State(StrEnum):
    """A criterion's state.  Only NOT_MET blocks a suggestion."""

    MET = "met"
    NOT_MET = "not_met"
    UNKNOWN = "unknown"
    NOT_YET = "not_yet"
    NEEDS_REVIEW = "needs_review"


TrialStatus = Literal["may_be_eligible", "ruled_out", "not_applicable"]
CohortFit = Literal["fits", "may_fit", "does_not_fit"]


class Evidence(_Frozen, frozen=True):
    """One datum a criterion rests on, traceable to its FHIR resource.

    ``source`` is the resource reference with its version (``Observation/7/_history/2``).
    ``lookback_days`` and ``stale_on`` are set for results read inside a look-back window:
    the date the result stops being usable is the engine's statement, not the page's guess.
    """

    description: str
    source: str | None = None
    value: float | str | None = None
    unit: str | None = None
    date: str | None = None
    upper_limit_of_normal: float | None = None
    upper_limit_source: str | None = None
    lookback_days: int | None = None
    stale_on: dt.date | None = None
    value_text: str | None = None  # the value as a lab report prints it: "6.2 ×10⁹/L"


class LabOrderCode(_Frozen, frozen=True):
    """A test that would resolve an unknown criterion: LOINC code and short name."""

    loinc: str
    label: str


class CriterionVerdict(_Frozen, frozen=True):
    """One criterion's state for this patient, with its label for people and id for machines."""

    id: str
    label: str
    type: Literal["inclusion", "exclusion"]
    text: str
    source: str
    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    until: dt.date | None = None
    flags: tuple[str, ...] = ()
    resolve_hint: str | None = None
    note: str | None = None
    arm: str | None = None
    orders: tuple[LabOrderCode, ...] = ()

    @property
    def not_before(self) -> dt.date | None:
        """The washout's end: the first day this criterion can be met (NOT_YET only)."""
        return self.until if self.state is State.NOT_YET else None


class CohortVerdict(_Frozen, frozen=True):
    """A cohort (arm) and its own criteria; ``fit`` is decided by the engine."""

    id: str
    title: str
    description: str
    fit: CohortFit
    criteria: tuple[CriterionVerdict, ...] = ()

    @property
    def possible(self) -> bool:
        """No criterion of the cohort is known to be unmet."""
        return self.fit != "does_not_fit"


class TrialVerdict(_Frozen, frozen=True):
    """One trial's verdict: the headline, its trial-level criteria and its cohorts.

    ``blocking`` lists the ids of the criteria that rule the trial out (trial-level ones,
    or every cohort's when no cohort fits), so no reader has to work that out again.
    """

    trial_id: str
    title: str
    short_title: str
    registry_url: str | None
    status: TrialStatus
    reason: str
    criteria: tuple[CriterionVerdict, ...] = ()
    cohorts: tuple[CohortVerdict, ...] = ()
    disease_evidence: tuple[Evidence, ...] = ()
    blocking: tuple[str, ...] = ()
    criteria_complete: bool = True

    @property
    def suggested(self) -> bool:
        """Whether the trial gets a card: no criterion is known to rule the patient out."""
        return self.status == "may_be_eligible"

    def in_state(self, state: State) -> list[CriterionVerdict]:
        """Trial-level criteria in ``state``, then those of the cohorts still possible."""
        found = [c for c in self.criteria if c.state is state]
        for cohort in self.cohorts:
            if cohort.possible:
                found += [c for c in cohort.criteria if c.state is state]
        return found

    def trial_level_counts(self) -> dict[State, int]:
        """How many trial-level criteria are in each state (cohort criteria are the cohorts')."""
        counts = dict.fromkeys(State, 0)
        for criterion in self.criteria:
            counts[criterion.state] += 1
        return counts

    def every_criterion(self) -> list[CriterionVerdict]:
        return [*self.criteria, *(c for cohort in self.cohorts for c in cohort.criteria)]

    def not_before(self) -> dt.date | None:
        """The latest washout end among the criteria that block only until a date."""
        dates = [c.until for c in self.in_state(State.NOT_YET) if c.until is not None]
        return max(dates) if dates else None


class PatientSummary(_Frozen, frozen=True):
    """Who was decided for, as the engine read it (age at the evaluation time)."""

    reference: str
    sex: str | None = None
    age_years: int | None = None
    age_note: str | None = None  # e.g. "71–72: the birth date is recorded without its day"
    deceased: bool = False


InputReference = SourceRef
"""One input resource, by type, id and the version that was read: the facts stage's own
reference, kept as it is (a msgspec struct; a call at 1,000 Observations has over a thousand)."""


class OrderWarning(_Frozen, frozen=True):
    """order-select: drafted systemic anticancer drugs that would restart a trial's washout."""

    drugs: tuple[str, ...]
    trial_ids: tuple[str, ...]


class Decision(_Frozen, frozen=True):
    """Every trial's verdict for one patient at one evaluation time, and what it rested on."""

    evaluated_at: dt.datetime
    criteria_fingerprint: str
    input_fingerprint: str
    patient: PatientSummary
    trials: tuple[TrialVerdict, ...] = ()
    data_problems: tuple[str, ...] = ()
    unavailable: dict[str, str] | None = None
    inputs: tuple[InputReference, ...] = ()
    order_warning: OrderWarning | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def suggested(self) -> list[TrialVerdict]:
        return [t for t in self.trials if t.suggested]

    def trial(self, trial_id: str) -> TrialVerdict | None:
        return next((t for t in self.trials if t.trial_id == trial_id), None)


class DecisionShapeError(ValueError):
    """Stored data that is not a decision: ``path`` names the first wrong field (``trials[0].status``,
    empty for the whole), ``problem`` says what is wrong with it."""

    def __init__(self, problem: str, path: str = "") -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.problem = problem
        self.path = path


_DECISION_TYPE_INFO = msgspec.json.Decoder(Decision)
"""Built at import, on the importing thread, for what it resolves on the way: msgspec works out
a struct type's field information on first use, and two worker threads doing that at once for
``Decision`` (two audit writes in a fresh process) crashed the process with a segmentation fault
(seen in ``tests/deploy/test_replicas.py``, with ``PYTHONFAULTHANDLER``). ``decision_from_data``
then finds it resolved."""


def decision_from_data(data: Any, *, lax: bool = False) -> Decision:
    """A decision from JSON-ready data (a stored record's ``decision``), checked field by field.

    Dates and times are read from their ISO text, states from their values; a field of the
    wrong type or one the decision does not have raises :class:`DecisionShapeError`.
    ``lax`` also takes what a version 1 record may hold as it was written (a whole-number
    float for an integer, "40" for a number, 0 or 1 for a boolean), as its pydantic reader did;
    the version 1 upgrade reads the rest (a bare day for a time, a date-time for a day).
    """
    try:
        return msgspec.convert(data, Decision, strict=not lax)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `$")
        raise DecisionShapeError(problem, where.removesuffix("`").lstrip(".")) from exc


def decision_json(decision: Decision) -> dict[str, Any]:
    """The decision as JSON-ready data (what the audit record stores under ``decision``)."""
    # Through JSON text, so that every sequence is a list, as it reads back from the store.
    data: dict[str, Any] = _JSON_DECODER.decode(msgspec.json.encode(decision))
    return data


_JSON_DECODER = msgspec.json.Decoder()


def read_decision(content: Mapping[str, Any], titles: Mapping[str, Any] | None = None) -> Decision:
    """The decision of a stored record, whichever schema version wrote it.

    ``titles`` (trial id -> recorded criteria of that trial) is used only for version 1
    records, which did not keep trial titles; it never changes a state or a verdict.
    Raises :class:`DecisionShapeError` when the record is neither shape.
    """
    stored = content.get("decision")
    if isinstance(stored, Mapping):
        return decision_from_data(stored)
    return _upgrade_v1(content, titles or {})


def _v1_day(value: Any) -> Any:
    """A version 1 date as a day: a date-time's day ("2026-01-05T10:00:00Z" -> "2026-01-05")."""
    return value[:10] if isinstance(value, str) and len(value) > 10 else value


def _v1_moment(value: Any) -> Any:
    """A version 1 time: a bare day is its midnight, as the pydantic reader of the day took it."""
    return f"{value}T00:00:00" if isinstance(value, str) and len(value) == 10 else value


def _v1_evidence(item: Mapping[str, Any]) -> dict[str, Any]:
    value = item.get("value")
    return {
        "description": str(item.get("description") or ""),
        "source": item.get("source") or item.get("resource"),
        "value": float(value) if isinstance(value, bool) else value,
        "unit": item.get("unit"),
        "date": item.get("date"),
        "upper_limit_of_normal": item.get("upper_limit_of_normal"),
        "upper_limit_source": item.get("upper_limit_source"),
    }


def _v1_criterion(item: Mapping[str, Any], arm: str | None) -> dict[str, Any]:
    return {
        "id": str(item.get("id")),
        "label": str(item.get("label") or item.get("text") or item.get("id")),
        "type": item.get("type") if item.get("type") in ("inclusion", "exclusion") else "inclusion",
        "text": str(item.get("text") or ""),
        "source": str(item.get("source") or ""),
        "state": item.get("state"),
        "reason": str(item.get("reason") or ""),
        "evidence": [_v1_evidence(e) for e in item.get("evidence") or []],
        "until": _v1_day(item.get("until")),
        "flags": list(item.get("flags") or []),
        "resolve_hint": item.get("resolve_hint"),
        "note": item.get("note"),
        "arm": item.get("arm", arm),
    }


def _v1_status(verdict: Mapping[str, Any]) -> str:
    status = verdict.get("status")
    if status in ("may_be_eligible", "ruled_out", "not_applicable"):
        return str(status)
    return "may_be_eligible" if verdict.get("suggested") is True else "ruled_out"


def _upgrade_v1(content: Mapping[str, Any], titles: Mapping[str, Any]) -> Decision:
    """A version 1 record read as a decision: its recorded states, copied, never re-decided.

    What version 1 did not record stays empty: look-back windows and stale dates (the
    review page then shows no stale dates) and the patient's age unless an age criterion
    carried it as evidence.
    """
    trials = []
    age: int | None = None
    for verdict in content.get("verdicts") or []:
        trial_id = str(verdict.get("trial_id"))
        found = titles.get(trial_id)
        recorded: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        criteria = [_v1_criterion(c, None) for c in verdict.get("criteria") or []]
        cohorts: list[dict[str, Any]] = []
        for arm in verdict.get("arms") or []:
            arm_criteria = [_v1_criterion(c, str(arm.get("id"))) for c in arm.get("criteria") or []]
            states = {c["state"] for c in arm_criteria}
            possible = arm.get("possible", arm.get("suggested", "not_met" not in states))
            fit = "does_not_fit" if not possible else ("fits" if states <= {"met"} else "may_fit")
            cohorts.append(
                {
                    "id": str(arm.get("id")),
                    "title": str(arm.get("title") or arm.get("id")),
                    "description": str(arm.get("description") or ""),
                    "fit": fit,
                    "criteria": arm_criteria,
                }
            )
        blocking = [c["id"] for c in criteria if c["state"] == "not_met"]
        if not blocking and cohorts and all(c["fit"] == "does_not_fit" for c in cohorts):
            blocking = [c["id"] for cohort in cohorts for c in cohort["criteria"] if c["state"] == "not_met"]
        for criterion in criteria:
            for item in criterion["evidence"]:
                if item["description"] == "age from Patient.birthDate" and isinstance(item["value"], int):
                    age = item["value"]
        trials.append(
            {
                "trial_id": trial_id,
                "title": str(recorded.get("title") or trial_id),
                "short_title": str(recorded.get("short_title") or trial_id),
                "registry_url": recorded.get("registry_url"),
                "status": _v1_status(verdict),
                "reason": str(verdict.get("reason") or ""),
                "criteria": criteria,
                "cohorts": cohorts,
                "disease_evidence": [_v1_evidence(e) for e in verdict.get("disease_evidence") or []],
                "blocking": blocking if _v1_status(verdict) == "ruled_out" else [],
                "criteria_complete": bool(recorded.get("criteria_complete", True)),
            }
        )
    patient_ref = str(content.get("patient_ref") or "")
    patient_id = patient_ref.removeprefix("Patient/")
    patient: Mapping[str, Any] = next(
        (
            r
            for r in content.get("input_resources") or []
            if isinstance(r, Mapping)
            and r.get("resourceType") == "Patient"
            and str(r.get("id")) == patient_id
        ),
        {},
    )
    unavailable = content.get("unavailable_facts")
    return decision_from_data(
        lax=True,
        data={
            "schema_version": 1,
            "evaluated_at": _v1_moment(content.get("evaluated_at") or content.get("recorded_at")),
            "criteria_fingerprint": str(content.get("criteria_fingerprint") or ""),
            "input_fingerprint": str(content.get("input_fingerprint") or ""),
            "patient": {
                "reference": patient_ref,
                "sex": patient.get("gender"),
                "age_years": age,
                "deceased": bool(patient.get("deceasedBoolean") or patient.get("deceasedDateTime")),
            },
            "trials": trials,
            "data_problems": [str(e) for e in content.get("errors") or []],
            "unavailable": {str(k): str(v) for k, v in unavailable.items()}
            if isinstance(unavailable, Mapping)
            else None,
            "inputs": [
                {
                    "resource_type": i.get("resourceType"),
                    "id": str(i.get("id")),
                    "version_id": i.get("versionId"),
                }
                for i in content.get("inputs") or []
                if isinstance(i, Mapping)
            ],
        },
    )
