"""One hook call, end to end: context -> gather -> facts -> engine -> cards -> audit record.

Routes stay thin: they parse, authenticate and call :func:`run_hook`.  The
evaluation time is read from the clock by the caller and passed down, so
everything below is reproducible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from service.cards import new_therapy_warning_card, trial_card
from service.cdshooks import Card, CdsResponse, HookRequest, OrderSelectContext, PatientViewContext
from service.criteria import CriteriaSet
from service.engine import TrialResult, evaluate_trials
from service.errors import PreconditionFailedError, RequestError
from service.facts import (
    ADMINISTRATIONS,
    IMMUNIZATIONS,
    PROCEDURES,
    build_facts,
    concept_codings,
    concept_text,
    medication_concept,
)
from service.gather import REQUIRED_KEYS, FetchLimits, GatheredData, gather
from service.mappings import Mappings

__all__ = ["HookOutcome", "Runtime", "run_hook", "SERVICE_ID", "SERVICE_HOOKS"]

SERVICE_ID = "til-trials"
SERVICE_HOOKS = ("patient-view", "order-select")


@dataclass
class Runtime:
    """What a hook call needs that outlives it: loaded criteria, mappings, HTTP client."""

    mappings: Mappings
    criteria: CriteriaSet
    templates: dict[str, str]
    http: httpx.AsyncClient
    limits: FetchLimits
    review_url: Any = None  # Callable[[str], str] | None: decision id -> review page URL


@dataclass
class HookOutcome:
    response: CdsResponse
    record: dict[str, Any]
    results: list[TrialResult] = field(default_factory=list)


def _context(request: HookRequest) -> PatientViewContext:
    model = OrderSelectContext if request.hook == "order-select" else PatientViewContext
    try:
        return model.model_validate(request.context)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise RequestError(f"context.{path}: {first['msg']}", expression=f"context.{path}") from exc


def _unavailable_facts(data: GatheredData, mappings: Mappings) -> dict[str, str]:
    """Analytes and tests whose Observation group could not be obtained, and the Procedures if lost."""
    lost: dict[str, str] = {}
    for key, reason in data.unavailable.items():
        if key in (PROCEDURES, IMMUNIZATIONS, ADMINISTRATIONS):
            lost[key] = reason
            continue
        group = key.removeprefix("observations-")
        for name, definition in mappings.observation_definitions.items():
            if definition.prefetch_group == group:
                lost[name] = reason
    return lost


def _dedupe(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        seen.setdefault((str(resource.get("resourceType")), str(resource.get("id"))), resource)
    return list(seen.values())


def _new_anticancer_drugs(context: OrderSelectContext, runtime: Runtime, current: list[str]) -> list[str]:
    """Names of systemic anticancer drugs in the selected draft orders not already being taken."""
    names: list[str] = []
    entries = context.draftOrders.get("entry")
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        reference = f"{resource.get('resourceType')}/{resource.get('id')}"
        if context.selections and reference not in context.selections:
            continue
        concept = medication_concept(resource)
        codings, text = concept_codings(concept), concept_text(concept)
        match = runtime.mappings.match_drug("systemic_anticancer_therapy", codings, text)
        if match is not None and match.member not in current:
            names.append(match.member.replace("_", " "))
    return names


async def run_hook(
    request: HookRequest, runtime: Runtime, evaluated_at: datetime, *, may_fetch: bool
) -> HookOutcome:
    """Evaluate every trial for the request's patient and build the cards."""
    started = time.perf_counter()
    if request.hook not in SERVICE_HOOKS:
        raise RequestError(
            f"hook '{request.hook}' is not served by '{SERVICE_ID}'; it serves {', '.join(SERVICE_HOOKS)}",
            expression="hook",
        )
    context = _context(request)
    data = await gather(
        request, context.patientId, runtime.templates, runtime.http, runtime.limits, may_fetch
    )
    missing = {k: v for k, v in data.unavailable.items() if k in REQUIRED_KEYS}
    if missing:
        raise PreconditionFailedError(
            "cannot obtain required data: " + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )
    resources = _dedupe(data.resources)
    facts = build_facts(context.patientId, resources, runtime.mappings)
    facts.unavailable = _unavailable_facts(data, runtime.mappings)
    facts.data_problems.extend(data.problems)
    facts.data_problems.extend(f"{k}: {v}" for k, v in data.unavailable.items())
    results = evaluate_trials(runtime.criteria, runtime.mappings, facts, evaluated_at)
    decision_id = str(uuid.uuid4())
    review_url = runtime.review_url(decision_id) if runtime.review_url else None
    trials = {t.id: t for t in runtime.criteria.trials}
    suggested = [(trials[r.trial_id], r) for r in results if r.suggested]
    cards: list[Card] = [trial_card(trial, result, review_url) for trial, result in suggested]
    if isinstance(context, OrderSelectContext) and suggested:
        current = []
        for drug in facts.drugs:
            match = runtime.mappings.match_drug("systemic_anticancer_therapy", list(drug.codings), drug.text)
            if match is not None and drug.status == "active":
                current.append(match.member)
        new_drugs = _new_anticancer_drugs(context, runtime, current)
        if new_drugs:
            cards.insert(0, new_therapy_warning_card(new_drugs, suggested, evaluated_at.date()))
    response = CdsResponse(cards=cards)
    record = {
        "decision_id": decision_id,
        "hook": request.hook,
        "hook_instance": request.hookInstance,
        "service_id": SERVICE_ID,
        "user_ref": context.userId,
        "patient_ref": f"Patient/{context.patientId}",
        "fhir_server": str(request.fhirServer) if request.fhirServer else None,
        "criteria_fingerprint": runtime.criteria.fingerprint,
        "input_fingerprint": results[0].input_fingerprint if results else None,
        "evaluated_at": evaluated_at.isoformat(),
        "inputs": [
            {"resourceType": r.resource_type, "id": r.id, "versionId": r.version_id} for r in facts.inputs
        ],
        "input_resources": resources,
        "data_sources": data.sources,
        "unavailable_facts": dict(facts.unavailable),
        "verdicts": [r.to_dict() for r in results],
        "cards": [c.model_dump(mode="json", exclude_none=True) for c in cards],
        "timing_ms": round((time.perf_counter() - started) * 1000, 2),
        "errors": list(facts.data_problems),
    }
    return HookOutcome(response=response, record=record, results=results)
