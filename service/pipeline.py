"""One hook call, end to end: context -> gather -> facts -> engine -> cards -> audit record.

Routes stay thin: they parse, authenticate and call :func:`run_hook`.  The
evaluation time is read from the clock by the caller and passed down, so
everything below is reproducible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import httpx
from pydantic import ValidationError

from service.audit import AuditStore, Document, InvalidAuditRecordError, received_inputs
from service.cards import new_therapy_warning_card, trial_card
from service.cdshooks import Card, CdsResponse, HookRequest, OrderSelectContext, PatientViewContext
from service.criteria import CriteriaSet
from service.engine import Decision, decide
from service.engine.decision import decision_json
from service.errors import FhirResponseError, PreconditionFailedError, PrefetchError, RequestError
from service.facts import (
    PatientFacts,
    build_facts,
    draft_order_exposures,
    unavailable_sources,
    unique_resources,
)
from service.facts.memo import FactsMemo, with_call_extras
from service.gather import REQUIRED_KEYS, FetchLimits, ObservationSearches, gather, observation_searches
from service.mappings import Mappings
from service.observability import FACTS_MEMO

__all__ = [
    "HookOutcome",
    "Runtime",
    "record_outcome",
    "run_hook",
    "SERVICES",
    "SERVICE_ID",
    "ORDER_SELECT_SERVICE_ID",
]

SERVICE_ID = "til-trials"
ORDER_SELECT_SERVICE_ID = "til-trials-order-select"
SERVICES = {SERVICE_ID: "patient-view", ORDER_SELECT_SERVICE_ID: "order-select"}
"""Service id -> its hook.  order-select has its own id: CDS clients replace earlier cards
of the same service id, and the order composer's card must not remove the chart's."""


@dataclass
class Runtime:
    """What a hook call needs that outlives it: loaded criteria, mappings, HTTP client."""

    mappings: Mappings
    criteria: CriteriaSet
    templates: dict[str, str]
    http: httpx.AsyncClient
    limits: FetchLimits
    review_url: Any = None  # Callable[[str], str] | None: decision id -> review page URL
    facts_memo_resources: int = 50_000  # settings.facts_memo_resources; 0 remembers no facts

    @cached_property
    def facts_memo(self) -> FactsMemo:
        """The facts of the charts opened last; a reload builds a new Runtime, so an empty memo."""
        return FactsMemo(self.facts_memo_resources)

    @cached_property
    def observation_searches(self) -> ObservationSearches:
        """Fetch mode's Observation searches, from these mappings and criteria (a reload builds a new Runtime)."""
        return observation_searches(self.mappings, self.criteria, self.limits.page_size)


@dataclass
class HookOutcome:
    response: CdsResponse
    record: dict[str, Any]
    decision: Decision
    received_inputs: Document
    """The canonical JSON of ``record["input_resources"]`` and its address, for
    ``AuditStore.append_decision``."""


def _context(request: HookRequest) -> PatientViewContext:
    model = OrderSelectContext if request.hook == "order-select" else PatientViewContext
    try:
        return model.model_validate(request.context)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise RequestError(f"context.{path}: {first['msg']}", expression=f"context.{path}") from exc


def _without_review_token(card: dict[str, Any], review_url: str | None) -> dict[str, Any]:
    """The card as the audit trail keeps it: the review link without its access token.

    The token opens the review page for days; an audit record (and every export of it)
    must not carry a working credential.  The decision id in the path still says which
    page it was.
    """
    if review_url is None or "?token=" not in review_url:
        return card
    bare = review_url.split("?token=", 1)[0]
    links = [
        {**link, "url": bare} if link.get("url") == review_url else link for link in card.get("links", [])
    ]
    return {**card, "links": links} if links else card


def _cards(
    request: HookRequest, decision: Decision, runtime: Runtime, review_url: str | None
) -> tuple[list[Card], list[str]]:
    """patient-view: a card per suggested trial.  order-select: only about the selected
    orders, a warning when one would restart a trial's washout, else nothing.  Also the
    reasons any suggestion was left off a card."""
    trials = {t.id: t for t in runtime.criteria.trials}
    if request.hook == "order-select":
        warning = decision.order_warning
        if warning is None:
            return [], []
        affected = [(trials[v.trial_id], v) for v in decision.suggested if v.trial_id in warning.trial_ids]
        return [
            new_therapy_warning_card(list(warning.drugs), affected, decision.evaluated_at.date(), review_url)
        ], []
    drafts = [
        trial_card(
            trials[v.trial_id],
            v,
            review_url,
            patient_reference=decision.patient.reference,
            data_problems=decision.data_problems,
        )
        for v in decision.suggested
    ]
    return [d.card for d in drafts], [p for d in drafts for p in d.problems]


