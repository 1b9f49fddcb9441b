"""The review page behind each card: its signed link, and what it shows of a recorded decision.

The link carries a token signed with ``review_signing_key`` (itsdangerous, HMAC-SHA512)
over the decision id and an expiry time, so it cannot be guessed, altered, reused for
another decision or kept past its TTL.  It is not the FHIR access token and holds no PHI.

The page shows only what the audit trail recorded (never today's data): the patient's
age and sex at the evaluation time, each trial's verdict with every criterion and its
evidence, and a timeline of dates that change eligibility (washouts ending, labs leaving
their look-back window).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import yaml
from itsdangerous import BadSignature, URLSafeSerializer

from service.errors import TilCdsError
from service.settings import Settings

__all__ = [
    "DEFAULT_LOOKBACK_DAYS",
    "ArmSection",
    "CriterionRow",
    "EvidenceRow",
    "ReviewLinkError",
    "ReviewLinkExpiredError",
    "ReviewPage",
    "STATE_LABELS",
    "TimelineEvent",
    "TrialSection",
    "build_review_page",
    "review_url_builder",
    "sign_review_token",
    "verify_review_token",
]

DEFAULT_LOOKBACK_DAYS = 30
_SALT = "til-cds review link"
_STATUS_ORDER = {"may_be_eligible": 0, "ruled_out": 1, "not_applicable": 2}
STATE_LABELS = {
    "met": "met",
    "not_met": "not met",
    "unknown": "unknown",
    "not_yet": "not yet",
    "needs_review": "clinician to judge",
}


class ReviewLinkError(TilCdsError):
    """The review link's token is missing, altered, or for another decision (403)."""


class ReviewLinkExpiredError(ReviewLinkError):
    """The review link's token was genuine but its time is up (403 "link expired")."""


def _serializer(key: str) -> URLSafeSerializer:
    return URLSafeSerializer(key, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha512})


def sign_review_token(decision_id: str, key: str, ttl_seconds: int, *, now: float | None = None) -> str:
    """A URL-safe token for ``decision_id`` valid for ``ttl_seconds`` from ``now``."""
    issued = time.time() if now is None else now
    return str(_serializer(key).dumps({"d": decision_id, "e": int(issued + ttl_seconds)}))


def review_url_builder(settings: Settings) -> Callable[[str], str]:
    """decision id -> the absolute review page URL with a fresh token (``Runtime.review_url``)."""
    key = settings.review_signing_key.get_secret_value()
    base = settings.public_base_url.rstrip("/")

    def review_url(decision_id: str) -> str:
        token = sign_review_token(decision_id, key, settings.review_token_ttl_seconds)
        return f"{base}/review/{decision_id}?token={token}"

    return review_url


def verify_review_token(token: str | None, decision_id: str, key: str, *, now: float | None = None) -> None:
    """Raise :class:`ReviewLinkError` unless ``token`` is genuine, for ``decision_id`` and unexpired."""
    if not token:
        raise ReviewLinkError("this link has no access token")
    try:
        payload = _serializer(key).loads(token)
    except BadSignature as exc:
        raise ReviewLinkError("this link's access token is not valid") from exc
    if (
        not isinstance(payload, dict)
        or payload.get("d") != decision_id
        or not isinstance(payload.get("e"), int)
    ):
        raise ReviewLinkError("this link's access token is not valid for this decision")
    if (time.time() if now is None else now) > payload["e"]:
        raise ReviewLinkExpiredError("link expired")


@dataclass(frozen=True)
class EvidenceRow:
    """One datum as the page shows it: value with unit, date, limit and where the limit came from."""

    description: str
    value: str
    date: str
    reference: str
    source: str
    usable_until: str | None = None
    lookback_note: str | None = None


@dataclass(frozen=True)
class CriterionRow:
    """One criterion's row in a trial's table."""

    id: str
    type: str
    text: str
    state: str
    state_label: str
    reason: str
    evidence: list[EvidenceRow]
    until: str | None
    flags: list[str]
    resolve_hint: str | None
    note: str | None


@dataclass(frozen=True)
class ArmSection:
    """An arm or cohort and its own criteria."""

    id: str
    title: str
    description: str
    possible: bool
    criteria: list[CriterionRow]


@dataclass(frozen=True)
class TrialSection:
    """One trial's verdict; ``blocking`` lists the criteria that rule it out."""

    trial_id: str
    title: str
    short_title: str
    registry_url: str | None
    status: str
    reason: str
    blocking: list[CriterionRow]
    criteria: list[CriterionRow]
    arms: list[ArmSection]
    disease_evidence: list[EvidenceRow]
    data_problems: list[str]
    counts: dict[str, int]


