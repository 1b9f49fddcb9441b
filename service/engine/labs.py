"""Numeric lab and score criteria: look-back windows, UCUM conversion, ULN multiples."""

from __future__ import annotations

from datetime import datetime, timedelta

from service.criteria import LabRule, NoResultRule
from service.engine.context import EvaluationContext
from service.engine.results import (
    DEFAULT_ASSESSMENT_LOOKBACK_DAYS,
    DEFAULT_LOOKBACK_DAYS,
    Evidence,
    RuleOutcome,
    State,
    window_text,
)
from service.facts import LabResult, age_in_years
from service.mappings import DerivedAnalyte, Mappings
from service.units import UnitConversionError, convert, number_text

__all__ = [
    "evaluate_lab",
    "evaluate_no_result",
    "older_than_text",
    "rule_lookback_days",
    "weight_lookback_days",
]

_TOLERANCE = 1e-9
_SYMBOL = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def _holds(value: float, comparison: str, limit: float) -> bool:
    slack = _TOLERANCE * max(1.0, abs(limit))
    if comparison == "ge":
        return value >= limit - slack
    if comparison == "gt":
        return value > limit + slack
    if comparison == "le":
        return value <= limit + slack
    return value < limit - slack


def _bounded_state(bound: str, value: float, comparison: str, limit: float) -> State | None:
    """MET or NOT_MET when every value a censored result allows is on one side of the limit, else None.

    '<0.5' (x below 0.5) fails '>= 1.5' outright and passes '<= 1.2'; it says nothing about '>= 0.3'.
    """
    below = bound in ("<", "<=")
    strict = bound in ("<", ">")
    if below and comparison in ("ge", "gt"):
        fails = value <= limit if (strict or comparison == "gt") else value < limit
        return State.NOT_MET if fails else None
    if not below and comparison in ("le", "lt"):
        fails = value >= limit if (strict or comparison == "lt") else value > limit
        return State.NOT_MET if fails else None
    if below:
        passes = value <= limit if (strict or comparison == "le") else value < limit
        return State.MET if passes else None
    passes = value >= limit if (strict or comparison == "ge") else value > limit
    return State.MET if passes else None


def _evidence(
    result: LabResult, uln: float | None = None, uln_source: str | None = None, *, shown: str | None = None
) -> Evidence:
    return Evidence(
        description=result.display,
        source=str(result.source),
        value=result.value,
        unit=result.unit,
        date=result.when.date().isoformat() if result.when else None,
        upper_limit_of_normal=uln,
        upper_limit_source=uln_source,
        value_text=shown,
    )


def _latest_in_window(
    results: tuple[LabResult, ...], at: datetime, lookback_days: int
) -> tuple[LabResult | None, LabResult | None]:
    """(newest result inside the window, newest result at all), ignoring future-dated ones."""
    latest_allowed = at + timedelta(hours=12)
    newest = next((r for r in results if r.when is not None and r.when <= latest_allowed), None)
    if newest is not None and newest.when is not None and at - newest.when <= timedelta(days=lookback_days):
        return newest, newest
    return None, newest


def older_than_text(result: LabResult | None, name: str, lookback_days: int) -> str:
    """What is on record and why it was not used: "weight 88.2 kg of 2026-08-28 is older than 90 days"."""
    if result is None or result.when is None:
        return ""
    value = (
        f"{number_text(result.value)} {result.unit or ''}".strip()
        if result.value is not None
        else "(no value)"
    )
    return f"{name} {value} of {result.when.date().isoformat()} is older than {lookback_days} days"


def weight_lookback_days(mappings: Mappings, inputs: DerivedAnalyte) -> int:
    """How old a body weight may be for Cockcroft-Gault: the weight analyte's look-back, else 90 days."""
    return mappings.analytes[inputs.inputs["weight"]].lookback_days or DEFAULT_ASSESSMENT_LOOKBACK_DAYS


def _creatinine_mg_dl(creatinine: LabResult, context: EvaluationContext, inputs: DerivedAnalyte) -> float:
    """The creatinine in mg/dL (its molar mass converts µmol/L); raises UnitConversionError."""
    return convert(
        creatinine.value or 0.0,
        creatinine.unit or "",
        "mg/dL",
        context.mappings.analytes[inputs.inputs["creatinine"]].molar_mass_g_per_mol,
    )


def _clearance_per_kg(age: int, sex: str | None, creatinine_mg_dl: float) -> float | None:
    """Cockcroft-Gault clearance (mL/min) per kg of body weight, or None where it is undefined."""
    if creatinine_mg_dl <= 0 or age >= 140:
        return None
    return (140 - age) / (72 * creatinine_mg_dl) * (0.85 if sex == "female" else 1.0)


