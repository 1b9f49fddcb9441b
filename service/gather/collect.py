"""Prefetch first, then fetch what is missing from the FHIR server.

The prefetch contract is :mod:`service.gather.prefetch`; the FHIR client, its limits and
its error translation are :mod:`service.gather.fhir_client`.  The Patient, Conditions and
MedicationStatements are required: without them every exclusion would read as "none
recorded", so their loss is a 412 (decided by the pipeline from ``unavailable``).  A lost
Observation search only makes the criteria of its groups unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from service.cdshooks import HookRequest
from service.errors import FhirServerError, PrefetchError
from service.gather.fhir_client import FetchLimits, FhirClient, Search
from service.gather.observations import ObservationSearches
from service.gather.prefetch import GatheredData, bundle_resources, check_resource, read_prefetch

__all__ = ["gather"]


@dataclass(frozen=True)
class _Task:
    """One request (with its pages) and the prefetch keys it stands for."""

    keys: tuple[str, ...]
    continues_prefetch: bool = False

    @property
    def label(self) -> str:
        return ", ".join(self.keys)


async def _search(
    client: FhirClient, start: Search | str, task: _Task, patient_id: str, data: GatheredData
) -> list[dict[str, Any]]:
    """Every page's resources, checked against the task's first key; limit stops become problems."""
    resources: list[dict[str, Any]] = []
    pages = client.pages(start)
    async for bundle in pages:
        resources.extend(bundle_resources(task.keys[0], task.label, bundle, patient_id, data, task.label))
    if pages.stopped:
        data.problems.append(f"{task.label}: {pages.stopped}")
    return resources


async def _read_patient(client: FhirClient, query: str, patient_id: str) -> list[dict[str, Any]]:
    return [check_resource("patient", "patient", await client.read(query), patient_id)]


def _planned(
    client: FhirClient,
    missing: dict[str, str],
    next_pages: dict[str, str],
    observations: ObservationSearches,
    patient_id: str,
    at: datetime,
    data: GatheredData,
) -> dict[_Task, Awaitable[list[dict[str, Any]]]]:
    """The requests to make: Observation groups combined, every other key on its own."""
    planned: dict[_Task, Awaitable[list[dict[str, Any]]]] = {}
    for key, url in next_pages.items():
        task = _Task((key,), continues_prefetch=True)
        planned[task] = _search(client, url, task, patient_id, data)
    for key, query in missing.items():
        if key in observations.keys:
            continue
        if key == "patient":
            planned[_Task((key,))] = _read_patient(client, query, patient_id)
        else:
            task = _Task((key,))
            planned[task] = _search(client, Search.from_query(query), task, patient_id, data)
    for combined in observations.for_keys(missing, patient_id, at):
        task = _Task(combined.keys)
        planned[task] = _search(client, combined.search, task, patient_id, data)
    return planned


def _settle(
    task: _Task, outcome: asyncio.Future[list[dict[str, Any]]] | None, data: GatheredData, timeout: float
) -> None:
    """Record one request's outcome: its resources, or why its keys are unavailable."""
    if outcome is None and task.continues_prefetch:
        data.problems.append(f"{task.label}: later pages timed out; only the prefetched page was read")
        return
    if outcome is None:
        for key in task.keys:
            data.unavailable[key] = f"the FHIR server did not answer within {timeout:g} s"
        return
    error = outcome.exception()
    if isinstance(error, FhirServerError | PrefetchError) and task.continues_prefetch:
        data.problems.append(
            f"{task.label}: later pages could not be fetched ({error}); only the prefetched page was read"
        )
        return
    if isinstance(error, FhirServerError | PrefetchError):
        reason = (
            str(error)
            if isinstance(error, FhirServerError)
            else f"the FHIR server returned unusable data ({error})"
        )
        for key in task.keys:
            data.unavailable[key] = reason
        return
    if error is not None:
        raise error
    data.resources.extend(outcome.result())
    for key in task.keys:
        if task.continues_prefetch:
            data.sources[key] = "prefetch + fetched pages"
        elif len(task.keys) > 1:
            data.sources[key] = f"fetched (one Observation search for {task.label})"
        else:
            data.sources[key] = "fetched"


async def gather(
    request: HookRequest,
    patient_id: str,
    templates: dict[str, str],
    client: httpx.AsyncClient,
    limits: FetchLimits,
    may_fetch: bool,
    *,
    observations: ObservationSearches,
    at: datetime,
) -> GatheredData:
    """Collect the patient's resources for every template key.

    ``may_fetch`` is False when the request names no FHIR server or one we may not
    call; then absent keys stay unavailable and required ones end in a 412.  ``at`` is
    the evaluation time: the date bound of the Observation search is counted back from it.
    """
    data = GatheredData()
    fhir = None
    if may_fetch and request.fhirServer is not None:
        token = (
            request.fhirAuthorization.access_token.get_secret_value() if request.fhirAuthorization else None
        )
        fhir = FhirClient(client, str(request.fhirServer), token, limits)
    reading = read_prefetch(request, patient_id, templates, data, may_page=fhir is not None)
    if len(data.resources) > limits.max_resources:
        raise PrefetchError(
            f"prefetch holds {len(data.resources)} resources, more than the limit of {limits.max_resources}"
        )
    if fhir is None:
        for key in reading.missing:
            data.unavailable[key] = "not prefetched, and no FHIR server may be queried"
        return data
    planned = _planned(fhir, reading.missing, reading.next_pages, observations, patient_id, at, data)
    if not planned:
        return data
    tasks = {task: asyncio.ensure_future(coroutine) for task, coroutine in planned.items()}
    _, pending = await asyncio.wait(tasks.values(), timeout=limits.timeout_seconds)
    for future in pending:
        future.cancel()
    for task, future in tasks.items():
        _settle(task, None if future in pending else future, data, limits.timeout_seconds)
    data.problems = [fhir.scrub(p) for p in data.problems]
    data.unavailable = {k: fhir.scrub(v) for k, v in data.unavailable.items()}
    return data
