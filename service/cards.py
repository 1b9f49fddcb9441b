"""Decision -> CDS Hooks cards an oncologist reads in seconds, in a narrow side panel.

A card never says "eligible": only the trial team decides that.  Its detail keeps to a
budget (:data:`DETAIL_BUDGET` characters of rendered text) in a fixed order: what blocks
now or until when, at most three next steps (verbs, the most decisive first), one line of
counts, the registry's recruitment status with its source and date, and a data warning
when some of the record could not be read.  The met list and the review list live on the
review page the card links to.  Orderable next steps also come as a suggestion that
drafts the ServiceRequests, and a suggested trial comes with a referral suggestion.

Everything here reads the :class:`~service.engine.decision.TrialVerdict` (and the trial's
descriptive fields); no clinical knowledge is decided here.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from service.cdshooks import Action, Card, Coding, Link, Source, Suggestion
from service.criteria import Trial
from service.engine import State, TrialVerdict
from service.terminology import LOINC, SNOMED

__all__ = [
    "CONFIRMATION",
    "DETAIL_BUDGET",
    "OVERRIDE_REASONS",
    "SUMMARY_LIMIT",
    "CardDraft",
    "new_therapy_warning_card",
    "rendered_text",
    "trial_card",
]

SUMMARY_LIMIT = 139
DETAIL_BUDGET = 600
MAX_NEXT_STEPS = 3
TRIAL_SYSTEM = "urn:til-cds:trial"
OVERRIDE_SYSTEM = "urn:til-cds:override-reason"
OVERRIDE_REASONS = [
    Coding(system=OVERRIDE_SYSTEM, code="patient-declined", display="Patient declined"),
    Coding(
        system=OVERRIDE_SYSTEM, code="not-cell-therapy-candidate", display="Not a candidate for cell therapy"
    ),
    Coding(
        system=OVERRIDE_SYSTEM,
        code="known-ineligible",
        display="Known to be ineligible (reason not in the record)",
    ),
    Coding(system=OVERRIDE_SYSTEM, code="already-referred", display="Already referred or enrolled"),
    Coding(system=OVERRIDE_SYSTEM, code="cannot-travel", display="Cannot travel to the trial site"),
]
CONFIRMATION = "_Only the trial team can confirm eligibility._"
_REFERRAL = Coding(system=SNOMED, code="3457005", display="Patient referral")

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|!])")
_MARKDOWN_MARKS = re.compile(r"\\(.)|[*_`]")


def _md(text: str) -> str:
    """Escape Markdown so data reads as written."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def rendered_text(markdown: str) -> str:
    """What a reader sees of our Markdown: marks and escapes removed (the budget's measure)."""
    return _MARKDOWN_MARKS.sub(lambda m: m.group(1) or "", markdown)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:]


@dataclass
class CardDraft:
    """A card and the reasons a suggestion was left off it (recorded in the audit trail)."""

    card: Card
    problems: list[str] = field(default_factory=list)


def next_steps(verdict: TrialVerdict) -> list[str]:
    """At most three next steps, the one resolving most unknowns first, as verbs."""
    unknown = verdict.in_state(State.UNKNOWN)
    hints = Counter(_sentence(c.resolve_hint) for c in unknown if c.resolve_hint)
    order = {
        hint: index
        for index, hint in enumerate(dict.fromkeys(_sentence(c.resolve_hint or "") for c in unknown))
    }
    # "Order a CBC" is part of "Order a CBC with differential": keep the one that does both.
    covering = {h: next((o for o in hints if o != h and o.startswith(h + " ")), None) for h in hints}
    for hint, wider in covering.items():
        if wider is not None:
            hints[wider] += hints[hint]
    kept = [h for h in hints if covering[h] is None]
    ranked = sorted(kept, key=lambda hint: (-hints[hint], order[hint]))
    return ranked[:MAX_NEXT_STEPS]


def _status_line(trial: Trial) -> str:
    """The registry's status as a dated statement of its source, never as today's fact."""
    source = f"per {trial.status_source}"
    if trial.status_source_date is not None:
        source += f" of {trial.status_source_date.isoformat()}"
    else:
        source += " (undated)"
    line = f"{trial.recruitment_status} {source}"
    if not trial.criteria_complete:
        line += " · criteria incomplete in our source"
    return line