@dataclass(frozen=True)
class TimelineEvent:
    """A date that changes eligibility: a washout ends, or results leave their look-back."""

    on: str
    what: str
    items: list[str]
    trials: list[str]
    passed: bool


@dataclass
class ReviewPage:
    """Everything the review page shows of one recorded decision."""

    decision_id: str
    hook: str
    evaluated_at: str
    recorded_at: str
    age_years: int | None
    sex: str
    criteria_fingerprint: str
    trials: list[TrialSection] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)


def _age(patient: dict[str, Any] | None, at: date) -> int | None:
    birth = str((patient or {}).get("birthDate") or "")
    try:
        born = date.fromisoformat(birth[:10]) if len(birth) >= 10 else date(int(birth[:4]), 7, 1)
    except ValueError:
        return None
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


class _Lookbacks:
    """Look-back windows from the recorded criteria version, to date when a lab goes stale."""

    def __init__(self, snapshot: dict[str, Any] | None, resources: list[dict[str, Any]]) -> None:
        self.analyte_by_code: dict[str, tuple[str, int | None]] = {}
        self.rules: dict[tuple[str, str], dict[str, int | None]] = {}
        self.resources = {f"{r.get('resourceType')}/{r.get('id')}": r for r in resources}
        snapshot = snapshot or {}
        analytes_text = (snapshot.get("__mappings__") or {}).get("analytes.yaml")
        analytes = (yaml.safe_load(analytes_text) or {}).get("analytes", {}) if analytes_text else {}
        for name, definition in analytes.items():
            for code in definition.get("loinc") or []:
                self.analyte_by_code[str(code)] = (name, definition.get("lookback_days"))
        for trial_id, trial in snapshot.items():
            if trial_id == "__mappings__" or not isinstance(trial, dict):
                continue
            criteria = list(trial.get("inclusion") or []) + list(trial.get("exclusion") or [])
            for arm in trial.get("arms") or []:
                criteria += list(arm.get("criteria") or [])
            for criterion in criteria:
                found: dict[str, int | None] = {}
                self._collect(criterion.get("rule"), found)
                self.rules[(trial_id, str(criterion.get("id")))] = found

    def _collect(self, rule: Any, found: dict[str, int | None]) -> None:
        if not isinstance(rule, dict):
            return
        if rule.get("analyte"):
            found[str(rule["analyte"])] = rule.get("lookback_days")
        for child in rule.get("rules") or []:
            self._collect(child, found)

    def days(self, trial_id: str, criterion_id: str, source: str | None) -> tuple[int, str] | None:
        """The look-back in days for a numeric result's evidence, and where it came from; else None."""
        resource = self.resources.get(source or "")
        if not resource or resource.get("resourceType") != "Observation":
            return None
        rules = self.rules.get((trial_id, criterion_id)) or {}
        for coding in (resource.get("code") or {}).get("coding") or []:
            analyte = self.analyte_by_code.get(str(coding.get("code")))
            if analyte is None:
                continue
            name, analyte_days = analyte
            if rules.get(name) is not None:
                return int(rules[name] or 0), "set by the criterion"
            if analyte_days is not None:
                return int(analyte_days), f"for {name.replace('_', ' ')}"
            return DEFAULT_LOOKBACK_DAYS, "service default"
        return None


def _evidence_row(
    evidence: dict[str, Any], lookback: tuple[int, str] | None = None, *, stale_on: date | None = None
) -> EvidenceRow:
    value = _number(evidence.get("value"))
    unit = evidence.get("unit")
    reference = ""
    if evidence.get("upper_limit_of_normal") is not None:
        reference = f"ULN {_number(evidence['upper_limit_of_normal'])}"
    if evidence.get("upper_limit_source"):
        reference = (
            f"{reference} — {evidence['upper_limit_source']}" if reference else evidence["upper_limit_source"]
        )
    return EvidenceRow(
        description=str(evidence.get("description") or ""),
        value=f"{value} {unit}".strip() if value else "",
        date=str(evidence.get("date") or ""),
        reference=reference,
        source=str(evidence.get("source") or ""),
        usable_until=stale_on.isoformat() if stale_on else None,
        lookback_note=f"{lookback[0]}-day look-back, {lookback[1]}" if lookback else None,
    )


