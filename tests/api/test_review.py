"""Issue 8: the review page behind each card (signed, expiring link) and the dev-only sandbox console."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from service.api.routes.review import templates
from service.review import (
    ReviewLinkError,
    ReviewLinkExpiredError,
    sign_review_token,
    verify_review_token,
)
from service.settings import ClientConfig, Settings
from tests.api.conftest import SERVICE_URL, started

KEY = "test-review-key"
PATIENT_DATA = ("til-lung-eligible", "Hemoglobin", "12.8", "Observation/")


def review_links(response: httpx.Response) -> list[str]:
    return [
        link["url"]
        for card in response.json()["cards"]
        for link in card.get("links") or []
        if "/review/" in link["url"]
    ]


def split_link(url: str) -> tuple[str, str, str]:
    """(path, decision id, token) of a review link."""
    parts = urlsplit(url)
    return parts.path, parts.path.rsplit("/", 1)[-1], parse_qs(parts.query)["token"][0]


def assert_no_patient_data(text: str) -> None:
    for datum in PATIENT_DATA:
        assert datum not in text


# --- the token ------------------------------------------------------------------------------


def test_a_fresh_token_opens_its_decision() -> None:
    decision_id = str(uuid.uuid4())
    verify_review_token(sign_review_token(decision_id, KEY, 60), decision_id, KEY)


@pytest.mark.parametrize("token", [None, "", "not-a-token", "eyJkIjoiYSIsImUiOjF9.forged"])
def test_a_missing_or_forged_token_is_refused(token: str | None) -> None:
    with pytest.raises(ReviewLinkError) as caught:
        verify_review_token(token, "a", KEY)
    assert not isinstance(caught.value, ReviewLinkExpiredError)


def test_a_tampered_token_is_refused() -> None:
    decision_id = str(uuid.uuid4())
    token = sign_review_token(decision_id, KEY, 60)
    payload, signature = token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    with pytest.raises(ReviewLinkError):
        verify_review_token(f"{flipped}.{signature}", decision_id, KEY)
    with pytest.raises(ReviewLinkError):
        verify_review_token(token, decision_id, "another-key")


def test_a_token_for_another_decision_is_refused() -> None:
    token = sign_review_token(str(uuid.uuid4()), KEY, 60)
    with pytest.raises(ReviewLinkError, match="not valid for this decision"):
        verify_review_token(token, str(uuid.uuid4()), KEY)


def test_an_expired_token_says_so() -> None:
    decision_id = str(uuid.uuid4())
    token = sign_review_token(decision_id, KEY, 60, now=time.time() - 120)
    with pytest.raises(ReviewLinkExpiredError, match="link expired"):
        verify_review_token(token, decision_id, KEY)
    verify_review_token(token, decision_id, KEY, now=time.time() - 90)


# --- the page -------------------------------------------------------------------------------


async def test_each_card_links_to_its_review_page_with_every_criterion(
    client: httpx.AsyncClient, request_for: Callable[..., dict[str, Any]]
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))
    cards = response.json()["cards"]
    assert len(cards) == 2
    links = [link for card in cards for link in card["links"] if "/review/" in link["url"]]
    assert len(links) == 2 and all(link["type"] == "absolute" for link in links)
    assert len({link["url"].split("?")[0] for link in links}) == 1, "one decision per hook call"
    assert links[0]["url"].startswith("http://testserver/review/")
    path, decision_id, token = split_link(links[0]["url"])
    uuid.UUID(decision_id)
    assert "til-lung" not in links[0]["url"]

    page = await client.get(path, params={"token": token})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    text = page.text
    assert '<html lang="en">' in text
    assert 'id="patient-sex">male<' in text
    assert 'id="patient-age">58 years<' in text
    row = text.split('id="crit-NCT06538012-hemoglobin"')[1].split("</tr>")[0]
    assert 'data-state="met"' in row
    assert "12.8 g/dL" in row and "needs ≥ 90 g/L" in row and "Observation/til-lung-eligible-obs-7" in row
    assert "30-day look-back" in row
    aptt = text.split('id="crit-NCT06538012-aptt"')[1].split("</tr>")[0]
    assert "ULN 36" in aptt and "reference range" in aptt
    # Suggested trials first, the trial for another cancer last, with its reason and no table.
    order = [
        text.index(f'data-trial="{t}"') for t in ("NCT04614103", "NCT06538012", "essen-til-gastroesophageal")
    ]
    assert order == sorted(order)
    gastro = text.split('data-trial="essen-til-gastroesophageal"')[1].split("</section>")[0]
    assert "Not applicable" in gastro and "stomach or esophageal cancer" in gastro and "<table" not in gastro
    assert "Cohort 2" in text and 'id="timeline"' in text


async def test_a_ruled_out_trial_shows_what_rules_it_out(
    client: httpx.AsyncClient, request_for: Callable[..., dict[str, Any]]
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-lung-ecog-2"))
    path, _, token = split_link(review_links(response)[0])
    text = (await client.get(path, params={"token": token})).text
    ruled_out = text.split('data-trial="NCT04614103"')[1].split("</section>")[0]
    assert 'data-status="ruled_out"' in text
    assert "What rules it out" in ruled_out
    blocking = ruled_out.split("What rules it out")[1].split("</div>")[0]
    assert (
        "<strong>ECOG performance status 0–1</strong>" in blocking and "2" in blocking and "≤ 1" in blocking
    )
    ecog = ruled_out.split('id="crit-NCT04614103-ecog"')[1].split("</tr>")[0]
    assert 'data-state="not_met"' in ecog and "90-day look-back" in ecog


async def test_a_washout_appears_on_the_timeline(
    client: httpx.AsyncClient, request_for: Callable[..., dict[str, Any]]
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-recent-docetaxel"))
    path, _, token = split_link(review_links(response)[0])
    text = (await client.get(path, params={"token": token})).text
    timeline = text.split('id="timeline"')[1]
    assert "washout ends" in timeline and "leave their 30-day look-back" in timeline


@pytest.mark.parametrize("case", ["no token", "tampered", "another decision's token", "expired"])
async def test_without_a_valid_token_the_page_shows_no_data(
    case: str,
    client: httpx.AsyncClient,
    request_for: Callable[..., dict[str, Any]],
    settings: Settings,
) -> None:
    response = await client.post(SERVICE_URL, json=request_for("til-lung-eligible"))
    path, decision_id, token = split_link(review_links(response)[0])
    other = await client.post(SERVICE_URL, json=request_for("til-lung-ecog-2"))
    _, other_decision_id, other_token = split_link(review_links(other)[0])
    assert other_decision_id != decision_id
    key = settings.review_signing_key.get_secret_value()
    params = {
        "no token": {},
        "tampered": {"token": token[:-3] + ("xyz" if not token.endswith("xyz") else "abc")},
        "another decision's token": {"token": other_token},
        "expired": {"token": sign_review_token(decision_id, key, 60, now=time.time() - 3600)},
    }[case]
    page = await client.get(path, params=params)
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert ("Link expired" in page.text) is (case == "expired")
    assert_no_patient_data(page.text)
    assert "criteria" not in page.text.split("<main")[1]


async def test_an_unknown_decision_is_404_without_data(client: httpx.AsyncClient, settings: Settings) -> None:
    decision_id = str(uuid.uuid4())
    token = sign_review_token(decision_id, settings.review_signing_key.get_secret_value(), 60)
    page = await client.get(f"/review/{decision_id}", params={"token": token})
    assert page.status_code == 404
    assert "No recorded decision" in page.text
    assert_no_patient_data(page.text)


async def test_review_pages_are_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not any(p.startswith(("/review", "/sandbox")) for p in paths)


# --- the console ----------------------------------------------------------------------------


def production_settings(settings: Settings, **overrides: Any) -> Settings:
    client = ClientConfig(issuer="https://ehr.hospital.example", jwks={"keys": []})
    return settings.model_copy(update={"dev": False, "clients": [client], **overrides})


async def test_the_console_is_404_outside_dev(settings: Settings) -> None:
    from service.api.main import create_app

    app: FastAPI = create_app(production_settings(settings))
    async for client in started(app):
        for method, path in (("GET", "/sandbox"), ("GET", "/sandbox/patients"), ("POST", "/sandbox/fire")):
            response = await client.request(method, path, params={"fhir_server": "http://x"}, json={})
            assert response.status_code == 404, path
        assert (await client.get("/static/til-cds.css")).status_code == 200


async def test_the_console_opens_with_sandbox_console_set(settings: Settings) -> None:
    from service.api.main import create_app

    app: FastAPI = create_app(production_settings(settings, sandbox_console=True))
    async for client in started(app):
        page = await client.get("/sandbox")
        assert page.status_code == 200
        assert '<label for="patient">' in page.text and 'id="fire"' in page.text


async def test_the_console_fires_through_the_real_hook_route(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/sandbox/fire", json={"source": "builtin", "patient_id": "til-lung-eligible", "prefetch": "full"}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == 200 and data["request"]["hook"] == "patient-view"
    assert len(data["response"]["cards"]) == 2 and data["elapsed_ms"] > 0
    assert "NCT06538012" in data["cards_html"] and "<strong>" in data["cards_html"]
    assert 'class="cds-card indicator-info"' in data["cards_html"]
    missing = await client.post(
        "/sandbox/fire", json={"source": "builtin", "patient_id": "til-lung-eligible", "prefetch": "none"}
    )
    assert missing.json()["status"] == 412


async def test_the_console_lists_patients_of_a_fhir_server_and_reports_an_unreachable_one(
    client: httpx.AsyncClient,
) -> None:
    refused = await client.get("/sandbox/patients", params={"fhir_server": "http://127.0.0.1:9/fhir"})
    assert refused.status_code == 502 and "did not list patients" in refused.json()["error"]
    bad = await client.get("/sandbox/patients", params={"fhir_server": "file:///etc/passwd"})
    assert bad.status_code == 400


def test_card_markdown_is_rendered_without_raw_html() -> None:
    render = templates.env.filters["markdown"]
    html = str(render("**bold** <script>alert(1)</script> [x](javascript:alert(1))"))
    assert "<strong>bold</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html


def fake_fhir_server(patients: dict[str, Any]) -> httpx.MockTransport:
    """A FHIR server holding the synthetic patients: reads and searches by patient (and code)."""

    def handle(request: httpx.Request) -> httpx.Response:
        parts = request.url.path.removeprefix("/fhir/").split("/")
        resources = [r for p in patients.values() for r in p.resources]
        if len(parts) == 2:
            found = [r for r in resources if r["resourceType"] == parts[0] and r["id"] == parts[1]]
            return httpx.Response(200 if found else 404, json=found[0] if found else {})
        params = request.url.params
        matches = [r for r in resources if r["resourceType"] == parts[0]]
        if "patient" in params:
            matches = [
                r for r in matches if r.get("subject", {}).get("reference") == f"Patient/{params['patient']}"
            ]
        if "code" in params:
            codes = {c.split("|")[-1] for c in params["code"].split(",")}
            matches = [r for r in matches if any(c["code"] in codes for c in r["code"]["coding"])]
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in matches]}
        return httpx.Response(200, json=bundle, headers={"content-type": "application/fhir+json"})

    return httpx.MockTransport(handle)


async def test_the_console_plays_the_ehr_for_a_fhir_server(
    app_factory: Callable[..., FastAPI], patients: dict[str, Any]
) -> None:
    wanted = {k: patients[k] for k in ("til-lung-eligible", "til-kidney-transplant")}
    async for client in started(app_factory(transport=fake_fhir_server(wanted))):
        listed = await client.get("/sandbox/patients", params={"fhir_server": "http://127.0.0.1:8080/fhir"})
        assert [p["id"] for p in listed.json()["patients"]] == list(wanted)
        for prefetch in ("full", "partial", "none"):
            fired = await client.post(
                "/sandbox/fire",
                json={
                    "source": "fhir",
                    "fhir_server": "http://127.0.0.1:8080/fhir",
                    "patient_id": "til-lung-eligible",
                    "prefetch": prefetch,
                },
            )
            data = fired.json()
            assert data["status"] == 200, data
            assert len(data["response"]["cards"]) == 2, prefetch
            sent = set(data["request"].get("prefetch", {}))
            if prefetch == "full":
                assert {"patient", "conditions", "observations-blood-counts"} <= sent
            else:
                assert sent == ({"patient", "conditions"} if prefetch == "partial" else set())
            assert data["request"]["fhirServer"] == "http://127.0.0.1:8080/fhir"