def _counts_line(verdict: TrialVerdict) -> str:
    met = len(verdict.in_state(State.MET))
    review = len(verdict.in_state(State.NEEDS_REVIEW))
    unknown = len(verdict.in_state(State.UNKNOWN))
    parts = [f"{met} criteria met from the record"]
    if unknown:
        parts.append(f"{unknown} unknown")
    parts.append(f"{review} need the trial team")
    return " · ".join(parts)


def _cohorts_line(verdict: TrialVerdict) -> str | None:
    possible = [c for c in verdict.cohorts if c.possible]
    if not verdict.cohorts:
        return None
    shown = sorted(possible, key=lambda c: c.fit != "fits")[:2]
    words = {"fits": "fits", "may_fit": "may fit"}
    return "; ".join(f"{c.title}: {words[c.fit]}" for c in shown)


def _detail(trial: Trial, verdict: TrialVerdict, data_problems: tuple[str, ...]) -> str:
    lines = []
    for criterion in verdict.in_state(State.NOT_YET)[:2]:
        lines.append(
            f"**Not before {criterion.until}:** {_md(criterion.label)} ({_md(_shorten(criterion.reason, 70))})"
        )
    steps = next_steps(verdict)
    if steps:
        lines.append("**Next:** " + " · ".join(_md(step) for step in steps))
    cohorts = _cohorts_line(verdict)
    if cohorts:
        lines.append("**Cohorts:** " + _md(cohorts))
    lines.append(_md(_counts_line(verdict)))
    lines.append(_md(_status_line(trial)))
    if data_problems:
        lines.append(
            _md(f"⚠ Some data could not be read ({_shorten(data_problems[0], 140)}); see the review page")
        )
    lines.append(CONFIRMATION)
    return "\n\n".join(lines)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _summary(trial: Trial, verdict: TrialVerdict) -> str:
    unknown = len(verdict.in_state(State.UNKNOWN))
    review = len(verdict.in_state(State.NEEDS_REVIEW))
    parts = [f"{unknown} unknown, {review} to review" if unknown else f"{review} to review"]
    not_before = verdict.not_before()
    if not_before is not None:
        parts.append(f"not before {not_before.isoformat()}")
    if not trial.criteria_complete:
        parts.append("criteria incomplete")
    head = f"May be eligible: {trial.short_title} {trial.id}"
    # The trial's name and id always stay; what does not fit goes (the detail says it
    # too): first "criteria incomplete", then the counts, never the washout's date.
    for dropped in ("criteria incomplete", parts[0]):
        if len(f"{head} ({'; '.join(parts)})") > SUMMARY_LIMIT and dropped in parts:
            parts.remove(dropped)
    summary = f"{head} ({'; '.join(parts)})" if parts else head
    return summary[:SUMMARY_LIMIT]


def _service_request(patient_reference: str, code: Coding, text: str, note: str) -> dict[str, object]:
    """A draft R4 ServiceRequest, validated by fhir.resources before it is offered."""
    coding = code.model_dump(exclude_none=True)
    _validate_service_request(tuple(coding.items()), text, note)
    return _draft_service_request(patient_reference, coding, text, note)


def _draft_service_request(
    patient_reference: str, coding: dict[str, object], text: str, note: str
) -> dict[str, object]:
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"coding": [coding], "text": text},
        "subject": {"reference": patient_reference},
        "note": [{"text": note}],
    }


@lru_cache(maxsize=1024)
def _validate_service_request(coding: tuple[tuple[str, object], ...], text: str, note: str) -> None:
    """Validate a draft once per order and trial, not per call: whether it is valid does not
    depend on the patient, whose reference (``Patient/`` and an id the context pattern has
    checked) is always a valid one.  A ValidationError is raised, and so not cached."""
    ServiceRequest.model_validate(_draft_service_request("Patient/example", dict(coding), text, note))


