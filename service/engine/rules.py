"""Rule evaluators for conditions, medications, tests, age and the all/any combinators.

Each evaluator is a pure function of (rule, context).  Three-valued logic with two
extra states: NOT_YET (blocked until a known date) and NEEDS_REVIEW (no data can
decide it).  In ``all``: NOT_MET wins, then UNKNOWN, then NOT_YET (latest date).
In ``any``: MET wins, then NOT_YET (earliest date), then UNKNOWN, else NOT_MET.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from service.criteria import (
    AgeRule,
    AllRule,
    AnyRule,
    HistologyRule,
    LabRule,
    NegativeTestRule,
    NoConditionRule,
    NoDriverAlterationRule,
    NoMedicationRule,
    NoResultRule,
    OnMedicationRule,
    PerformanceStatusRule,
    StageRule,
    SteroidDoseRule,
    WashoutRule,
)
from service.engine.context import EvaluationContext
from service.engine.labs import evaluate_lab, evaluate_no_result, older_than_text, rule_lookback_days
from service.engine.results import (
    ALL_HISTORY_DAYS,
    DEFAULT_ASSESSMENT_LOOKBACK_DAYS,
    DEFAULT_TEST_LOOKBACK_DAYS,
    Evidence,
    RuleOutcome,
    State,
    window_text,
    with_lookback,
)
from service.engine.sources import guard_unread_sources
from service.facts import (
    ADMINISTRATIONS,
    IMMUNIZATIONS,
    PROCEDURES,
    Exposure,
    ProcedureFact,
    RecordedCondition,
    TestResult,
    age_in_years,
)
from service.mappings import Mappings

__all__ = ["evaluate_rule", "performance_status_window_days"]


def _day(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment else None


def _diagnosis_evidence(diagnosis: RecordedCondition) -> Evidence:
    status = diagnosis.clinical_status or "status not recorded"
    return Evidence(
        description=f"{diagnosis.display} ({status}{', unconfirmed' if diagnosis.unconfirmed else ''})",
        source=str(diagnosis.source),
        date=_day(diagnosis.onset or diagnosis.recorded),
    )


def _drug_evidence(drug: Exposure, extra: str = "") -> Evidence:
    period = f"{_day(drug.start) or '?'} to {_day(drug.end) or 'ongoing' if drug.status == 'active' else _day(drug.end) or '?'}"
    return Evidence(
        description=f"{drug.text or 'medication'} ({drug.status}, {period}){extra}",
        source=str(drug.source),
        date=_day(drug.end or drug.start),
    )


def _test_evidence(result: TestResult) -> Evidence:
    return Evidence(
        description=f"{result.test.replace('_', ' ')}: {result.text or 'no interpretable value'}",
        source=str(result.source),
        value=result.polarity,
        date=_day(result.when),
    )


def _age(rule: AgeRule, context: EvaluationContext) -> RuleOutcome:
    birth = context.facts.birth_date
    if birth is None:
        return RuleOutcome(State.UNKNOWN, "no birth date on record", resolve_hint="record the birth date")
    age = age_in_years(birth, context.at)
    # A birthDate of "1935-11" or "1935" allows a range of ages; decide only if every one agrees.
    youngest = age_in_years(context.facts.birth_date_latest or birth, context.at)
    evidence = (
        Evidence(
            "age from Patient.birthDate", f"Patient/{context.facts.patient_id}", age, "a", birth.isoformat()
        ),
    )
    bounds = f"{rule.min_years if rule.min_years is not None else 0}–{rule.max_years if rule.max_years is not None else '∞'} years"

    def decide(years: int) -> RuleOutcome:
        if rule.min_years is not None and years < rule.min_years:
            return RuleOutcome(State.NOT_MET, f"age {years}; needs {bounds}", evidence)
        if rule.max_years is not None and years > rule.max_years:
            if rule.above_max == "needs_review":
                return RuleOutcome(
                    State.NEEDS_REVIEW,
                    f"age {years}: {rule.above_max_note or 'above the upper age limit'}",
                    evidence,
                )
            return RuleOutcome(State.NOT_MET, f"age {years}; needs {bounds}", evidence)
        return RuleOutcome(State.MET, f"age {years} (needs {bounds})", evidence)

    oldest_outcome, youngest_outcome = decide(age), decide(youngest)
    if oldest_outcome.state is youngest_outcome.state:
        return oldest_outcome
    return RuleOutcome(
        State.UNKNOWN,
        f"age {youngest}–{age}: the birth date is recorded without its day; needs {bounds}",
        evidence,
        resolve_hint="record the full birth date",
    )


def _plus_days(moment: datetime, days: int) -> datetime | None:
    """``moment`` plus ``days``, or None for a date so far in the future it cannot be added to."""
    try:
        return moment + timedelta(days=days)
    except OverflowError:
        return None


def _last_present(diagnosis: RecordedCondition, at: datetime) -> datetime | None:
    """When the condition was last known present: now if active, else its abatement."""
    if diagnosis.is_active:
        return at
    return diagnosis.abatement or diagnosis.onset or diagnosis.recorded


def _no_condition(rule: NoConditionRule, context: EvaluationContext) -> RuleOutcome:
    excluded = {
        id(d) for vs in rule.unless_value_sets for d in [*context.diagnoses_in(vs), *context.tentative_in(vs)]
    }
    found: list[RecordedCondition] = []
    undated: list[RecordedCondition] = []
    for value_set in rule.value_sets:
        for diagnosis in [*context.diagnoses_in(value_set), *context.tentative_in(value_set)]:
            if id(diagnosis) in excluded or diagnosis in found:
                continue
            if not diagnosis.is_active and not rule.include_history:
                continue
            if rule.onset_within_days is not None:
                last = _last_present(diagnosis, context.at)
                if last is None:
                    undated.append(diagnosis)
                    continue
                if context.at - last > timedelta(days=rule.onset_within_days):
                    continue
            found.append(diagnosis)
    names = ", ".join(context.mappings.value_sets[v].display for v in rule.value_sets)
    if found and all(d.unconfirmed for d in found):
        return RuleOutcome(
            State.UNKNOWN,
            f"{names} recorded as unconfirmed, provisional or differential only; confirm the diagnosis",
            tuple(_diagnosis_evidence(d) for d in found),
        )
    if found:
        evidence = tuple(_diagnosis_evidence(d) for d in found)
        if rule.not_met_if_on_classes:
            treated = [
                drug
                for c in rule.not_met_if_on_classes
                for drug in context.drugs_in(c)
                if context.is_current(drug)
            ]
            if treated:
                return RuleOutcome(
                    State.NOT_MET,
                    f"{names} recorded and treated",
                    evidence + tuple(_drug_evidence(d) for d in treated),
                )
        state = State.NOT_MET if rule.presence_state == "not_met" else State.UNKNOWN
        return RuleOutcome(
            state, _with_codes(rule.presence_note or f"{names} recorded", found, context), evidence
        )
    if undated:
        return RuleOutcome(
            State.UNKNOWN,
            f"{names} recorded without dates; confirm when",
            tuple(_diagnosis_evidence(d) for d in undated),
        )
    lost = context.unreadable(PROCEDURES, value_sets=rule.value_sets)
    if lost:
        return RuleOutcome(
            State.UNKNOWN, f"no {names} among the conditions; procedures could not be read ({lost})"
        )
    other_than = _and_list([context.mappings.value_sets[v].display for v in rule.unless_value_sets], "or")
    absent = f"no {names.lower()}{f' other than {other_than.lower()}' if other_than else ''} recorded" + (
        f" {window_text(rule.onset_within_days)}" if rule.onset_within_days is not None else ""
    )
    if rule.absence_state == "needs_review":
        return RuleOutcome(State.NEEDS_REVIEW, f"{absent}; {rule.absence_note or 'confirm'}")
    return RuleOutcome(State.MET, absent)


def _negative_test(rule: NegativeTestRule, context: EvaluationContext) -> RuleOutcome:
    test = context.mappings.qualitative_tests[rule.test]
    if (
        rule.only_for_sex
        and context.facts.sex in ("male", "female")
        and context.facts.sex != rule.only_for_sex
    ):
        return RuleOutcome(State.MET, f"not applicable ({context.facts.sex})", not_applicable=True)
    diagnoses = [
        d
        for vs in rule.value_sets
        for d in [*context.diagnoses_in(vs), *context.tentative_in(vs)]
        if d.is_active
    ]
    if rule.diagnosis_within_days is not None:
        window = timedelta(days=rule.diagnosis_within_days)
        diagnoses = [d for d in diagnoses if context.at - (d.onset or d.recorded or context.at) <= window]
    if diagnoses and rule.newer_negative_test_wins:
        newest_test = next(iter(context.facts.tests.get(rule.test, [])), None)
        diagnosed = [d.onset or d.recorded for d in diagnoses]
        if (
            newest_test is not None
            and newest_test.polarity == "negative"
            and newest_test.when is not None
            and all(when is not None and newest_test.when > when for when in diagnosed)
        ):
            diagnoses = []
    if diagnoses and all(d.unconfirmed for d in diagnoses):
        return RuleOutcome(
            State.UNKNOWN,
            f"{diagnoses[0].display} recorded as unconfirmed, provisional or differential only; confirm with a test",
            tuple(_diagnosis_evidence(d) for d in diagnoses),
            resolve_hint=test.order_hint,
        )
    if diagnoses:
        return RuleOutcome(
            State.NOT_MET,
            f"{diagnoses[0].display} recorded",
            tuple(_diagnosis_evidence(d) for d in diagnoses),
        )
    if rule.test in context.facts.unavailable:
        return RuleOutcome(
            State.UNKNOWN,
            f"{test.display} could not be retrieved: {context.facts.unavailable[rule.test]}",
            resolve_hint=test.order_hint,
        )
    lookback = timedelta(days=test.lookback_days or DEFAULT_TEST_LOOKBACK_DAYS)
    results = [
        r for r in context.facts.tests.get(rule.test, []) if r.when is None or context.at - r.when <= lookback
    ]
    if not results:
        older = next(iter(context.facts.tests.get(rule.test, [])), None)
        shown = (
            f"{test.display} {older.polarity or 'result'} of {older.when.date().isoformat()} is older "
            f"than {lookback.days} days"
            if older is not None and older.when is not None
            else f"no {test.display} on record"
        )
        return RuleOutcome(State.UNKNOWN, shown, resolve_hint=test.order_hint)
    latest = results[0]
    if latest.polarity in ("positive", "negative"):
        # A result read inside the test's look-back goes stale like a lab's (a negative hCG
        # of 20 days ago stops counting in 10): the evidence says when.
        return with_lookback(
            RuleOutcome(
                State.MET if latest.polarity == "negative" else State.NOT_MET,
                f"{test.display} {latest.polarity} on {_day(latest.when) or 'undated'}",
                (_test_evidence(latest),),
            ),
            lookback.days,
        )
    return RuleOutcome(
        State.UNKNOWN,
        f"{test.display} result not interpretable",
        (_test_evidence(latest),),
        resolve_hint=test.order_hint,
    )


def _histology(rule: HistologyRule, context: EvaluationContext) -> RuleOutcome:
    required = [d for vs in rule.required_value_sets for d in context.diagnoses_in(vs) if d.is_active]
    excluded = [d for vs in rule.excluded_value_sets for d in context.diagnoses_in(vs) if d.is_active]
    excluded = [d for d in excluded if all(d is not r for r in required)]
    names = " or ".join(context.mappings.value_sets[v].display for v in rule.required_value_sets)
    if required and excluded:
        return RuleOutcome(
            State.NEEDS_REVIEW,
            f"{required[0].display} and {excluded[0].display} both recorded; confirm the histology",
            tuple(_diagnosis_evidence(d) for d in required + excluded),
        )
    tentative = list(
        {
            id(d): d
            for vs in [*rule.required_value_sets, *rule.excluded_value_sets]
            for d in context.tentative_in(vs)
            if d.is_active
        }.values()
    )
    if tentative and not excluded:
        return RuleOutcome(
            State.UNKNOWN,
            f"{tentative[0].display} is recorded as unconfirmed, provisional or differential only; "
            f"confirm the histology (needs {names})",
            tuple(_diagnosis_evidence(d) for d in required + tentative),
            resolve_hint="confirm the histology from the pathology report",
        )
    if required:
        return RuleOutcome(
            State.MET, f"{required[0].display} recorded", tuple(_diagnosis_evidence(d) for d in required)
        )
    if excluded:
        return RuleOutcome(
            State.NOT_MET,
            f"{excluded[0].display} recorded; needs {names}",
            tuple(_diagnosis_evidence(d) for d in excluded),
        )
    return RuleOutcome(
        State.UNKNOWN,
        f"histology not coded; needs {names}",
        resolve_hint="confirm the histology from the pathology report",
    )


def _exposures(
    classes: list[str], context: EvaluationContext, unless: list[str] | None = None
) -> list[Exposure]:
    skipped = {id(d) for c in unless or [] for d in context.drugs_in(c)}
    seen: list[Exposure] = []
    for class_name in classes:
        for drug in context.drugs_in(class_name):
            if id(drug) not in skipped and drug not in seen:
                seen.append(drug)
    return seen


def _last_date(drug: Exposure) -> datetime | None:
    """The newest date the record gives for a course: its end, else the newest evidence of it
    being acted on (an administration, the order), else its start."""
    dates = [d for d in (drug.end, drug.last_evidence[0] if drug.last_evidence else None) if d is not None]
    return max(dates) if dates else drug.start


def _drug_caveats(
    outcome: RuleOutcome,
    context: EvaluationContext,
    classes: list[str],
    within_days: int | None,
    absence: State,
) -> RuleOutcome:
    """Stale orders of the classes become flags; a medication that names no drug turns an
    answer that rests on the drug's absence (``absence``) into unknown."""
    stale = [note for c in classes for d in context.drugs_in(c) if (note := context.stale_note(d))]
    flags = outcome.flags + tuple(dict.fromkeys(stale))
    unnamed = context.unidentified_drugs(within_days) if outcome.state is absence else []
    if unnamed:
        listed = "; ".join(f"{d.source}: {d.unidentified}" for d in unnamed)
        return RuleOutcome(
            State.UNKNOWN,
            f"{outcome.reason}, but a medication on record cannot be identified ({listed})",
            outcome.evidence + tuple(_drug_evidence(d) for d in unnamed),
            flags=flags,
            resolve_hint="identify the medication: its Medication resource was not in the data",
        )
    return replace(outcome, flags=flags)


