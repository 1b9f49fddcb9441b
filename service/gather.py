"""Prefetch first, then fetch what is missing from the FHIR server.

The CDS Hooks 2.0 contract per prefetch key: present -> use it (following ``next``
links when we may); ``null`` -> no data; absent, or an OperationOutcome -> fetch it
ourselves with the EHR's token.  httpx failures are translated here, once, into
``FhirServerError`` subclasses.  The Patient, Conditions and MedicationStatements
are required: without them every exclusion would read as "none recorded", so
their loss is a 412.  A lost Observation group only makes its criteria unknown.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from service.cdshooks import HookRequest
from service.errors import (
    FhirResponseError,
    FhirServerError,
    FhirTimeoutError,
    FhirUnavailableError,
    PrefetchError,
)
from service.facts import registry
from service.observability import FHIR_FETCH_ERRORS, FHIR_FETCH_SECONDS

__all__ = ["GatheredData", "FetchLimits", "gather", "prefetch_templates", "REQUIRED_KEYS"]

REQUIRED_KEYS = registry.REQUIRED_KEYS
_FHIR_JSON = "application/fhir+json"


prefetch_templates = registry.prefetch_templates
"""The prefetch templates, from the facts registry (one entry per source it lists)."""


@dataclass(frozen=True)
class FetchLimits:
    timeout_seconds: float = 8.0
    max_pages: int = 20
    max_concurrency: int = 8
    max_resources: int = 20_000


@dataclass
class GatheredData:
    """Every resource found for the patient, and how each prefetch key was satisfied."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


_expected_types = registry.expected_types


def _reference_of(resource: dict[str, Any]) -> str:
    """The patient reference a resource carries (``subject``, or ``patient`` for Immunization)."""
    subject = resource.get("subject") or resource.get("patient")
    return str(subject.get("reference")) if isinstance(subject, dict) else "?"


def _belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    subject = resource.get("subject") or resource.get("patient")
    if not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
        return True
    reference = subject["reference"].split("/_history/")[0]
    return bool(reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}"))


def _check_resource(key: str, where: str, resource: Any, patient_id: str) -> dict[str, Any]:
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise PrefetchError(f"{where} is not a FHIR resource (no resourceType)", expression=where)
    expected = _expected_types(key)
    actual = resource["resourceType"]
    if actual not in expected:
        raise PrefetchError(
            f"{where} is a {actual}; prefetch key '{key}' holds {' or '.join(expected)} resources",
            expression=where,
        )
    if actual == "Patient":
        if resource.get("id") != patient_id:
            raise PrefetchError(
                f"{where} is Patient/{resource.get('id')}, not the context's Patient/{patient_id}",
                expression=where,
            )
        try:
            Patient.model_validate(resource)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PrefetchError(
                f"{where} is not a valid FHIR R4 Patient: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                expression=where,
            ) from exc
    elif not _belongs_to(resource, patient_id):
        raise PrefetchError(
            f"{where} belongs to {_reference_of(resource)}, not Patient/{patient_id}",
            expression=where,
        )
    if not isinstance(resource.get("id"), str):
        raise PrefetchError(f"{where} has no id", expression=where)
    return resource


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _bundle_entries(
    key: str, where: str, bundle: dict[str, Any], patient_id: str, data: GatheredData
) -> list[dict[str, Any]]:
    """Resources of a searchset Bundle; OperationOutcome entries become noted problems."""
    resources = []
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise PrefetchError(f"{where}.entry must be a list", expression=f"{where}.entry")
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome":
            data.problems.append(f"{key}: the FHIR server reported: {_outcome_text(resource)}")
            continue
        resources.append(_check_resource(key, f"{where}.entry[{index}].resource", resource, patient_id))
    return resources


def _only_outcomes(bundle: dict[str, Any]) -> bool:
    """A Bundle whose entries are all OperationOutcomes: the EHR's search failed."""
    entries = bundle.get("entry") or []
    resources = [e.get("resource") for e in entries if isinstance(e, dict)]
    return bool(resources) and all(
        isinstance(r, dict) and r.get("resourceType") == "OperationOutcome" for r in resources
    )


def _outcome_text(outcome: dict[str, Any]) -> str:
    issues = outcome.get("issue") or []
    texts = [
        str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
        for i in issues
        if isinstance(i, dict)
    ]
    return "; ".join(texts) or "an OperationOutcome without detail"