def _cockcroft_gault(
    context: EvaluationContext, lookback_days: int, output: str, inputs: DerivedAnalyte
) -> LabResult | tuple[str, str]:
    """Creatinine clearance from creatinine, weight, age and sex, or (reason, hint) if impossible;
    the inputs are those ``derived`` in the mappings declares for ``output``."""
    facts = context.facts
    creatinine, old_creatinine = _latest_in_window(
        facts.labs.get(inputs.inputs["creatinine"], ()), context.at, lookback_days
    )
    weight_days = weight_lookback_days(context.mappings, inputs)
    weight, old_weight = _latest_in_window(
        facts.labs.get(inputs.inputs["weight"], ()), context.at, weight_days
    )
    missing = []
    if creatinine is None:
        stale = older_than_text(old_creatinine, "creatinine", lookback_days)
        missing.append("a recent serum creatinine" + (f" ({stale})" if stale else ""))
    if weight is None:
        stale = older_than_text(old_weight, "weight", weight_days)
        missing.append(f"a body weight from the last {weight_days} days" + (f" ({stale})" if stale else ""))
    if facts.birth_date is None:
        missing.append("the birth date")
    if facts.sex not in ("male", "female"):
        missing.append("the sex")
    if creatinine is not None and creatinine.comparator:
        missing.append(
            f"a measured creatinine (it is reported as {creatinine.comparator}{number_text(creatinine.value or 0)})"
        )
    if missing or creatinine is None or weight is None or facts.birth_date is None:
        return (
            f"clearance cannot be computed: needs {', '.join(missing)}",
            "record the body weight; repeat the serum creatinine",
        )
    try:
        creatinine_mg_dl = _creatinine_mg_dl(creatinine, context, inputs)
        weight_kg = convert(weight.value or 0.0, weight.unit or "", "kg")
    except UnitConversionError as exc:
        return f"clearance cannot be computed: {exc}", "repeat the serum creatinine"
    age = age_in_years(facts.birth_date, context.at)
    per_kg = _clearance_per_kg(age, facts.sex, creatinine_mg_dl)
    if per_kg is None:
        return "clearance cannot be computed: creatinine is zero", "repeat the serum creatinine"
    clearance = per_kg * weight_kg
    when = min(creatinine.when, weight.when) if creatinine.when and weight.when else creatinine.when
    return LabResult(
        analyte=output,
        value=round(clearance, 1),
        unit="mL/min",
        when=when,
        source=creatinine.source,
        code="cockcroft-gault",
        display="Creatinine clearance",
        derivation=(
            f"Cockcroft-Gault from creatinine {number_text(creatinine_mg_dl)} mg/dL, "
            f"weight {number_text(weight_kg)} kg, age {age}, {facts.sex}"
        ),
    )


def _weight_needed(
    context: EvaluationContext, lookback_days: int, limit: float, inputs: DerivedAnalyte
) -> tuple[float, LabResult] | None:
    """The body weight (kg) at which Cockcroft-Gault would reach ``limit`` mL/min, with the creatinine used.

    Without a weight the clearance is unknown, but not boundlessly so: clearance grows
    with weight, so if even an implausibly heavy patient would stay below the limit the
    criterion is decided.  (An eGFR estimate is no substitute: it is normalised to
    1.73 m² and can be half the Cockcroft-Gault clearance of a heavy young patient.)
    """
    facts = context.facts
    creatinine, _ = _latest_in_window(
        facts.labs.get(inputs.inputs["creatinine"], ()), context.at, lookback_days
    )
    if (
        creatinine is None
        or creatinine.comparator
        or facts.birth_date is None
        or facts.sex not in ("male", "female")
    ):
        return None
    try:
        creatinine_mg_dl = _creatinine_mg_dl(creatinine, context, inputs)
    except UnitConversionError:
        return None
    per_kg = _clearance_per_kg(age_in_years(facts.birth_date, context.at), facts.sex, creatinine_mg_dl)
    return None if per_kg is None else (limit / per_kg, creatinine)


