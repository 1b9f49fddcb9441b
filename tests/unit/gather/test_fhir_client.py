"""The FHIR client on its own: Search values, and the page iterator against httpx.MockTransport.

The happy paths against a real server run in tests/integration; here the error branches:
limits, a ``next`` link to another origin, and httpx failures translated once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import doctest
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import service.gather.fhir_client
from service.errors import FhirResponseError, FhirTimeoutError, FhirUnavailableError
from service.gather.fhir_client import FetchLimits, FhirClient, Search

BASE = "http://fhir.test/r4"
TOKEN = "token-4a7c-secret"
JSON = {"content-type": "application/fhir+json"}


def test_the_docstring_example_runs() -> None:
    assert doctest.testmod(service.gather.fhir_client, raise_on_error=True).attempted > 0


def test_a_search_is_a_value_each_refinement_a_new_one() -> None:
    base = Search("Observation").where(patient="p1")
    bounded = base.where(date="ge2026-01-01").sort("-date").count(50)
    assert base.query == "Observation?patient=p1"
    assert bounded.query == "Observation?patient=p1&date=ge2026-01-01&_sort=-date&_count=50"
    assert bounded.count(10).query == "Observation?patient=p1&date=ge2026-01-01&_sort=-date&_count=10"
    assert bounded.query.endswith("_count=50")
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.resource_type = "Condition"  # type: ignore[misc]
    assert base == Search("Observation", (("patient", "p1"),))
    assert hash(base) == hash(Search("Observation").where(patient="p1"))


def test_a_search_renders_lists_as_any_of_and_repeats_as_all_of() -> None:
    search = (
        Search("MedicationRequest")
        .where(patient="p 1", code=["http://loinc.org|1-8", "http://loinc.org|2-6"])
        .where(date="ge2026-01-01")
        .where(date="lt2026-06-01")
        .include("MedicationRequest", "medication")
    )
    assert search.query == (
        "MedicationRequest?patient=p+1&code=http://loinc.org|1-8,http://loinc.org|2-6"
        "&date=ge2026-01-01&date=lt2026-06-01&_include=MedicationRequest:medication"
    )
    assert Search.from_query(search.query) == search
    assert Search.from_query("Patient/p1").query == "Patient/p1"


def _bundle(ids: list[str], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": i}} for i in ids],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def _paged(pages: int, per_page: int = 2) -> Callable[[httpx.Request], httpx.Response]:
    """A server whose search has ``pages`` pages, each linking to the next by ``page=N``."""

    def answer(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        ids = [f"o{page}-{i}" for i in range(per_page)]
        following = f"{BASE}/Observation?page={page + 1}" if page < pages else None
        return httpx.Response(200, json=_bundle(ids, following), headers=JSON)

    return answer


async def _read_all(
    handler: Callable[[httpx.Request], httpx.Response], limits: FetchLimits | None = None
) -> tuple[list[str], str | None, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(recording)) as http:
        client = FhirClient(http, BASE, TOKEN, limits or FetchLimits())
        pages = client.pages(Search("Observation").where(patient="p1"))
        ids = [entry["resource"]["id"] async for bundle in pages for entry in bundle["entry"]]
    return ids, pages.stopped, seen


async def test_pages_follow_next_links_to_the_end() -> None:
    ids, stopped, seen = await _read_all(_paged(3))
    assert ids == ["o1-0", "o1-1", "o2-0", "o2-1", "o3-0", "o3-1"]
    assert stopped is None
    assert str(seen[0].url) == f"{BASE}/Observation?patient=p1"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in seen)
    assert all(r.headers["accept"] == "application/fhir+json" for r in seen)


async def test_pages_stop_at_the_page_limit_and_say_so() -> None:
    ids, stopped, seen = await _read_all(_paged(10), FetchLimits(max_pages=2))
    assert len(seen) == 2 and len(ids) == 4
    assert stopped == "stopped after 2 pages (limit); older results were not read"


async def test_pages_stop_past_the_resource_limit_and_say_so() -> None:
    ids, stopped, seen = await _read_all(_paged(10, per_page=3), FetchLimits(max_resources=5))
    assert len(seen) == 2 and len(ids) == 6
    assert stopped == "more than 5 resources; the rest were not read"


async def test_a_search_still_paging_when_the_time_budget_is_spent_times_out() -> None:
    slow = _paged(1000)
    requested: list[int] = []

    async def slow_pages(request: httpx.Request) -> httpx.Response:
        requested.append(1)
        await asyncio.sleep(0.05)
        return slow(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow_pages)) as http:
        client = FhirClient(http, BASE, None, FetchLimits(timeout_seconds=0.2, max_pages=1000))
        with pytest.raises(FhirTimeoutError, match=r"still paging after 0.2 s \(\d+ pages read\)"):
            async for _ in client.pages(Search("Observation")):
                pass
    assert 1 <= len(requested) < 1000


async def test_a_next_link_to_another_server_is_refused() -> None:
    def elsewhere(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json=_bundle(["a"], "http://evil.example/r4/Observation?page=2"), headers=JSON
        )

    with pytest.raises(
        FhirResponseError, match=r"refused to follow a link to another server \(evil.example\)"
    ):
        await _read_all(elsewhere)


def _raises(exc: type[Exception]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("failed", request=request)  # type: ignore[call-arg]

    return handler


@pytest.mark.parametrize(
    ("handler", "error", "phrase"),
    [
        (_raises(httpx.ReadTimeout), FhirTimeoutError, "did not answer within 8 s"),
        (_raises(httpx.ConnectError), FhirUnavailableError, r"could not be reached \(ConnectError\)"),
        (
            lambda r: httpx.Response(
                503,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"code": "transient", "diagnostics": "busy"}],
                },
                headers=JSON,
            ),
            FhirResponseError,
            "answered HTTP 503: busy",
        ),
        (
            lambda r: httpx.Response(200, text="<html/>", headers={"content-type": "text/html"}),
            FhirResponseError,
            "not FHIR JSON",
        ),
        (lambda r: httpx.Response(200, text='{"a": NaN}', headers=JSON), FhirResponseError, "invalid JSON"),
        (
            lambda r: httpx.Response(302, headers={"location": BASE}),
            FhirResponseError,
            "redirects are not followed",
        ),
        (
            lambda r: httpx.Response(200, json={"resourceType": "Patient", "id": "p1"}, headers=JSON),
            FhirResponseError,
            "answered a Patient, not a Bundle",
        ),
    ],
)
async def test_failures_are_translated_into_fhir_server_errors(
    handler: Callable[[httpx.Request], httpx.Response], error: type[Exception], phrase: str
) -> None:
    with pytest.raises(error, match=phrase) as raised:
        await _read_all(handler)
    assert TOKEN not in str(raised.value)


async def test_scrub_blanks_the_token_out() -> None:
    async with httpx.AsyncClient() as http:
        client = FhirClient(http, BASE, TOKEN, FetchLimits())
        assert client.scrub(f"bad token {TOKEN}") == "bad token [redacted]"
