"""The FHIR fallback's error paths, with httpx.MockTransport standing in for a misbehaving server.

The happy paths (paging, search syntax, three prefetch modes) run against a real
HAPI server in tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from service.sandbox.synthetic import SyntheticPatient
from service.settings import Settings
from tests.api.conftest import SERVICE_URL, criterion, recorded_decision, started
from tests.api.test_hooks import assert_outcome

FHIR = "http://127.0.0.1:9999/fhir"
TOKEN = "secret-access-token-8d1f"


def _with_server(body: dict[str, Any]) -> dict[str, Any]:
    body["fhirServer"] = FHIR
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "til-cds",
        "patient": body["context"]["patientId"],
    }
    return body


def _searchset(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def fhir_server(
    patient: SyntheticPatient, misbehave: Callable[[httpx.Request], httpx.Response | None]
) -> httpx.MockTransport:
    """Answers searches from the patient's resources unless ``misbehave`` answers first."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = misbehave(request)
        if answer is not None:
            return answer
        kind = request.url.path.rsplit("/", 2)
        if request.url.path.endswith(f"/Patient/{patient.id}"):
            return httpx.Response(
                200, json=patient.resources[0], headers={"content-type": "application/fhir+json"}
            )
        resource_type = kind[-1]
        codes = request.url.params.get("code", "")
        matching = [
            r
            for r in patient.resources
            if r["resourceType"] == resource_type
            and (not codes or any(f"|{c['code']}" in codes for c in r["code"]["coding"]))
        ]
        return httpx.Response(
            200, json=_searchset(matching), headers={"content-type": "application/fhir+json"}
        )

    transport = httpx.MockTransport(handler)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


async def _call(
    app_factory: Callable[..., Any], transport: httpx.MockTransport, body: dict[str, Any]
) -> httpx.Response:
    async for client in started(app_factory(transport=transport, fhir_timeout_seconds=2.0)):
        return await client.post(SERVICE_URL, json=body)
    raise AssertionError("unreachable")


async def test_fetched_data_gives_the_same_cards_as_prefetch(
    app_factory: Callable[..., Any], request_for: Callable[..., Any], patients: dict[str, SyntheticPatient]
) -> None:
    patient = patients["til-lung-eligible"]
    transport = fhir_server(patient, lambda request: None)
    fetched = await _call(app_factory, transport, _with_server(request_for(patient.id, prefetch="none")))
    prefetched = await _call(app_factory, fhir_server(patient, lambda r: None), request_for(patient.id))
    assert [c["summary"] for c in fetched.json()["cards"]] == [
        c["summary"] for c in prefetched.json()["cards"]
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in transport.seen)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("failure", "phrase"),
    [
        (
            lambda r: httpx.Response(
                500,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "fatal", "code": "exception", "diagnostics": "db down"}],
                },
            ),
            "HTTP 500: db down",
        ),
        (
            lambda r: httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"}),
            "not FHIR JSON",
        ),
        (
            lambda r: httpx.Response(200, text="{oops", headers={"content-type": "application/fhir+json"}),
            "invalid JSON",
        ),
    ],
)
async def test_a_broken_server_for_required_data_is_412(
    failure: Callable[[httpx.Request], httpx.Response],
    phrase: str,
    app_factory: Callable[..., Any],
    request_for: Callable[..., Any],
    patients: dict[str, SyntheticPatient],
) -> None:
    patient = patients["til-lung-eligible"]
    response = await _call(
        app_factory, fhir_server(patient, failure), _with_server(request_for(patient.id, prefetch="none"))
    )
    body = assert_outcome(response, 412, phrase)
    assert TOKEN not in json.dumps(body)


async def test_a_server_that_times_out_is_412_not_a_hang(
    app_factory: Callable[..., Any], request_for: Callable[..., Any], patients: dict[str, SyntheticPatient]
) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    patient = patients["til-lung-eligible"]
    response = await _call(
        app_factory, fhir_server(patient, slow), _with_server(request_for(patient.id, prefetch="none"))
    )
    assert_outcome(response, 412, "did not answer within 2 s")