class _Fetcher:
    """Reads one FHIR server on behalf of one hook call, within its limits."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, token: str | None, limits: FetchLimits
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/") + "/"
        self.origin = urlsplit(self.base_url)[:2]
        self.headers = {"Accept": _FHIR_JSON}
        self.token = token
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.limits = limits
        self.semaphore = asyncio.Semaphore(limits.max_concurrency)

    def scrub(self, data: GatheredData) -> None:
        """Blank the access token out of what servers said: some echo it in their errors."""
        if self.token:
            data.problems = [p.replace(self.token, "[redacted]") for p in data.problems]
            data.unavailable = {k: v.replace(self.token, "[redacted]") for k, v in data.unavailable.items()}

    async def get_json(self, url: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return await self._get_json_unobserved(url)
        except Exception as exc:
            FHIR_FETCH_ERRORS.labels(error=type(exc).__name__).inc()
            raise
        finally:
            FHIR_FETCH_SECONDS.observe(time.perf_counter() - started)

    async def _get_json_unobserved(self, url: str) -> dict[str, Any]:
        if urlsplit(url)[:2] != self.origin:
            raise FhirResponseError(f"refused to follow a link to another server ({urlsplit(url).netloc})")
        shown = url.split("?")[0]
        async with self.semaphore:
            try:
                response = await self.client.get(
                    url, headers=self.headers, timeout=self.limits.timeout_seconds, follow_redirects=False
                )
            except httpx.TimeoutException as exc:
                raise FhirTimeoutError(
                    f"{shown} did not answer within {self.limits.timeout_seconds:g} s"
                ) from exc
            except httpx.TransportError as exc:
                raise FhirUnavailableError(f"{shown} could not be reached ({type(exc).__name__})") from exc
        if response.is_redirect or 300 <= response.status_code < 400:
            raise FhirResponseError(
                f"{shown} answered HTTP {response.status_code}; redirects are not followed and their body is not read"
            )
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            raise FhirResponseError(
                f"{shown} answered HTTP {response.status_code} with '{content_type or 'no content type'}', not FHIR JSON"
            )
        try:
            body = orjson.loads(response.content)  # strict JSON: NaN and Infinity are refused
        except orjson.JSONDecodeError as exc:
            raise FhirResponseError(f"{shown} answered with invalid JSON") from exc
        if not isinstance(body, dict):
            raise FhirResponseError(f"{shown} answered with JSON that is not a FHIR resource")
        if response.status_code >= 400 or body.get("resourceType") == "OperationOutcome":
            detail = (
                _outcome_text(body)
                if body.get("resourceType") == "OperationOutcome"
                else "no OperationOutcome"
            )
            raise FhirResponseError(f"{shown} answered HTTP {response.status_code}: {detail}")
        return body

    async def search_pages(
        self,
        key: str,
        first_url: str,
        patient_id: str,
        data: GatheredData,
        first_bundle: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = []
        url: str | None = first_url
        pages = 0
        bundle = first_bundle
        while url is not None or bundle is not None:
            if bundle is None:
                if pages >= self.limits.max_pages:
                    data.problems.append(
                        f"{key}: stopped after {pages} pages (limit); older results were not read"
                    )
                    break
                bundle = await self.get_json(urljoin(self.base_url, url or ""))
                pages += 1
            if bundle.get("resourceType") != "Bundle":
                raise FhirResponseError(
                    f"{key}: the search answered a {bundle.get('resourceType')}, not a Bundle"
                )
            resources.extend(_bundle_entries(key, key, bundle, patient_id, data))
            if len(resources) > self.limits.max_resources:
                data.problems.append(
                    f"{key}: more than {self.limits.max_resources} resources; the rest were not read"
                )
                break
            url, bundle = _next_link(bundle), None
        return resources

    async def fetch_key(
        self, key: str, query: str, patient_id: str, data: GatheredData
    ) -> list[dict[str, Any]]:
        if key == "patient":
            return [_check_resource(key, key, await self.get_json(urljoin(self.base_url, query)), patient_id)]
        return await self.search_pages(key, query, patient_id, data)


_HARVESTED_TYPES = registry.HARVESTED_TYPES


def _harvest_other_keys(
    prefetch: dict[str, Any], templates: dict[str, str], patient_id: str, data: GatheredData
) -> set[str]:
    """Use resources a client prefetched under keys of its own naming, by resource type.

    Some clients prefetch with their own key names (one "observations" Bundle, say).
    Those resources are checked like ours and used; a resource type they bring counts as
    prefetched, so our keys for that type are neither fetched nor reported missing.
    """
    covered: set[str] = set()
    for key, value in prefetch.items():
        if key in templates or not isinstance(value, dict):
            continue
        where = f"prefetch.{key}"
        if value.get("resourceType") == "Bundle":
            entries = value.get("entry") or []
            candidates = [
                (f"{where}.entry[{i}].resource", e.get("resource"))
                for i, e in enumerate(entries)
                if isinstance(e, dict)
            ]
        else:
            candidates = [(where, value)]
        used = 0
        for place, resource in candidates:
            if not isinstance(resource, dict) or resource.get("resourceType") not in _HARVESTED_TYPES:
                continue
            kind = str(resource["resourceType"])
            if kind == "Patient" and resource.get("id") != patient_id:
                raise PrefetchError(
                    f"{place} is Patient/{resource.get('id')}, not the context's Patient/{patient_id}",
                    expression=place,
                )
            if not _belongs_to(resource, patient_id):
                raise PrefetchError(
                    f"{place} belongs to {_reference_of(resource)}, not Patient/{patient_id}",
                    expression=place,
                )
            if not isinstance(resource.get("id"), str):
                raise PrefetchError(f"{place} has no id", expression=place)
            data.resources.append(resource)
            if kind != "Medication":  # a referenced Medication stands for no search of ours
                covered.add(kind)
            used += 1
        if used:
            data.sources[key] = f"prefetch key of the client's own naming ({used} resources used by type)"
    return covered


def _render(template: str, request: HookRequest) -> str:
    rendered = template
    for name, value in request.context.items():
        if isinstance(value, str | int | float):
            rendered = rendered.replace("{{context." + name + "}}", str(value))
    return rendered


async def gather(
    request: HookRequest,
    patient_id: str,
    templates: dict[str, str],
    client: httpx.AsyncClient,
    limits: FetchLimits,
    may_fetch: bool,
) -> GatheredData:
    """Collect the patient's resources for every template key.

    ``may_fetch`` is False when the request names no FHIR server or one we may not
    call; then absent keys stay unavailable and required ones end in a 412.
    """
    data = GatheredData()
    prefetch = request.prefetch or {}
    fetcher = None
    if may_fetch and request.fhirServer is not None:
        token = (
            request.fhirAuthorization.access_token.get_secret_value() if request.fhirAuthorization else None
        )
        fetcher = _Fetcher(client, str(request.fhirServer), token, limits)
    to_fetch: dict[str, Any] = {}
    for key, template in templates.items():
        where = f"prefetch.{key}"
        if key not in prefetch:
            to_fetch[key] = _render(template, request)
            continue
        value = prefetch[key]
        if value is None:
            data.sources[key] = "prefetch (null: no data)"
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise PrefetchError(f"{where} must be a FHIR resource, a Bundle or null", expression=where)
        if value["resourceType"] == "OperationOutcome":
            data.problems.append(f"{key}: the EHR could not prefetch it ({_outcome_text(value)})")
            to_fetch[key] = _render(template, request)
            continue
        if key == "patient":
            data.resources.append(_check_resource(key, where, value, patient_id))
            data.sources[key] = "prefetch"
            continue
        if value["resourceType"] != "Bundle":
            raise PrefetchError(
                f"{where} is a {value['resourceType']}; a search prefetch must be a Bundle", expression=where
            )
        if _only_outcomes(value):
            data.problems.append(
                f"{key}: the EHR's prefetch holds only OperationOutcomes; fetching it instead"
            )
            to_fetch[key] = _render(template, request)
            continue
        data.resources.extend(_bundle_entries(key, where, value, patient_id, data))
        data.sources[key] = "prefetch"
        next_url = _next_link(value)
        if next_url is not None:
            if fetcher is not None:
                to_fetch[key] = ("next", next_url)
            else:
                data.problems.append(
                    f"{key}: prefetch is paged and the next pages cannot be fetched; only the first page was read"
                )
    covered_types = _harvest_other_keys(prefetch, templates, patient_id, data)
    for key in [k for k, query in to_fetch.items() if not isinstance(query, tuple)]:
        covered = sorted(set(_expected_types(key)) & covered_types)
        if covered:
            data.sources[key] = f"covered by other prefetch keys ({', '.join(covered)})"
            del to_fetch[key]
    if len(data.resources) > limits.max_resources:
        raise PrefetchError(
            f"prefetch holds {len(data.resources)} resources, more than the limit of {limits.max_resources}"
        )
    if not to_fetch:
        return data
    if fetcher is None:
        for key in to_fetch:
            data.unavailable[key] = "not prefetched, and no FHIR server may be queried"
        return data
    tasks = {}
    for key, query in to_fetch.items():
        if isinstance(query, tuple):
            coroutine = fetcher.search_pages(key, query[1], patient_id, data)
        else:
            coroutine = fetcher.fetch_key(key, query, patient_id, data)
        tasks[key] = asyncio.ensure_future(coroutine)
    done, pending = await asyncio.wait(tasks.values(), timeout=limits.timeout_seconds)
    for task in pending:
        task.cancel()
    for key, task in tasks.items():
        if task in pending and key in data.sources:
            data.problems.append(f"{key}: later pages timed out; only the prefetched page was read")
            continue
        if task in pending:
            data.unavailable[key] = f"the FHIR server did not answer within {limits.timeout_seconds:g} s"
            continue
        error = task.exception()
        if isinstance(error, FhirServerError | PrefetchError) and key in data.sources:
            data.problems.append(
                f"{key}: later pages could not be fetched ({error}); only the prefetched page was read"
            )
            continue
        if isinstance(error, FhirServerError | PrefetchError):
            data.unavailable[key] = (
                str(error)
                if isinstance(error, FhirServerError)
                else f"the FHIR server returned unusable data ({error})"
            )
            continue
        if error is not None:
            raise error
        data.resources.extend(task.result())
        data.sources[key] = "fetched" if key not in data.sources else "prefetch + fetched pages"
    fetcher.scrub(data)
    return data
