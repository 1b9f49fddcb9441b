"""Verdicts -> CDS Hooks cards: one short, true card per trial the patient may be eligible for.

Cards never say "eligible": only the trial team decides that.  The summary names
the trial and what is left to confirm; the Markdown detail lists what is met (with
evidence), what is unknown and how to resolve it, what blocks until a date, and
what only a clinician can judge.
"""

from __future__ import annotations

import re
from datetime import date

from service.cdshooks import Card, Coding, Link, Source
from service.criteria import Trial
from service.engine import CriterionVerdict, Evidence, State, TrialVerdict

__all__ = ["OVERRIDE_REASONS", "SUMMARY_LIMIT", "trial_card", "new_therapy_warning_card"]

SUMMARY_LIMIT = 139
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
CONFIRMATION = "_Only the trial team can confirm eligibility; this card lists what the record shows._"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|!])")


def _md(text: str) -> str:
    """Escape Markdown so data reads as written: UCUM's ``10*9/L`` must not turn italic."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _evidence_text(evidence: Evidence) -> str:
    parts = [_md(evidence.description)]
    if evidence.value is not None and evidence.unit is not None:
        parts.append(
            _md(f"{evidence.value:g} {evidence.unit}")
            if isinstance(evidence.value, float)
            else _md(f"{evidence.value} {evidence.unit}")
        )
    if evidence.date:
        parts.append(evidence.date)
    if evidence.upper_limit_source:
        parts.append(
            _md(f"ULN {evidence.upper_limit_of_normal:g} from {evidence.upper_limit_source}")
            if evidence.upper_limit_of_normal is not None
            else _md(evidence.upper_limit_source)
        )
    if evidence.source:
        parts.append(f"`{evidence.source}`")
    return ", ".join(parts)


def _line(result: CriterionVerdict, *, with_hint: bool = False, with_evidence: bool = True) -> str:
    label = f"**{result.id}**" + (f" ({result.arm})" if result.arm else "")
    text = f"- {label}: {_md(result.reason)}"
    if with_hint and result.resolve_hint:
        text += f" → _{_md(result.resolve_hint)}_"
    if result.flags:
        text += " ⚠ " + _md("; ".join(result.flags))
    if with_evidence and result.evidence and result.state is not State.MET:
        text += " — " + "; ".join(_evidence_text(e) for e in result.evidence[:3])
    elif with_evidence and any(e.source for e in result.evidence):
        text += " — " + "; ".join(f"`{e.source}`" for e in result.evidence[:3] if e.source)
    return text


def _summary(trial: Trial, result: TrialVerdict) -> str:
    unknown = len(result.in_state(State.UNKNOWN))
    review = len(result.in_state(State.NEEDS_REVIEW))
    blocked_until = [c.until for c in result.in_state(State.NOT_YET) if c.until is not None]
    tail = f" ({unknown} unknown, {review} to review"
    if blocked_until:
        tail += f"; not before {max(blocked_until).isoformat()}"
    tail += ")"
    if not trial.criteria_complete:
        tail = tail[:-1] + "; criteria incomplete)"
    head = f"May be eligible: {trial.short_title} {trial.id}"
    summary = head + tail
    if len(summary) > SUMMARY_LIMIT:
        summary = f"May be eligible: {trial.id}{tail}"
    return summary[:SUMMARY_LIMIT]


def _detail(trial: Trial, result: TrialVerdict) -> str:
    sites = "; ".join(", ".join(p for p in (s.name, s.city, s.country) if p) for s in trial.sites)
    registry = (
        f"[{trial.id}]({trial.registry_url})"
        if trial.registry_url
        else f"`{trial.id}` ({trial.registry_note or 'no registry number'})"
    )
    lines = [
        f"**{_md(trial.title)}** — {registry}",
        _md(
            f"{trial.phase}; sponsor: {trial.sponsor}; site: {sites}; status: {trial.recruitment_status} ({trial.status_as_of})."
        ),
    ]
    if not trial.criteria_complete:
        lines.append(f"⚠ **Criteria incomplete:** {_md(trial.completeness_note or '')}")
    if result.disease_evidence:
        lines.append("**Diagnosis:** " + "; ".join(_evidence_text(e) for e in result.disease_evidence))
    possible_arms = [arm for arm in result.cohorts if arm.possible]
    if possible_arms:
        lines.append(
            "**Cohorts that may fit:** "
            + "; ".join(_md(f"{a.title} ({a.description})") for a in possible_arms)
        )
    sections: list[tuple[str, list[CriterionVerdict], bool]] = [
        ("Not yet (blocked until a date)", result.in_state(State.NOT_YET), False),
        ("Unknown — what would resolve it", result.in_state(State.UNKNOWN), True),
        ("Met", result.in_state(State.MET), False),
    ]
    for title, items, with_hint in sections:
        if items:
            lines.append(f"\n**{title}**")
            lines.extend(_line(item, with_hint=with_hint) for item in items)
    review = result.in_state(State.NEEDS_REVIEW)
    if review:
        lines.append(
            "\n**For the clinician to judge:** " + "; ".join(f"{c.id} ({_md(c.reason)})" for c in review)
        )
    lines.append(CONFIRMATION)
    return "\n".join(lines)


def trial_card(trial: Trial, result: TrialVerdict, review_url: str | None = None) -> Card:
    """The info card for a trial the patient may be eligible for."""
    links = []
    if trial.registry_url:
        links.append(Link(label=f"{trial.id} in the trial registry", url=trial.registry_url, type="absolute"))
    if review_url:
        links.append(Link(label="Why: every criterion with its evidence", url=review_url, type="absolute"))
    return Card(
        summary=_summary(trial, result),
        detail=_detail(trial, result),
        indicator="info",
        source=Source(
            label=f"TIL trial finder: {trial.short_title}",
            url=trial.registry_url,
            topic=Coding(system="urn:til-cds:trial", code=trial.id, display=trial.title[:120]),
        ),
        overrideReasons=OVERRIDE_REASONS,
        links=links or None,
    )


def new_therapy_warning_card(
    drug_names: list[str], trials: list[tuple[Trial, TrialVerdict]], today: date, review_url: str | None = None
) -> Card:
    """order-select: a new systemic anticancer therapy for a patient who may fit a TIL trial."""
    trial_ids = ", ".join(t.id for t, _ in trials)
    summary = f"Consider TIL trial referral before starting {', '.join(drug_names)}: may restart washout ({trial_ids})"
    if len(summary) > SUMMARY_LIMIT:
        summary = f"Consider TIL trial referral first: new therapy may restart washout ({trial_ids})"[
            :SUMMARY_LIMIT
        ]
    lines = [
        f"The draft order starts **{', '.join(drug_names)}** on {today.isoformat()}. The patient may be eligible for:"
    ]
    for trial, _result in trials:
        lines.append(
            f"- **{trial.id}** ({trial.short_title}): {trial.new_therapy_warning or 'check the trial washout'}"
        )
    lines.append("\nConsider discussing a referral with the trial team before signing. " + CONFIRMATION)
    first = trials[0][0]
    return Card(
        summary=summary,
        detail="\n".join(lines),
        indicator="warning",
        source=Source(
            label="TIL trial finder",
            url=first.registry_url,
            topic=Coding(system="urn:til-cds:trial", code=first.id),
        ),
        overrideReasons=OVERRIDE_REASONS,
        links=[
            Link(label=f"{t.id} in the trial registry", url=t.registry_url, type="absolute")
            for t, _ in trials
            if t.registry_url
        ]
        or None,
    )