async def test_a_server_that_is_down_is_412(
    app_factory: Callable[..., Any], request_for: Callable[..., Any], patients: dict[str, SyntheticPatient]
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    patient = patients["til-lung-eligible"]
    response = await _call(
        app_factory, fhir_server(patient, refuse), _with_server(request_for(patient.id, prefetch="none"))
    )
    assert_outcome(response, 412, "could not be reached (ConnectError)")


async def test_a_failing_observation_search_makes_only_its_criteria_unknown(
    app_factory: Callable[..., Any],
    request_for: Callable[..., Any],
    patients: dict[str, SyntheticPatient],
    settings: Settings,
) -> None:
    patient = patients["til-lung-eligible"]

    def chemistry_fails(request: httpx.Request) -> httpx.Response | None:
        if "14979-9" in request.url.params.get("code", ""):
            return httpx.Response(
                503,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "transient"}],
                },
            )
        return None

    body = _with_server(request_for(patient.id))
    del body["prefetch"]["observations-chemistry"]
    response = await _call(app_factory, fhir_server(patient, chemistry_fails), body)
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    decision = recorded_decision(settings, card["uuid"])
    bilirubin = criterion(decision, "NCT06538012", "total-bilirubin")
    assert bilirubin.state == "unknown" and "could not be retrieved" in bilirubin.reason
    assert criterion(decision, "NCT06538012", "absolute-neutrophil-count").state == "met"


async def test_paged_prefetch_follows_next_links_on_the_same_server_only(
    app_factory: Callable[..., Any], request_for: Callable[..., Any], patients: dict[str, SyntheticPatient]
) -> None:
    patient = patients["til-many-observations"]
    body = _with_server(request_for(patient.id))
    counts = body["prefetch"]["observations-blood-counts"]
    entries = counts["entry"]
    counts["entry"] = entries[:50]
    counts["link"] = [{"relation": "next", "url": f"{FHIR}/Observation?page=2"}]

    def page_two(request: httpx.Request) -> httpx.Response | None:
        if request.url.params.get("page") == "2":
            return httpx.Response(
                200,
                json={"resourceType": "Bundle", "type": "searchset", "entry": entries[50:]},
                headers={"content-type": "application/fhir+json"},
            )
        return None

    transport = fhir_server(patient, page_two)
    response = await _call(app_factory, transport, body)
    assert response.status_code == 200
    assert [r.url.params.get("page") for r in transport.seen] == ["2"]  # type: ignore[attr-defined]

    counts["link"] = [{"relation": "next", "url": "http://evil.example/fhir/Observation?page=2"}]
    elsewhere = fhir_server(patient, page_two)
    response = await _call(app_factory, elsewhere, body)
    assert response.status_code == 200
    assert elsewhere.seen == []  # type: ignore[attr-defined]
    card = response.json()["cards"][0]
    assert "refused to follow a link to another server" in card["detail"]


async def test_issue_17_a_lost_dated_observation_search_makes_exactly_its_groups_unknown(
    app_factory: Callable[..., Any],
    request_for: Callable[..., Any],
    patients: dict[str, SyntheticPatient],
    settings: Settings,
) -> None:
    patient = patients["til-lung-eligible"]

    def dated_search_fails(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/Observation") and "date" in request.url.params:
            return httpx.Response(
                503,
                json={
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "transient"}],
                },
            )
        return None

    transport = fhir_server(patient, dated_search_fails)
    response = await _call(app_factory, transport, _with_server(request_for(patient.id, prefetch="none")))
    searches = [r for r in transport.seen if r.url.path.endswith("/Observation")]  # type: ignore[attr-defined]
    assert len(searches) == 2
    card = next(c for c in response.json()["cards"] if c["source"]["topic"]["code"] == "NCT06538012")
    decision = recorded_decision(settings, card["uuid"])
    for lost in ("absolute-neutrophil-count", "total-bilirubin", "performance-status"):
        verdict = criterion(decision, "NCT06538012", lost)
        assert verdict.state == "unknown" and "could not be retrieved" in verdict.reason, verdict
    assert criterion(decision, "NCT06538012", "hiv").state == "met"  # serology came in the undated search
    assert sum("HTTP 503" in problem for problem in decision.data_problems) == 3  # one per lost group


async def test_a_fetched_resource_nested_too_deep_to_record_is_412_naming_it(
    app_factory: Callable[..., Any], request_for: Callable[..., Any], patients: dict[str, SyntheticPatient]
) -> None:
    """orjson reads 1,024 levels but writes 254: such data parses, cannot be recorded, and
    is the FHIR server's fault (412 with the reason), not a 500."""
    patient = patients["til-lung-eligible"]
    nested: dict[str, Any] = {"url": "https://example.org/deep"}
    for _ in range(300):
        nested = {"url": "https://example.org/deep", "extension": [nested]}

    def deep(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.endswith("/Observation"):
            return None
        observations = [r for r in patient.resources if r["resourceType"] == "Observation"]
        observations[0] = {**observations[0], "extension": [nested]}
        body = json.dumps(_searchset(observations)).encode()
        return httpx.Response(200, content=body, headers={"content-type": "application/fhir+json"})

    response = await _call(
        app_factory, fhir_server(patient, deep), _with_server(request_for(patient.id, prefetch="none"))
    )
    body = assert_outcome(response, 412, "not plain JSON", "nested that deep")
    assert TOKEN not in json.dumps(body)
