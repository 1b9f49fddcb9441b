"""Issue 15: the console and the review page fit a 1280-px screen and a 400-px EHR side panel.

Every page and state is checked at both widths in headless Chromium: the document is no
wider than the window (nothing scrolls sideways), axe-core reports no serious or critical
accessibility violation, and a full-page screenshot of each width goes to
``test-artifacts/<page>-<state>-<width>px.png`` for a person to look at.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from service.review import sign_review_token
from tests.browser.conftest import LiveService

pytestmark = pytest.mark.browser

WIDTHS = (1280, 400)
HEIGHT = 800
BLOCKING_IMPACTS = ("serious", "critical")
WHY_LINK = "Every criterion with its evidence"
_axe = Axe()


@pytest.fixture
def page(chromium_browser: Browser, live_service: LiveService) -> Iterator[Page]:
    context = chromium_browser.new_context(
        viewport={"width": WIDTHS[0], "height": HEIGHT}, base_url=live_service.base_url
    )
    yield context.new_page()
    context.close()


def _violations(page: Page) -> list[str]:
    response: dict[str, Any] = _axe.run(page).response
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']][:3]}"
        for v in response["violations"]
        if v["impact"] in BLOCKING_IMPACTS
    ]


def assert_fits_and_is_accessible(page: Page, artifacts: Path, name: str) -> None:
    """At each width: no sideways scrolling, no serious axe violation; a full-page screenshot."""
    problems: list[str] = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": HEIGHT})
        scroll_width, inner_width = page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        page.screenshot(path=str(artifacts / f"{name}-{width}px.png"), full_page=True)
        if scroll_width > inner_width:
            problems.append(f"{width}px: the page is {scroll_width}px wide")
        problems += [f"{width}px: {violation}" for violation in _violations(page)]
    assert problems == [], f"{name}: " + "; ".join(problems)


def _open_every_section(page: Page) -> None:
    page.evaluate("() => document.querySelectorAll('details').forEach(d => { d.open = true; })")


def _fire(page: Page, patient_id: str, prefetch: str = "full", fhir_server: str | None = None) -> None:
    page.get_by_label("Patient", exact=True).select_option(patient_id)
    page.locator(f"#prefetch-{prefetch}").check()
    if fhir_server is not None:
        page.get_by_label("FHIR base URL").fill(fhir_server)
    page.get_by_role("button", name="Fire patient-view").click()
    expect(page.locator("#status")).not_to_contain_text("Calling", timeout=20_000)


def _review_url(page: Page, patient_id: str, trial_id: str) -> str:
    """The "Why" link of the patient's card for ``trial_id``, from the console's backend."""
    answer = page.request.post(
        "/sandbox/fire", data={"source": "builtin", "patient_id": patient_id, "prefetch": "full"}
    ).json()
    card = next(c for c in answer["response"]["cards"] if trial_id in c["summary"])
    return str(next(link["url"] for link in card["links"] if link["label"] == WHY_LINK))


def test_the_console_before_any_hook(page: Page, artifacts: Path) -> None:
    page.goto("/sandbox")
    expect(page.locator("#cards")).to_contain_text("Fire a hook")
    assert_fits_and_is_accessible(page, artifacts, "console-initial")


def test_the_console_after_a_hook_with_full_prefetch(page: Page, artifacts: Path) -> None:
    """Issue 15's 40,902-px console: the request and response JSON stretched the column."""
    page.goto("/sandbox")
    _fire(page, "til-lung-eligible")
    expect(page.locator("article.cds-card")).to_have_count(2)
    expect(page.locator("#request-json")).to_contain_text('"prefetch"')
    expect(page.locator("#response-json")).to_contain_text('"cards"')
    assert_fits_and_is_accessible(page, artifacts, "console-full-prefetch")


def test_the_console_after_a_hook_with_no_card(page: Page, artifacts: Path) -> None:
    page.goto("/sandbox")
    _fire(page, "til-kidney-transplant")
    expect(page.get_by_test_id("no-cards")).to_be_visible()
    assert_fits_and_is_accessible(page, artifacts, "console-no-cards")


def test_the_console_with_partial_prefetch_and_an_unreachable_fhir_server(
    page: Page, live_service: LiveService, artifacts: Path
) -> None:
    """The service cannot fetch the rest: its error answer and the long URL in it still fit."""
    page.goto("/sandbox")
    _fire(page, "til-lung-eligible", "partial", live_service.base_url + "/no-fhir-server-here/fhir")
    expect(page.locator("#status")).to_have_class("status-line error")
    expect(page.locator("#response-json")).to_contain_text("OperationOutcome")
    expect(page.locator("#request-json")).to_contain_text('"conditions"')
    assert_fits_and_is_accessible(page, artifacts, "console-partial-prefetch-error")


def test_the_console_with_no_prefetch_and_no_fhir_server(page: Page, artifacts: Path) -> None:
    page.goto("/sandbox")
    _fire(page, "til-lung-eligible", "none", "")
    expect(page.locator("#response-json")).to_contain_text("OperationOutcome")
    expect(page.locator("#request-json")).not_to_contain_text('"prefetch"')
    assert_fits_and_is_accessible(page, artifacts, "console-no-prefetch-error")


def test_the_console_when_the_call_and_the_patient_list_fail(
    page: Page, live_service: LiveService, artifacts: Path
) -> None:
    page.goto("/sandbox")
    unreachable = live_service.base_url + "/" + "segment" * 40  # one 280-character token
    page.get_by_label("FHIR base URL").fill(unreachable)
    page.get_by_role("button", name="Load patients from the FHIR server").click()
    expect(page.locator("#status")).to_contain_text("Could not load patients")
    assert_fits_and_is_accessible(page, artifacts, "console-patient-list-error")
    page.get_by_label("built-in synthetic patients").check()
    _fire(page, "til-lung-eligible", "full", "ftp://example.org/fhir")
    expect(page.locator("#status")).to_contain_text("The call failed")
    assert_fits_and_is_accessible(page, artifacts, "console-call-error")


@pytest.mark.parametrize(
    ("patient_id", "card_trial", "status", "trials", "name"),
    [
        ("til-lung-eligible", "NCT06538012", "may_be_eligible", 2, "review-may-be-eligible"),
        ("til-squamous", "NCT06538012", "ruled_out", 1, "review-ruled-out"),
        ("til-gastric", "essen-til-gastroesophageal", "not_applicable", 2, "review-not-applicable"),
    ],
)
def test_the_review_page(
    page: Page, artifacts: Path, patient_id: str, card_trial: str, status: str, trials: int, name: str
) -> None:
    """A suggested, a ruled-out and a not-applicable trial, every collapsed section opened."""
    page.goto(_review_url(page, patient_id, card_trial))
    expect(page.locator(f"section.trial[data-status={status}]")).to_have_count(trials)
    _open_every_section(page)
    assert_fits_and_is_accessible(page, artifacts, name)


def test_the_review_page_refusals(page: Page, live_service: LiveService, artifacts: Path) -> None:
    url = _review_url(page, "til-lung-eligible", "NCT06538012")
    path = url.split("?", 1)[0]
    page.goto(path)
    expect(page.get_by_role("heading", level=1)).to_have_text("Access denied")
    assert_fits_and_is_accessible(page, artifacts, "review-denied")
    key = live_service.settings.review_signing_key.get_secret_value()
    expired = sign_review_token(path.rsplit("/", 1)[-1], key, 60, now=time.time() - 3600)
    page.goto(f"{path}?token={expired}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Link expired")
    assert_fits_and_is_accessible(page, artifacts, "review-expired")
