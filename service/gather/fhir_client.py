"""A small FHIR REST client for one hook call: searches as values, pages as an async iterator.

A :class:`Search` is immutable: ``where``, ``count``, ``sort`` and ``include`` return new
searches, so a base search can be refined for each use without one use leaking into the
next (the design of fhir-py's ``SearchSet``, whose ``clone`` does the same).  The client
reads one server on behalf of one hook call, within its :class:`FetchLimits`, follows
``next`` links only on that server's origin, and translates httpx failures and
OperationOutcomes here, once, into ``FhirServerError`` subclasses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx
import orjson

from service.errors import FhirResponseError, FhirTimeoutError, FhirUnavailableError
from service.observability import FHIR_FETCH_ERRORS, FHIR_FETCH_SECONDS

__all__ = ["FetchLimits", "FhirClient", "Pages", "Search", "next_link", "outcome_text"]

_FHIR_JSON = "application/fhir+json"
_READABLE = ",|:/"
"""Characters left as they are in a rendered search: code lists and systems stay legible."""


@dataclass(frozen=True)
class FetchLimits:
    """How much one hook call may ask of the FHIR server (from the settings)."""

    timeout_seconds: float = 8.0
    max_pages: int = 20
    max_concurrency: int = 8
    max_resources: int = 20_000
    page_size: int = 200


@dataclass(frozen=True)
class Search:
    """A FHIR search as a value: resource type and parameters, rendered by :attr:`query`.

    >>> base = Search("Observation").where(patient="p1")
    >>> base.where(code=["http://loinc.org|718-7", "http://loinc.org|777-3"]).count(50).query
    'Observation?patient=p1&code=http://loinc.org|718-7,http://loinc.org|777-3&_count=50'
    >>> base.query
    'Observation?patient=p1'
    """

    resource_type: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_query(cls, query: str) -> Search:
        """The search a relative query (``Condition?patient=p1&_count=200``) stands for."""
        path, _, text = query.partition("?")
        return cls(path, tuple(parse_qsl(text, keep_blank_values=True)))

    def where(self, **params: str | Iterable[str]) -> Search:
        """A narrower search: each parameter is added (AND); a list of values means any of them (OR)."""
        added = tuple(
            (name, value if isinstance(value, str) else ",".join(value)) for name, value in params.items()
        )
        return replace(self, params=self.params + added)

    def count(self, page_size: int) -> Search:
        """The same search asking for ``page_size`` results per page."""
        return self._set("_count", str(page_size))

    def sort(self, *keys: str) -> Search:
        """The same search sorted by ``keys`` (``-date``: newest first)."""
        return self._set("_sort", ",".join(keys))

    def include(self, resource_type: str, parameter: str) -> Search:
        """The same search also bringing the resources its matches refer to by ``parameter``."""
        return replace(self, params=(*self.params, ("_include", f"{resource_type}:{parameter}")))

    def _set(self, name: str, value: str) -> Search:
        return replace(self, params=(*((n, v) for n, v in self.params if n != name), (name, value)))

    @property
    def query(self) -> str:
        """The search relative to a server's base URL."""
        if not self.params:
            return self.resource_type
        return f"{self.resource_type}?{urlencode(self.params, safe=_READABLE)}"


def outcome_text(outcome: dict[str, Any]) -> str:
    """What an OperationOutcome says, issue by issue."""
    issues = outcome.get("issue") or []
    texts = [
        str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code"))
        for i in issues
        if isinstance(i, dict)
    ]
    return "; ".join(texts) or "an OperationOutcome without detail"


def next_link(bundle: dict[str, Any]) -> str | None:
    """The URL of a searchset's next page, if it names one."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def _resource_count(bundle: dict[str, Any]) -> int:
    """Entries that are resources of the search (an OperationOutcome entry is a message)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return 0
    resources = [e.get("resource") if isinstance(e, dict) else None for e in entries]
    return sum(
        1 for r in resources if not (isinstance(r, dict) and r.get("resourceType") == "OperationOutcome")
    )


class FhirClient:
    """Reads one FHIR server on behalf of one hook call, within its limits."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, token: str | None, limits: FetchLimits
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/") + "/"
        self.origin = urlsplit(self.base_url)[:2]
        self.headers = {"Accept": _FHIR_JSON}
        self.token = token
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.limits = limits
        self.semaphore = asyncio.Semaphore(limits.max_concurrency)

    def scrub(self, text: str) -> str:
        """``text`` with the access token blanked out: some servers echo it in their errors."""
        return text.replace(self.token, "[redacted]") if self.token else text

    def pages(self, start: Search | str) -> Pages:
        """The Bundles of a search (or of a ``next`` link a prefetch ended with), page by page."""
        return Pages(self, start.query if isinstance(start, Search) else start)

    async def read(self, path: str) -> dict[str, Any]:
        """One resource (``Patient/p1``) or one page, as parsed JSON; errors translated."""
        url = urljoin(self.base_url, path)
        started = time.perf_counter()
        try:
            return await self._get_json(url)
        except Exception as exc:
            FHIR_FETCH_ERRORS.labels(error=type(exc).__name__).inc()
            raise
        finally:
            FHIR_FETCH_SECONDS.observe(time.perf_counter() - started)

    async def _get_json(self, url: str) -> dict[str, Any]:
        if urlsplit(url)[:2] != self.origin:
            raise FhirResponseError(f"refused to follow a link to another server ({urlsplit(url).netloc})")
        shown = url.split("?")[0]
        async with self.semaphore:
            try:
                response = await self.http.get(
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
                outcome_text(body)
                if body.get("resourceType") == "OperationOutcome"
                else "no OperationOutcome"
            )
            raise FhirResponseError(f"{shown} answered HTTP {response.status_code}: {detail}")
        return body


class Pages:
    """``async for bundle in client.pages(search)``: each searchset Bundle, following ``next`` links.

    Paging stops early at the client's page limit, or once more resources than its resource
    limit were read; :attr:`stopped` then says so, for the caller to report (the pages read
    are still good).  A page that is not a Bundle, a search still paging when the time
    budget (``timeout_seconds``, counted from the first page) is spent, or any failure
    raises ``FhirServerError``.
    """

    def __init__(self, client: FhirClient, first_url: str) -> None:
        self.client = client
        self.stopped: str | None = None
        self._url: str | None = first_url
        self._pages = 0
        self._resources = 0
        self._deadline = time.monotonic() + client.limits.timeout_seconds

    def __aiter__(self) -> Pages:
        return self

    async def __anext__(self) -> dict[str, Any]:
        limits = self.client.limits
        if self._url is None:
            raise StopAsyncIteration
        if self._pages >= limits.max_pages:
            self.stopped = f"stopped after {self._pages} pages (limit); older results were not read"
            raise StopAsyncIteration
        if self._resources > limits.max_resources:
            self.stopped = f"more than {limits.max_resources} resources; the rest were not read"
            raise StopAsyncIteration
        if self._pages and time.monotonic() > self._deadline:
            raise FhirTimeoutError(
                f"the search was still paging after {limits.timeout_seconds:g} s ({self._pages} pages read)"
            )
        bundle = await self.client.read(self._url)
        self._pages += 1
        if bundle.get("resourceType") != "Bundle":
            raise FhirResponseError(f"the search answered a {bundle.get('resourceType')}, not a Bundle")
        self._resources += _resource_count(bundle)
        self._url = next_link(bundle)
        return bundle