def _with_codes(reason: str, diagnoses: list[RecordedCondition], context: EvaluationContext) -> str:
    """The reason, naming the codes of entries whose value set does not say they are malignant."""
    uncertain = [
        d
        for d in diagnoses
        if any(
            context.mappings.value_sets[name].names_uncertain_behaviour
            for name in context.mappings.value_sets_containing(list(d.codings), d.text)
        )
    ]
    if not uncertain:
        return reason
    shown = "; ".join(
        f"{d.display} ({', '.join(code for _, code in d.codings) or 'no code'})" for d in uncertain
    )
    return f"{reason}: {shown}"


def _in_window(drug: Exposure, context: EvaluationContext, within_days: int | None) -> bool:
    if context.is_current(drug):
        return True
    if within_days is None:
        return True
    last = _last_date(drug)
    return (
        last is not None
        and last <= context.at + timedelta(hours=12)
        and context.at - last <= timedelta(days=within_days)
    )


def _no_medication(rule: NoMedicationRule, context: EvaluationContext) -> RuleOutcome:
    names = ", ".join(context.mappings.drug_classes[c].display for c in rule.classes)
    exposed = [
        d
        for d in _exposures(rule.classes, context, rule.unless_classes)
        if _in_window(d, context, rule.within_days)
    ]
    if exposed:
        return RuleOutcome(State.NOT_MET, f"{names} on record", tuple(_drug_evidence(d) for d in exposed))
    if rule.within_days is None or window_text(rule.within_days) == "on record":
        return RuleOutcome(State.MET, f"no {names} on record")
    window = f" {window_text(rule.within_days)}" if rule.within_days else " currently"
    return RuleOutcome(State.MET, f"no {names} recorded{window}")