def _clearance_bounded_by_weight(
    rule: LabRule, context: EvaluationContext, lookback: int, hint: str | None, inputs: DerivedAnalyte
) -> RuleOutcome | None:
    """Without a weight: unknown, saying what weight would reach the limit; not met if that is implausible."""
    if rule.max_plausible_weight_kg is None or rule.value is None:
        return None
    bound = _weight_needed(context, lookback, rule.value, inputs)
    if bound is None:
        return None
    weight_needed, creatinine = bound
    when = creatinine.when.date().isoformat() if creatinine.when else "undated"
    weight_days = weight_lookback_days(context.mappings, inputs)
    _, old_weight = _latest_in_window(
        context.facts.labs.get(inputs.inputs["weight"], ()), context.at, weight_days
    )
    stale = older_than_text(old_weight, "weight", weight_days)
    no_weight = (
        f"no body weight from the last {weight_days} days for Cockcroft-Gault ({stale})"
        if stale
        else "no body weight on record for Cockcroft-Gault"
    )
    text = (
        f"{context.mappings.analytes[rule.analyte].display}: {no_weight}; "
        f"with creatinine {context.mappings.quantity_text(creatinine.value or 0, creatinine.unit)} on {when}, reaching "
        f"{number_text(rule.value)} mL/min would need a weight of at least {weight_needed:.0f} kg"
    )
    if weight_needed > rule.max_plausible_weight_kg:
        return RuleOutcome(
            State.NOT_MET,
            f"{text}, more than {rule.max_plausible_weight_kg:.0f} kg",
            (_evidence(creatinine),),
            resolve_hint=hint,
        )
    return RuleOutcome(State.UNKNOWN, text, (_evidence(creatinine),), resolve_hint=hint)


def _upper_limit(result: LabResult, context: EvaluationContext, analyte: str) -> tuple[float, str] | str:
    """The ULN in the result's own unit, and where it came from; or why there is none."""
    definition = context.mappings.analytes[analyte]
    if result.reference_high is not None:
        high, high_unit = result.reference_high
        try:
            converted = convert(
                high, high_unit or result.unit or "", result.unit or "", definition.molar_mass_g_per_mol
            )
        except UnitConversionError:
            return f"the reference range unit '{high_unit}' does not convert to '{result.unit}'"
        return (
            converted,
            f"the result's own reference range (high {number_text(high)} {high_unit or result.unit})",
        )
    if definition.default_uln is None:
        return "the result has no reference range and there is no documented default ULN"
    try:
        converted = convert(
            definition.default_uln.value,
            definition.default_uln.unit,
            result.unit or "",
            definition.molar_mass_g_per_mol,
        )
    except UnitConversionError:
        return f"the default ULN unit does not convert to '{result.unit}'"
    return (
        converted,
        f"default ULN {number_text(definition.default_uln.value)} {definition.default_uln.unit} ({definition.default_uln.source}); no reference range on the result",
    )


def rule_lookback_days(rule: LabRule, mappings: Mappings) -> int:
    """How old a result may be: the criterion's window, else the analyte's, else the default
    (read by the evaluator and by fetch mode's date bound alike)."""
    return rule.lookback_days or mappings.analytes[rule.analyte].lookback_days or DEFAULT_LOOKBACK_DAYS