class _Builder:
    def __init__(self, content: dict[str, Any], snapshot: dict[str, Any] | None) -> None:
        self.content = content
        self.snapshot = snapshot or {}
        self.at = datetime.fromisoformat(str(content.get("evaluated_at"))).date()
        self.lookbacks = _Lookbacks(snapshot, list(content.get("input_resources") or []))
        self.events: dict[tuple[str, str], TimelineEvent] = {}

    def _event(self, on: date, what: str, item: str, trial_id: str) -> None:
        key = (on.isoformat(), what)
        event = self.events.setdefault(key, TimelineEvent(on.isoformat(), what, [], [], on <= self.at))
        if item not in event.items:
            event.items.append(item)
        if trial_id not in event.trials:
            event.trials.append(trial_id)

    def criterion(self, trial_id: str, data: dict[str, Any]) -> CriterionRow:
        rows = []
        for evidence in data.get("evidence") or []:
            lookback = self.lookbacks.days(trial_id, str(data.get("id")), evidence.get("source"))
            stale_on = None
            if lookback is not None and evidence.get("date"):
                try:
                    stale_on = date.fromisoformat(str(evidence["date"])[:10]) + timedelta(days=lookback[0])
                except ValueError:
                    stale_on = None
            if stale_on is not None and lookback is not None and data.get("state") in ("met", "not_met"):
                self._event(
                    stale_on,
                    f"results of {str(evidence['date'])[:10]} leave their {lookback[0]}-day look-back",
                    str(evidence.get("description")),
                    trial_id,
                )
            rows.append(_evidence_row(evidence, lookback, stale_on=stale_on))
        until = data.get("until")
        if until:
            self._event(
                date.fromisoformat(until), "washout ends", f"{data.get('id')}: {data.get('reason')}", trial_id
            )
        state = str(data.get("state"))
        return CriterionRow(
            id=str(data.get("id")),
            type=str(data.get("type") or ""),
            text=str(data.get("text") or ""),
            state=state,
            state_label=STATE_LABELS.get(state, state),
            reason=str(data.get("reason") or ""),
            evidence=rows,
            until=until,
            flags=list(data.get("flags") or []),
            resolve_hint=data.get("resolve_hint"),
            note=data.get("note"),
        )

    def trial(self, verdict: dict[str, Any]) -> TrialSection:
        trial_id = str(verdict.get("trial_id"))
        found = self.snapshot.get(trial_id)
        recorded: dict[str, Any] = found if isinstance(found, dict) else {}
        criteria = [self.criterion(trial_id, c) for c in verdict.get("criteria") or []]
        arms = [
            ArmSection(
                id=str(arm.get("id")),
                title=str(arm.get("title") or arm.get("id")),
                description=str(arm.get("description") or ""),
                possible=bool(arm.get("possible")),
                criteria=[self.criterion(trial_id, c) for c in arm.get("criteria") or []],
            )
            for arm in verdict.get("arms") or []
        ]
        every = criteria + [c for arm in arms for c in arm.criteria]
        counts: dict[str, int] = {}
        for row in every:
            counts[row.state] = counts.get(row.state, 0) + 1
        blocking = [c for c in criteria if c.state == "not_met"]
        if not blocking and arms and not any(a.possible for a in arms):
            blocking = [c for a in arms for c in a.criteria if c.state == "not_met"]
        return TrialSection(
            trial_id=trial_id,
            title=str(recorded.get("title") or trial_id),
            short_title=str(recorded.get("short_title") or trial_id),
            registry_url=recorded.get("registry_url"),
            status=str(verdict.get("status")),
            reason=str(verdict.get("reason") or ""),
            blocking=blocking,
            criteria=criteria,
            arms=arms,
            disease_evidence=[_evidence_row(e) for e in verdict.get("disease_evidence") or []],
            data_problems=list(verdict.get("data_problems") or []),
            counts=counts,
        )


def build_review_page(decision: dict[str, Any], criteria_snapshot: dict[str, Any] | None) -> ReviewPage:
    """What the review page shows of one recorded decision (``AuditStore.get_decision``).

    ``criteria_snapshot`` is the recorded criteria version (titles, look-back windows);
    without it, trials are shown by id and labs use the default look-back.
    """
    content: dict[str, Any] = decision["content"]
    builder = _Builder(content, criteria_snapshot)
    patient_id = str(content.get("patient_ref") or "").removeprefix("Patient/")
    patient = next(
        (
            r
            for r in content.get("input_resources") or []
            if r.get("resourceType") == "Patient" and str(r.get("id")) == patient_id
        ),
        None,
    )
    verdicts = sorted(content.get("verdicts") or [], key=lambda v: _STATUS_ORDER.get(str(v.get("status")), 3))
    trials = [builder.trial(v) for v in verdicts]
    return ReviewPage(
        decision_id=str(decision.get("decision_id") or decision.get("record_id")),
        hook=str(content.get("hook") or ""),
        evaluated_at=str(content.get("evaluated_at") or ""),
        recorded_at=str(decision.get("recorded_at") or ""),
        age_years=_age(patient, builder.at),
        sex=str((patient or {}).get("gender") or "not recorded"),
        criteria_fingerprint=str(content.get("criteria_fingerprint") or ""),
        trials=trials,
        timeline=sorted(builder.events.values(), key=lambda e: e.on),
        data_problems=list(content.get("errors") or []),
    )