def _suggestions(
    trial: Trial, verdict: TrialVerdict, patient_reference: str
) -> tuple[list[Suggestion], list[str]]:
    """Order the missing tests (when a lab or serology resolves an unknown), and refer."""
    suggestions: list[Suggestion] = []
    problems: list[str] = []
    orders = list(dict.fromkeys(o for c in verdict.in_state(State.UNKNOWN) for o in c.orders))
    note = f"To check eligibility for {trial.short_title} ({trial.id})"
    try:
        actions = [
            Action(
                type="create",
                description=f"Draft an order: {order.label}",
                resource=_service_request(
                    patient_reference,
                    Coding(system=LOINC, code=order.loinc, display=order.label),
                    order.label,
                    note,
                ),
            )
            for order in orders
        ]
        if actions:
            suggestions.append(
                Suggestion(label="Order the missing tests", isRecommended=False, actions=actions)
            )
    except ValidationError as exc:
        problems.append(
            f"'Order the missing tests' left off: a draft ServiceRequest is invalid: {exc.errors()[0]['msg']}"
        )
    try:
        referral = _service_request(
            patient_reference,
            _REFERRAL,
            f"Referral to clinical trial {trial.id}",
            f"Refer to the trial team of {trial.short_title} ({trial.id}) to assess eligibility",
        )
        suggestions.append(
            Suggestion(
                label="Refer to the trial team",
                isRecommended=False,
                actions=[
                    Action(type="create", description=f"Draft a referral to {trial.id}", resource=referral)
                ],
            )
        )
    except ValidationError as exc:
        problems.append(
            f"'Refer to the trial team' left off: the draft referral is invalid: {exc.errors()[0]['msg']}"
        )
    return suggestions, problems


def trial_card(
    trial: Trial,
    verdict: TrialVerdict,
    review_url: str | None = None,
    *,
    patient_reference: str,
    data_problems: tuple[str, ...] = (),
) -> CardDraft:
    """The info card for a trial the patient may be eligible for."""
    links = []
    if trial.registry_url:
        links.append(Link(label=f"{trial.id} in the trial registry", url=trial.registry_url, type="absolute"))
    if review_url:
        links.append(Link(label="Every criterion with its evidence", url=review_url, type="absolute"))
    suggestions, problems = _suggestions(trial, verdict, patient_reference)
    card = Card(
        summary=_summary(trial, verdict),
        detail=_detail(trial, verdict, data_problems),
        indicator="info",
        source=Source(
            label=f"TIL trial finder: {trial.short_title}",
            url=trial.registry_url,
            topic=Coding(system=TRIAL_SYSTEM, code=trial.id, display=trial.title[:120]),
        ),
        suggestions=suggestions or None,
        selectionBehavior="any" if suggestions else None,
        overrideReasons=OVERRIDE_REASONS,
        links=links or None,
    )
    return CardDraft(card, problems)


def new_therapy_warning_card(
    drug_names: list[str],
    trials: list[tuple[Trial, TrialVerdict]],
    today: date,
    review_url: str | None = None,
) -> Card:
    """order-select: a selected order starts a systemic anticancer drug for a patient who
    may fit a TIL trial; starting it restarts the trial's washout."""
    trial_ids = ", ".join(t.id for t, _ in trials)
    drugs = ", ".join(drug_names)
    summary = f"Consider TIL trial referral before starting {drugs}: may restart washout ({trial_ids})"
    if len(summary) > SUMMARY_LIMIT:
        summary = f"Consider TIL trial referral first: new therapy may restart washout ({trial_ids})"[
            :SUMMARY_LIMIT
        ]
    lines = [f"The selected order starts **{_md(drugs)}** on {today.isoformat()}. The patient may fit:"]
    for trial, _verdict in trials:
        lines.append(
            f"- **{_md(trial.short_title)}** ({trial.id}): {_md(trial.new_therapy_warning or 'check the trial washout')}"
        )
    lines.append("\nDiscuss a referral with the trial team before signing. " + CONFIRMATION)
    first = trials[0][0]
    links = [
        Link(label=f"{t.id} in the trial registry", url=t.registry_url, type="absolute")
        for t, _ in trials
        if t.registry_url
    ]
    if review_url:
        links.append(Link(label="Every criterion with its evidence", url=review_url, type="absolute"))
    return Card(
        summary=summary,
        detail="\n".join(lines),
        indicator="warning",
        source=Source(
            label="TIL trial finder", url=first.registry_url, topic=Coding(system=TRIAL_SYSTEM, code=first.id)
        ),
        overrideReasons=OVERRIDE_REASONS,
        links=links or None,
    )