def evaluate_lab(rule: LabRule, context: EvaluationContext) -> RuleOutcome:
    definition = context.mappings.analytes[rule.analyte]
    if rule.analyte in context.facts.unavailable:
        return RuleOutcome(
            State.UNKNOWN,
            f"{definition.display} could not be retrieved: {context.facts.unavailable[rule.analyte]}",
            resolve_hint=definition.order_hint,
        )
    lookback = rule_lookback_days(rule, context.mappings)
    latest, newest = _latest_in_window(context.facts.labs.get(rule.analyte, ()), context.at, lookback)
    hint = definition.order_hint
    cockcroft_gault = (
        context.mappings.derivations("cockcroft_gault").get(rule.analyte)
        if rule.derive_cockcroft_gault
        else None
    )
    if latest is None and cockcroft_gault is not None:
        derived = _cockcroft_gault(context, lookback, rule.analyte, cockcroft_gault)
        if isinstance(derived, LabResult):
            latest = derived
        else:
            bounded = _clearance_bounded_by_weight(rule, context, lookback, hint, cockcroft_gault)
            if bounded is not None:
                return bounded
            if newest is None:
                return RuleOutcome(
                    State.UNKNOWN, f"no {definition.display} on record; {derived[0]}", resolve_hint=hint
                )
    if latest is None:
        if newest is not None and newest.when is not None:
            age_days = (context.at - newest.when).days
            return RuleOutcome(
                State.UNKNOWN,
                f"latest {definition.display} ({context.mappings.quantity_text(newest.value or 0, newest.unit)} on "
                f"{newest.when.date().isoformat()}) is {age_days} days old, outside the {lookback}-day look-back",
                (_evidence(newest),),
                resolve_hint=hint,
            )
        return RuleOutcome(
            State.UNKNOWN, f"no {definition.display} {window_text(lookback)}", resolve_hint=hint
        )
    if latest.value is None or latest.unit is None:
        return RuleOutcome(
            State.UNKNOWN,
            f"{definition.display} on record has no readable value or unit; cannot compare",
            (_evidence(latest),),
            resolve_hint=hint,
        )

    times_uln, fixed_value = rule.times_uln, rule.value
    condition_note = ""
    for conditional in rule.conditional_limits:
        if context.has_active_condition(conditional.when_value_set):
            times_uln, fixed_value = conditional.times_uln, conditional.value
            condition_note = f" (limit for patients with {context.mappings.value_sets[conditional.when_value_set].display})"
            break

    uln: float | None = None
    uln_source: str | None = None
    if times_uln is not None:
        found = _upper_limit(latest, context, rule.analyte)
        if isinstance(found, str):
            return RuleOutcome(
                State.UNKNOWN, f"{definition.display}: {found}", (_evidence(latest),), resolve_hint=hint
            )
        uln, uln_source = found
        value, limit, unit = latest.value, times_uln * uln, latest.unit
        limit_text = f"{number_text(times_uln)}× ULN = {context.mappings.quantity_text(limit, unit)}"
    elif fixed_value is not None and rule.unit is not None:
        try:
            value = convert(latest.value, latest.unit, rule.unit, definition.molar_mass_g_per_mol)
        except UnitConversionError as exc:
            return RuleOutcome(
                State.UNKNOWN,
                f"{definition.display} {number_text(latest.value)} {latest.unit}: unit cannot be converted to {rule.unit} ({exc})",
                (_evidence(latest),),
                resolve_hint=hint,
            )
        limit, unit = fixed_value, rule.unit
        limit_text = context.mappings.quantity_text(limit, unit)
    else:
        return RuleOutcome(State.UNKNOWN, f"{definition.display}: the criterion gives no limit")

    shown = context.mappings.quantity_text(latest.value, latest.unit)
    if unit != latest.unit:
        shown += f" (= {context.mappings.quantity_text(value, unit)})"
    evidence = (_evidence(latest, uln, uln_source, shown=shown),)
    if latest.derivation:
        shown += f" [{latest.derivation}]"
    when = latest.when.date().isoformat() if latest.when else "undated"
    if latest.unit_problem:
        return RuleOutcome(
            State.UNKNOWN,
            f"{definition.display} {shown} on {when}: {latest.unit_problem}",
            evidence,
            resolve_hint=hint,
        )
    flags: list[str] = []
    if rule.protocol_window_days is not None and latest.when is not None:
        age_days = (context.at - latest.when).days
        if age_days > rule.protocol_window_days:
            flags.append(
                f"repeat before enrolment: result is {age_days} days old; the protocol needs it within {rule.protocol_window_days} days"
            )
    if uln_source is not None and uln_source.startswith("default"):
        flags.append("provisional: lab reference range missing, default ULN used")
    if latest.comparator:
        shown = f"{latest.comparator}{shown}"
    reason = f"{definition.display} {shown} on {when}; needs {_SYMBOL[rule.comparison]} {limit_text}{condition_note}"
    if latest.comparator:
        decided = _bounded_state(latest.comparator, value, rule.comparison, limit)
        if decided is None:
            return RuleOutcome(
                State.UNKNOWN,
                f"{reason}: a bound, not a measurement, and the limit lies inside it",
                evidence,
                resolve_hint=hint,
            )
        return RuleOutcome(
            decided,
            reason,
            evidence,
            flags=tuple(flags),
            resolve_hint=hint if decided is State.NOT_MET else None,
        )
    state = State.MET if _holds(value, rule.comparison, limit) else State.NOT_MET
    return RuleOutcome(
        state, reason, evidence, flags=tuple(flags), resolve_hint=hint if state is State.NOT_MET else None
    )


def evaluate_no_result(rule: NoResultRule, context: EvaluationContext) -> RuleOutcome:
    results = context.facts.labs.get(rule.analyte, ())
    display = context.mappings.analytes[rule.analyte].display
    if rule.analyte in context.facts.unavailable:
        return RuleOutcome(
            State.UNKNOWN, f"{display} could not be retrieved: {context.facts.unavailable[rule.analyte]}"
        )
    if results:
        return RuleOutcome(State.NOT_MET, f"a {display} is on record", (_evidence(results[0]),))
    return RuleOutcome(State.MET, f"no {display} on record")