async def run_hook(
    request: HookRequest,
    runtime: Runtime,
    evaluated_at: datetime,
    *,
    may_fetch: bool,
    service_id: str = SERVICE_ID,
) -> HookOutcome:
    """Evaluate every trial for the request's patient and build the cards."""
    started = time.perf_counter()
    if SERVICES.get(service_id) != request.hook:
        served = SERVICES.get(service_id)
        other = next((s for s, hook in SERVICES.items() if hook == request.hook), None)
        raise RequestError(
            f"hook '{request.hook}' is not served by '{service_id}', which serves {served}"
            + (f"; call '{other}' for {request.hook}" if other else ""),
            expression="hook",
        )
    context = _context(request)
    data = await gather(
        request,
        context.patientId,
        runtime.templates,
        runtime.http,
        runtime.limits,
        may_fetch,
        observations=runtime.observation_searches,
        at=evaluated_at,
    )
    missing = {k: v for k, v in data.unavailable.items() if k in REQUIRED_KEYS}
    if missing:
        raise PreconditionFailedError(
            "cannot obtain required data: " + "; ".join(f"{k}: {v}" for k, v in missing.items())
        )
    resources = unique_resources(data.resources)
    drafts = (
        draft_order_exposures(context.draftOrders, list(context.selections or []))
        if isinstance(context, OrderSelectContext)
        else []
    )
    received = _received(resources, prefetched=bool(request.prefetch))
    facts = with_call_extras(
        _facts_of(context.patientId, resources, received.address, runtime),
        draft_orders=drafts,
        unavailable=unavailable_sources(data.unavailable, runtime.mappings),
        problems=[*data.problems, *(f"{k}: {v}" for k, v in data.unavailable.items())],
    )
    decision = decide(facts, runtime.criteria, runtime.mappings, evaluated_at)
    decision_id = str(uuid.uuid4())
    review_url = runtime.review_url(decision_id) if runtime.review_url else None
    cards, card_problems = _cards(request, decision, runtime, review_url)
    record = {
        "decision_id": decision_id,
        "hook": request.hook,
        "hook_instance": request.hookInstance,
        "service_id": service_id,
        "user_ref": context.userId,
        "patient_ref": f"Patient/{context.patientId}",
        "fhir_server": str(request.fhirServer) if request.fhirServer else None,
        "decision": decision_json(decision),
        "input_resources": resources,
        "data_sources": data.sources,
        "cards": [
            _without_review_token(c.model_dump(mode="json", exclude_none=True), review_url) for c in cards
        ],
        "card_problems": card_problems,
        "timing_ms": round((time.perf_counter() - started) * 1000, 2),
    }
    return HookOutcome(
        response=CdsResponse(cards=cards), record=record, decision=decision, received_inputs=received
    )


def _received(resources: list[dict[str, Any]], *, prefetched: bool) -> Document:
    """The resources' canonical JSON and its address (the audit's), or the error of the data
    that cannot have one.

    Parsed JSON always has one, except nested deeper than orjson writes (254 levels) or an
    integer beyond 64 bits from a fetched response: no FHIR resource is either.
    """
    try:
        return received_inputs(resources, "a resource")
    except InvalidAuditRecordError as exc:
        problem = f"{exc}; no FHIR resource is nested that deep or holds an integer that large"
        if prefetched:
            raise PrefetchError(problem, expression="prefetch") from exc
        raise FhirResponseError(problem) from exc


def _facts_of(
    patient_id: str, resources: list[dict[str, Any]], address: bytes, runtime: Runtime
) -> PatientFacts:
    """The facts of these resources, remembered from an earlier open of the same chart or read.

    Keyed by ``address``, the SHA-256 of their canonical JSON (the audit trail's key for the
    same list): a resource changed in any field is another chart.
    """
    facts = runtime.facts_memo.get(address, patient_id)
    FACTS_MEMO.labels(result="miss" if facts is None else "hit").inc()
    if facts is None:
        facts = build_facts(patient_id, resources, runtime.mappings)
        runtime.facts_memo.put(address, patient_id, facts)
    return facts


def record_outcome(audit: AuditStore, runtime: Runtime, outcome: HookOutcome) -> None:
    """The call's audit writes, in one go (the route hands them to one worker thread): the
    criteria version the decision used (a set lookup once saved), then its record."""
    audit.save_criteria_version(runtime.criteria.fingerprint, runtime.criteria.snapshot)
    audit.append_decision(outcome.record, received_inputs=outcome.received_inputs)