def _on_medication(rule: OnMedicationRule, context: EvaluationContext) -> RuleOutcome:
    names = ", ".join(context.mappings.drug_classes[c].display for c in rule.classes)
    taking = [d for d in _exposures(rule.classes, context) if _in_window(d, context, rule.within_days)]
    if taking:
        return RuleOutcome(
            State.MET,
            f"{names} {window_text(rule.within_days)}",
            tuple(_drug_evidence(d) for d in taking),
        )
    return RuleOutcome(State.NOT_MET, f"no {names} {window_text(rule.within_days)}")


def _procedure_washouts(
    rule: WashoutRule, context: EvaluationContext
) -> tuple[list[tuple[datetime, ProcedureFact, str]], list[ProcedureFact]]:
    """Procedures (radiotherapy) still in the washout, with the date it lifts; and those too vaguely dated."""
    blocking: list[tuple[datetime, ProcedureFact, str]] = []
    undated: list[ProcedureFact] = []
    seen: set[int] = set()
    for value_set in rule.procedure_value_sets:
        for procedure in context.diagnoses_in(value_set):
            if not isinstance(procedure, ProcedureFact) or id(procedure) in seen:
                continue
            seen.add(id(procedure))
            if procedure.is_active:
                ends_today = " — in progress; the date assumes it ends today"
                blocking.append((context.at + timedelta(days=rule.days), procedure, ends_today))
            elif procedure.abatement is not None:
                lifts = _plus_days(procedure.abatement, rule.days)
                if lifts is None:
                    undated.append(procedure)
                elif lifts > context.at:
                    blocking.append((lifts, procedure, ""))
            elif procedure.onset is None or procedure.onset > context.at - timedelta(
                days=rule.days + rule.procedure_course_days
            ):
                # completed, but when it ended is not recorded and it began recently enough to matter
                undated.append(procedure)
    return blocking, undated


