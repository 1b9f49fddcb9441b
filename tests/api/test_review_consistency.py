"""The review page never contradicts itself: over generated decisions, a trial's headline,
its badges and its "what rules it out" list agree, and cohorts are shown as cohorts.

The decisions are built with the engine's own headline and cohort functions
(``trial_status``, ``cohort_fit``) from generated criterion states, then rendered with the
page's real template.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.routes.review import templates
from service.criteria import CriteriaSet
from service.engine import cohort_fit, decide, trial_status
from service.engine.decision import (
    CohortVerdict,
    CriterionVerdict,
    Decision,
    PatientSummary,
    State,
    TrialVerdict,
    decision_json,
)
from service.facts import build_facts
from service.mappings import Mappings
from service.review import build_review_page
from service.sandbox.synthetic import generate_patients

_states = st.sampled_from(list(State))


def _criteria(states: list[State], prefix: str, arm: str | None = None) -> tuple[CriterionVerdict, ...]:
    return tuple(
        CriterionVerdict(
            id=f"{prefix}-{i}",
            label=f"Criterion {prefix} {i}",
            type="inclusion",
            text="generated",
            source="S0",
            state=state,
            reason=f"reason {prefix} {i}",
            arm=arm,
        )
        for i, state in enumerate(states)
    )


@st.composite
def decisions(draw: st.DrawFn) -> Decision:
    trials = []
    for t in range(draw(st.integers(1, 3))):
        criteria = _criteria(draw(st.lists(_states, max_size=8)), f"t{t}")
        cohorts = []
        for a in range(draw(st.integers(0, 3))):
            arm_criteria = _criteria(draw(st.lists(_states, min_size=1, max_size=4)), f"t{t}a{a}", f"arm-{a}")
            cohorts.append(
                CohortVerdict(
                    f"arm-{a}", f"Cohort {a + 1}", "generated", cohort_fit(arm_criteria), arm_criteria
                )
            )
        status, reason, blocking = trial_status(criteria, tuple(cohorts), "lung cancer")
        trials.append(
            TrialVerdict(
                f"TRIAL-{t}",
                f"Trial {t}",
                f"T{t}",
                None,
                status,
                reason,
                criteria,
                tuple(cohorts),
                (),
                blocking,
            )
        )
    return Decision(
        datetime(2026, 11, 23, tzinfo=UTC), "sha256:c", "sha256:i", PatientSummary("Patient/p"), tuple(trials)
    )


@settings(max_examples=150, deadline=None)
@given(decisions())
def test_the_headline_the_badges_and_the_blocking_list_agree(decision: Decision) -> None:
    record = {
        "record_id": "00000000-0000-4000-8000-000000000001",
        "recorded_at": "2026-11-23T12:00:01+00:00",
        "content": {"hook": "patient-view", "decision": decision_json(decision)},
    }
    page = build_review_page(record, None)
    for trial in page.trials:
        verdict = decision.trial(trial.trial_id)
        assert verdict is not None
        if trial.status == "may_be_eligible":
            assert "not_met" not in trial.counts, "a 'not met' badge under 'May be eligible'"
            assert not trial.blocking
            assert "no trial criterion is known to be unmet" in trial.reason
        else:
            assert trial.blocking and all(row.state == "not_met" for row in trial.blocking)
            assert "no trial criterion is known to be unmet" not in trial.reason
        assert sum(trial.counts.values()) == len(verdict.criteria), "badges count trial-level criteria only"
        for arm in trial.arms:
            assert (arm.fit == "does_not_fit") == any(row.state == "not_met" for row in arm.criteria)
    html = templates.env.get_template("review.html").render(
        page=page, title="Why", url_for=lambda *args, **kwargs: "/static/x"
    )
    for trial in page.trials:
        section = html.split(f'<section id="trial-{trial.trial_id}"', 1)[1].split('<section id="trial-', 1)[0]
        counts = (
            section.split('<p class="counts"', 1)[1].split("</p>", 1)[0]
            if '<p class="counts"' in section
            else ""
        )
        headline = section.split("</p>", 1)[0]
        if "May be eligible" in headline:
            assert "not met" not in counts, (trial.trial_id, counts)
            assert "What rules it out" not in section
        if trial.status == "ruled_out":
            assert "What rules it out" in section


def test_criteria_read_on_record_never_go_stale_in_the_timeline(
    criteria: CriteriaSet, mappings: Mappings
) -> None:
    """The PD-L1 score is read "on record": no "leaves its 36500-day look-back" in 2126."""
    at = datetime(2026, 11, 23, tzinfo=UTC)
    for patient in generate_patients(at.date()):
        decision = decide(build_facts(patient.id, patient.resources, mappings), criteria, mappings, at)
        record = {
            "record_id": "r",
            "recorded_at": at.isoformat(),
            "content": {"decision": decision_json(decision)},
        }
        for event in build_review_page(record, None).timeline:
            assert date.fromisoformat(event.on) < date(2028, 1, 1), (patient.id, event)
            assert "36500" not in event.what
