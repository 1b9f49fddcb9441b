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
from datetime import date
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from service.audit import stored_decision
from service.engine.decision import CohortVerdict, CriterionVerdict, Decision, Evidence, State, TrialVerdict
from service.errors import TilCdsError
from service.settings import Settings

__all__ = [
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
    label: str
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
    fit: str
    fit_label: str
    because: str
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
    age_note: str | None
    sex: str
    criteria_fingerprint: str
    trials: list[TrialSection] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)


def _number(value: float | str | None) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def _evidence_row(evidence: Evidence) -> EvidenceRow:
    value = _number(evidence.value)
    reference = ""
    if evidence.upper_limit_of_normal is not None:
        reference = f"ULN {_number(evidence.upper_limit_of_normal)}"
    if evidence.upper_limit_source:
        reference = (
            f"{reference} — {evidence.upper_limit_source}" if reference else evidence.upper_limit_source
        )
    return EvidenceRow(
        description=evidence.description,
        value=evidence.value_text or (f"{value} {evidence.unit or ''}".strip() if value else ""),
        date=evidence.date or "",
        reference=reference,
        source=evidence.source or "",
        usable_until=evidence.stale_on.isoformat() if evidence.stale_on else None,
        lookback_note=f"{evidence.lookback_days}-day look-back" if evidence.lookback_days else None,
    )


FIT_LABELS = {"fits": "fits", "may_fit": "may fit", "does_not_fit": "does not fit"}


def _cohort_because(cohort: CohortVerdict) -> str:
    """The engine's reason that decides the cohort's line: the unmet one, else the first met."""
    wanted = State.NOT_MET if cohort.fit == "does_not_fit" else State.MET
    deciding = next((c for c in cohort.criteria if c.state is wanted), None)
    return deciding.reason if deciding is not None else ""


class _Builder:
    """Rows and timeline events from a decision: presentation only, every date the engine's."""

    def __init__(self, decision: Decision) -> None:
        self.at = decision.evaluated_at.date()
        self.events: dict[tuple[str, str], TimelineEvent] = {}

    def _event(self, on: date, what: str, item: str, trial_id: str) -> None:
        key = (on.isoformat(), what)
        event = self.events.setdefault(key, TimelineEvent(on.isoformat(), what, [], [], on <= self.at))
        if item not in event.items:
            event.items.append(item)
        if trial_id not in event.trials:
            event.trials.append(trial_id)

    def criterion(self, trial_id: str, verdict: CriterionVerdict) -> CriterionRow:
        for evidence in verdict.evidence:
            if evidence.stale_on is not None and evidence.date:
                self._event(
                    evidence.stale_on,
                    f"results of {evidence.date[:10]} leave their {evidence.lookback_days}-day look-back",
                    evidence.description,
                    trial_id,
                )
        if verdict.not_before is not None:
            self._event(verdict.not_before, "washout ends", f"{verdict.label}: {verdict.reason}", trial_id)
        state = verdict.state.value
        return CriterionRow(
            id=verdict.id,
            label=verdict.label,
            type=verdict.type,
            text=verdict.text,
            state=state,
            state_label=STATE_LABELS.get(state, state),
            reason=verdict.reason,
            evidence=[_evidence_row(e) for e in verdict.evidence],
            until=verdict.until.isoformat() if verdict.until else None,
            flags=list(verdict.flags),
            resolve_hint=verdict.resolve_hint,
            note=verdict.note,
        )

    def trial(self, verdict: TrialVerdict) -> TrialSection:
        criteria = [self.criterion(verdict.trial_id, c) for c in verdict.criteria]
        arms = [
            ArmSection(
                id=cohort.id,
                title=cohort.title,
                description=cohort.description,
                possible=cohort.possible,
                fit=cohort.fit,
                fit_label=FIT_LABELS[cohort.fit],
                because=_cohort_because(cohort),
                criteria=[self.criterion(verdict.trial_id, c) for c in cohort.criteria],
            )
            for cohort in verdict.cohorts
        ]
        rows = {row.id: row for row in [*criteria, *(c for arm in arms for c in arm.criteria)]}
        counts = {state.value: n for state, n in verdict.trial_level_counts().items() if n}
        return TrialSection(
            trial_id=verdict.trial_id,
            title=verdict.title,
            short_title=verdict.short_title,
            registry_url=verdict.registry_url,
            status=verdict.status,
            reason=verdict.reason,
            blocking=[rows[c] for c in verdict.blocking if c in rows],
            criteria=criteria,
            arms=arms,
            disease_evidence=[_evidence_row(e) for e in verdict.disease_evidence],
            data_problems=[],
            counts=counts,
        )


def build_review_page(record: dict[str, Any], criteria_snapshot: dict[str, Any] | None) -> ReviewPage:
    """What the review page shows of one recorded decision (``AuditStore.get_decision``).

    Everything comes from the record's :class:`Decision`; ``criteria_snapshot`` only
    names the trials of records written before the decision had a type.
    """
    content: dict[str, Any] = record["content"]
    decision = stored_decision(content, criteria_snapshot)
    builder = _Builder(decision)
    verdicts = sorted(decision.trials, key=lambda v: _STATUS_ORDER[v.status])
    trials = [builder.trial(v) for v in verdicts]
    patient = decision.patient
    return ReviewPage(
        decision_id=str(record.get("decision_id") or record.get("record_id")),
        hook=str(content.get("hook") or ""),
        evaluated_at=decision.evaluated_at.isoformat(),
        recorded_at=str(record.get("recorded_at") or ""),
        age_years=patient.age_years,
        age_note=patient.age_note,
        sex=patient.sex or "not recorded",
        criteria_fingerprint=decision.criteria_fingerprint,
        trials=trials,
        timeline=sorted(builder.events.values(), key=lambda e: e.on),
        data_problems=list(decision.data_problems),
    )