def _washout(rule: WashoutRule, context: EvaluationContext) -> RuleOutcome:
    names = ", ".join(context.mappings.drug_classes[c].display for c in rule.classes)
    blocking: list[tuple[datetime, Exposure, str]] = []
    undated: list[Exposure] = []
    for drug in _exposures(rule.classes, context):
        if context.is_current(drug):
            blocking.append(
                (context.at + timedelta(days=rule.days), drug, " — ongoing; the date assumes it stops today")
            )
            continue
        last = _last_date(drug)
        if last is None:
            undated.append(drug)
            continue
        lifts = _plus_days(last, rule.days)
        if lifts is None:
            undated.append(drug)
        elif lifts > context.at:
            blocking.append((lifts, drug, ""))
    procedures, undated_procedures = _procedure_washouts(rule, context)
    if rule.procedure_value_sets:
        names += " or " + ", ".join(context.mappings.value_sets[v].display for v in rule.procedure_value_sets)
    if blocking or procedures:
        dated = [(lifts, drug.text or names, extra) for lifts, drug, extra in blocking] + [
            (lifts, procedure.display, extra) for lifts, procedure, extra in procedures
        ]
        lifts, what, extra = max(dated, key=lambda item: item[0])
        evidence = tuple(_drug_evidence(d, e) for _, d, e in blocking) + tuple(
            _diagnosis_evidence(p) for _, p, _ in procedures
        )
        return RuleOutcome(
            State.NOT_YET,
            f"{rule.days}-day washout after {what} ends {lifts.date().isoformat()}{extra}",
            evidence,
            until=lifts.date(),
        )
    if undated or undated_procedures:
        return RuleOutcome(
            State.UNKNOWN,
            f"{names} recorded without a usable end date; confirm when it was last given",
            tuple(_drug_evidence(d) for d in undated)
            + tuple(_diagnosis_evidence(p) for p in undated_procedures),
            resolve_hint=f"confirm the date of the last {names.lower()}",
        )
    for what, lost in (
        (PROCEDURES, context.unreadable(PROCEDURES, value_sets=rule.procedure_value_sets)),
        (IMMUNIZATIONS, context.unreadable(IMMUNIZATIONS, classes=rule.classes)),
        (ADMINISTRATIONS, context.unreadable(ADMINISTRATIONS, classes=rule.classes)),
    ):
        if lost:
            return RuleOutcome(
                State.UNKNOWN,
                f"no {names} in the last {rule.days} days on record; {what} could not be read ({lost})",
                resolve_hint=f"confirm from the {what} that nothing falls in the washout period",
            )
    return RuleOutcome(State.MET, f"no {names} in the last {rule.days} days on record")


def _steroid_dose(rule: SteroidDoseRule, context: EvaluationContext) -> RuleOutcome:
    steroid_class_name = context.mappings.roles.drug_classes.corticosteroid_dose
    steroid_class = context.mappings.drug_classes[steroid_class_name]
    total = 0.0
    evidence: list[Evidence] = []
    problems: list[str] = []
    for drug in context.drugs_in(steroid_class_name):
        if not context.is_current(drug):
            continue
        if any(route in drug.route for route in steroid_class.non_systemic_routes):
            evidence.append(_drug_evidence(drug, f"; route '{drug.route}' is not systemic, ignored"))
            continue
        match = context.mappings.match_drug(steroid_class_name, list(drug.codings), drug.text)
        factor = match.prednisone_equivalent_factor if match else None
        if drug.dose_mg_per_day is None or factor is None:
            problems.append(f"{drug.text}: {drug.dose_problem or 'no prednisone-equivalent factor'}")
            evidence.append(_drug_evidence(drug))
            continue
        equivalent = drug.dose_mg_per_day * factor
        total += equivalent
        evidence.append(
            _drug_evidence(
                drug, f"; {drug.dose_mg_per_day:g} mg/day = {equivalent:.1f} mg/day prednisone-equivalent"
            )
        )
    symbol = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}[rule.comparison]
    limit = f"{symbol} {rule.prednisone_mg_per_day:g} mg/day prednisone-equivalent"
    holds = {
        "ge": total >= rule.prednisone_mg_per_day,
        "gt": total > rule.prednisone_mg_per_day,
        "le": total <= rule.prednisone_mg_per_day,
        "lt": total < rule.prednisone_mg_per_day,
    }[rule.comparison]
    if not holds:
        return RuleOutcome(
            State.NOT_MET,
            f"systemic corticosteroids {total:.1f} mg/day prednisone-equivalent; needs {limit}",
            tuple(evidence),
        )
    if problems:
        return RuleOutcome(
            State.UNKNOWN,
            f"current systemic corticosteroid without a computable daily dose ({'; '.join(problems)})",
            tuple(evidence),
            resolve_hint="record the steroid dose and frequency",
        )
    if not evidence:
        return RuleOutcome(State.MET, "no current systemic corticosteroid on record")
    return RuleOutcome(
        State.MET,
        f"systemic corticosteroids {total:.1f} mg/day prednisone-equivalent (needs {limit})",
        tuple(evidence),
    )


def _and_list(items: list[str], conjunction: str = "and") -> str:
    """'', 'A', 'A and B', 'A, B and C': how a reason names several things."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _no_driver_alteration(rule: NoDriverAlterationRule, context: EvaluationContext) -> RuleOutcome:
    positives = [d for vs in rule.positive_value_sets for d in context.diagnoses_in(vs)]
    if positives:
        return RuleOutcome(
            State.NOT_MET,
            f"{positives[0].display} recorded",
            tuple(_diagnosis_evidence(d) for d in positives),
        )
    positive_tests = [
        r for t in rule.tests for r in context.facts.tests.get(t, []) if r.polarity == "positive"
    ]
    if positive_tests:
        return RuleOutcome(
            State.NOT_MET, "driver alteration detected", tuple(_test_evidence(r) for r in positive_tests)
        )
    tested = _and_list([context.mappings.qualitative_tests[t].display for t in rule.tests])
    implying = _exposures(rule.implying_medication_classes, context)
    if implying:
        treated_with = _and_list(
            [context.mappings.drug_classes[c].display for c in rule.implying_medication_classes], "or"
        )
        return RuleOutcome(
            State.NOT_MET,
            f"treated with a drug of the class {treated_with}, which implies a driver alteration",
            tuple(_drug_evidence(d) for d in implying),
        )
    evidence: list[Evidence] = []
    missing: list[str] = [
        context.mappings.qualitative_tests[t].display + " (could not be retrieved)"
        for t in rule.tests
        if t in context.facts.unavailable
    ]
    for test_name, negative_set in zip(rule.tests, rule.negative_value_sets, strict=False):
        if test_name in context.facts.unavailable:
            continue
        negative_tests = [r for r in context.facts.tests.get(test_name, []) if r.polarity == "negative"]
        negative_conditions = context.diagnoses_in(negative_set)
        if negative_tests:
            evidence.append(_test_evidence(negative_tests[0]))
        elif negative_conditions:
            evidence.append(_diagnosis_evidence(negative_conditions[0]))
        else:
            missing.append(context.mappings.qualitative_tests[test_name].display)
    if missing:
        return RuleOutcome(
            State.UNKNOWN,
            f"no result for {', '.join(missing)}",
            tuple(evidence),
            resolve_hint=f"find or order molecular testing: {tested}",
        )
    return RuleOutcome(State.MET, f"negative: {tested}", tuple(evidence))


def performance_status_window_days(mappings: Mappings) -> int:
    """Days an ECOG or Karnofsky assessment stays usable (the ECOG analyte's look-back)."""
    ecog = mappings.analytes[mappings.roles.analytes.ecog_performance_status]
    return ecog.lookback_days or DEFAULT_ASSESSMENT_LOOKBACK_DAYS


def _performance_status(rule: PerformanceStatusRule, context: EvaluationContext) -> RuleOutcome:
    roles = context.mappings.roles.analytes
    scales = {"ecog": roles.ecog_performance_status, "karnofsky": roles.karnofsky_performance_status}
    ecog_definition = context.mappings.analytes[scales["ecog"]]
    karnofsky_definition = context.mappings.analytes[scales["karnofsky"]]
    if set(scales.values()) & set(context.facts.unavailable):
        return RuleOutcome(
            State.UNKNOWN,
            "performance status could not be retrieved",
            resolve_hint=ecog_definition.order_hint,
        )
    window = timedelta(days=performance_status_window_days(context.mappings))
    assessments = [
        (result, scale)
        for scale in ("ecog", "karnofsky")
        for result in context.facts.labs.get(scales[scale], ())
        if result.when is not None
        and result.value is not None
        and timedelta(0) <= context.at - result.when <= window
    ]
    if not assessments:
        older = [
            older_than_text(newest, "ECOG" if scale == "ecog" else "Karnofsky", window.days)
            for scale in ("ecog", "karnofsky")
            for newest in context.facts.labs.get(f"{scale}_performance_status", ())[:1]
        ]
        shown = "; ".join(text for text in older if text)
        return RuleOutcome(
            State.UNKNOWN,
            f"no ECOG or Karnofsky performance status in the last {window.days} days"
            + (f" ({shown})" if shown else ""),
            resolve_hint=ecog_definition.order_hint,
        )
    newest_day = max(r.when for r, _ in assessments if r.when is not None).date()
    newest = [(r, scale) for r, scale in assessments if r.when is not None and r.when.date() == newest_day]
    table = context.mappings.performance_status_equivalence
    limits = " or ".join(
        part
        for part in (
            f"ECOG ≤ {rule.ecog_max}" if rule.ecog_max is not None else "",
            f"Karnofsky ≥ {rule.karnofsky_min}%" if rule.karnofsky_min is not None else "",
        )
        if part
    )
    outcomes: list[RuleOutcome] = []
    for result, scale in newest:
        value = int(result.value or 0)
        evidence = (
            Evidence(result.display, str(result.source), result.value, result.unit, _day(result.when)),
        )
        label = f"{'ECOG' if scale == 'ecog' else 'Karnofsky'} {value}{'%' if scale == 'karnofsky' else ''} on {_day(result.when)}"
        if scale == "ecog" and rule.ecog_max is not None:
            holds: bool | None = value <= rule.ecog_max
        elif scale == "karnofsky" and rule.karnofsky_min is not None:
            holds = value >= rule.karnofsky_min
        elif scale == "ecog" and rule.karnofsky_min is not None:
            row = next((r for r in table if r.ecog == value), None)
            holds = (
                None
                if row is None
                else True
                if row.karnofsky_min >= rule.karnofsky_min
                else False
                if row.karnofsky_max < rule.karnofsky_min
                else None
            )
            label += " (read on the Karnofsky scale by the ECOG-Karnofsky equivalence)"
        else:
            row = next((r for r in table if r.karnofsky_min <= value <= r.karnofsky_max), None)
            holds = None if row is None or rule.ecog_max is None else row.ecog <= rule.ecog_max
            label += f" (≈ ECOG {row.ecog} by the ECOG-Karnofsky equivalence)" if row else ""
        state = State.UNKNOWN if holds is None else State.MET if holds else State.NOT_MET
        outcomes.append(RuleOutcome(state, f"{label}; needs {limits}", evidence))
    chosen = next((o for o in outcomes if o.state is State.MET), None) or next(
        (o for o in outcomes if o.state is State.NOT_MET), outcomes[0]
    )
    if chosen.state is State.UNKNOWN:
        return replace(
            chosen,
            resolve_hint=ecog_definition.order_hint
            if rule.ecog_max is not None
            else karnofsky_definition.order_hint,
        )
    return chosen


def _stage(rule: StageRule, context: EvaluationContext) -> RuleOutcome:
    staging = context.mappings.staging
    if "staging" in context.facts.unavailable:
        return RuleOutcome(
            State.UNKNOWN,
            f"stage could not be retrieved: {context.facts.unavailable['staging']}",
            resolve_hint=staging.order_hint,
        )
    implying = [
        diagnosis
        for value_set in rule.met_if_value_sets
        for diagnosis in context.diagnoses_in(value_set)
        if diagnosis.is_active
    ]
    if implying:
        names = ", ".join(context.mappings.value_sets[v].display for v in rule.met_if_value_sets)
        return RuleOutcome(
            State.MET,
            f"{names} recorded ({implying[0].text or 'coded'})",
            tuple(_diagnosis_evidence(d) for d in implying),
        )
    stages = sorted(
        context.facts.stages,
        key=lambda s: s.when or datetime.min.replace(tzinfo=context.at.tzinfo),
        reverse=True,
    )
    if not stages:
        return RuleOutcome(State.UNKNOWN, "no stage group recorded", resolve_hint=staging.order_hint)
    newest = stages[0]
    roman = {1: "I", 2: "II", 3: "III", 4: "IV"}
    evidence = (
        Evidence(
            f"stage group: {newest.text}", str(newest.source), roman[newest.stage], None, _day(newest.when)
        ),
    )
    if newest.stage >= rule.met_from:
        return RuleOutcome(State.MET, f"stage {roman[newest.stage]} recorded", evidence)
    if rule.review_from is not None and newest.stage >= rule.review_from:
        return RuleOutcome(
            State.NEEDS_REVIEW,
            f"stage {roman[newest.stage]} recorded: {rule.review_note or 'review'}",
            evidence,
        )
    return RuleOutcome(
        State.NOT_MET, f"stage {roman[newest.stage]} recorded; needs stage {roman[rule.met_from]}", evidence
    )


def _combine(rule: AllRule | AnyRule, context: EvaluationContext) -> RuleOutcome:
    outcomes = [evaluate_rule(child, context) for child in rule.rules]
    states = [o.state for o in outcomes]
    evidence = tuple(e for o in outcomes for e in o.evidence)
    flags = tuple(dict.fromkeys(f for o in outcomes for f in o.flags))  # one warning once
    if isinstance(rule, AllRule):
        order = (State.NOT_MET, State.UNKNOWN, State.NOT_YET, State.NEEDS_REVIEW)
        chosen = next((s for s in order if s in states), State.MET)
    else:
        order = (State.MET, State.NOT_YET, State.UNKNOWN, State.NEEDS_REVIEW)
        chosen = next((s for s in order if s in states), State.NOT_MET)
        if chosen is State.MET:
            winner = next(o for o in outcomes if o.state is State.MET)
            return RuleOutcome(State.MET, winner.reason, winner.evidence, flags=winner.flags)
    relevant = [o for o in outcomes if o.state is chosen]
    dates = [o.until for o in relevant if o.until is not None]
    until = (max(dates) if isinstance(rule, AllRule) else min(dates)) if dates else None
    hints = [o.resolve_hint for o in outcomes if o.resolve_hint and o.state is not State.MET]
    joiner = "; and " if isinstance(rule, AllRule) else "; or "
    reason = joiner.join(o.reason for o in (relevant if isinstance(rule, AllRule) else outcomes))
    return RuleOutcome(
        chosen,
        reason,
        evidence,
        until=until,
        flags=flags,
        resolve_hint=" or ".join(dict.fromkeys(hints)) or None,
    )


_EVALUATORS: dict[type[Any], Callable[[Any, EvaluationContext], RuleOutcome]] = {
    AgeRule: _age,
    LabRule: lambda rule, context: with_lookback(
        evaluate_lab(rule, context), rule_lookback_days(rule, context.mappings)
    ),
    NoResultRule: evaluate_no_result,
    NegativeTestRule: _negative_test,
    NoConditionRule: _no_condition,
    HistologyRule: _histology,
    NoMedicationRule: lambda rule, context: _drug_caveats(
        _no_medication(rule, context),
        context,
        rule.classes,
        ALL_HISTORY_DAYS if rule.within_days is None else rule.within_days,
        State.MET,
    ),
    OnMedicationRule: lambda rule, context: _drug_caveats(
        _on_medication(rule, context), context, rule.classes, rule.within_days, State.NOT_MET
    ),
    WashoutRule: lambda rule, context: _drug_caveats(
        _washout(rule, context), context, rule.classes, rule.days, State.MET
    ),
    SteroidDoseRule: lambda rule, context: _drug_caveats(
        _steroid_dose(rule, context),
        context,
        [context.mappings.roles.drug_classes.corticosteroid_dose],
        None,
        State.MET,
    ),
    NoDriverAlterationRule: _no_driver_alteration,
    PerformanceStatusRule: lambda rule, context: with_lookback(
        _performance_status(rule, context), performance_status_window_days(context.mappings)
    ),
    StageRule: _stage,
    AllRule: _combine,
    AnyRule: _combine,
}


def evaluate_rule(rule: Any, context: EvaluationContext) -> RuleOutcome:
    """Evaluate one rule of any kind (dispatch on its model class), guarded against lost sources."""
    outcome = _EVALUATORS[type(rule)](rule, context)
    return guard_unread_sources(rule, outcome, context.facts.unavailable, context.mappings)
