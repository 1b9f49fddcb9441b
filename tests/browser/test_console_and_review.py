"""Issue 8 end to end in headless Chromium: the sandbox console fires hooks, cards link to review pages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from service.review import sign_review_token
from tests.browser.conftest import LiveService

pytestmark = pytest.mark.browser

WHY_LINK = "Every criterion with its evidence"


def fire(tab: Page, patient_id: str) -> None:
    tab.goto("/sandbox")
    tab.get_by_label("Patient", exact=True).select_option(patient_id)
    tab.get_by_role("button", name="Fire patient-view").click()
    expect(tab.locator("#status")).to_contain_text("HTTP ", timeout=20_000)


def test_the_console_shows_the_cards_of_an_eligible_patient(tab: Page, artifacts: Path) -> None:
    fire(tab, "til-lung-eligible")
    cards = tab.locator("article.cds-card")
    expect(cards).to_have_count(2)
    expect(cards.filter(has_text="NCT06538012")).to_have_count(1)
    expect(cards.filter(has_text="NCT04614103")).to_have_count(1)
    expect(cards.first.locator(".indicator")).to_have_text("info")
    expect(cards.first.locator(".card-detail strong").first).to_be_visible()
    expect(cards.first.get_by_role("link", name=WHY_LINK)).to_be_visible()
    expect(cards.first.get_by_label("If dismissed, reason")).to_contain_text("Patient declined")
    expect(tab.locator("#timing")).to_contain_text("ms")
    expect(tab.locator("#request-json")).to_contain_text('"hook": "patient-view"')
    expect(tab.locator("#response-json")).to_contain_text('"cards"')
    expect(tab.locator("#response-status")).to_have_text("HTTP 200")
    tab.screenshot(path=str(artifacts / "console-til-lung-eligible.png"), full_page=True)


def test_the_console_shows_no_card_after_a_kidney_transplant(tab: Page, artifacts: Path) -> None:
    fire(tab, "til-kidney-transplant")
    expect(tab.get_by_test_id("no-cards")).to_be_visible()
    expect(tab.locator("article.cds-card")).to_have_count(0)
    expect(tab.locator("#status")).to_contain_text("0 cards")
    tab.screenshot(path=str(artifacts / "console-til-kidney-transplant.png"), full_page=True)


def test_a_cards_review_link_opens_every_criterion_with_its_evidence(tab: Page, artifacts: Path) -> None:
    fire(tab, "til-lung-eligible")
    card = tab.locator("article.cds-card").filter(has_text="NCT06538012")
    with tab.context.expect_page() as opened:
        card.get_by_role("link", name=WHY_LINK).click()
    review = opened.value
    review.wait_for_load_state()
    expect(review).to_have_title("Why these trial suggestions — TIL trial finder")
    expect(review.locator("#patient-age")).to_have_text("58 years")
    expect(review.locator("#patient-sex")).to_have_text("male")
    row = review.locator("#crit-NCT06538012-hemoglobin")
    expect(row).to_have_attribute("data-state", "met")
    expect(row.locator(".state")).to_have_text("met")
    expect(row).to_contain_text("12.8 g/dL")
    expect(row).to_contain_text("needs ≥ 90 g/L")
    expect(review.locator("#crit-NCT06538012-aptt")).to_contain_text("ULN 36")
    expect(review.locator("#timeline")).to_contain_text("look-back")
    trials = review.locator("section.trial")
    expect(trials.last).to_have_attribute("data-trial", "essen-til-gastroesophageal")
    expect(trials.last.locator("table")).to_have_count(0)
    review.screenshot(path=str(artifacts / "review-til-lung-eligible.png"), full_page=True)
    review.emulate_media(media="print")
    expect(review.locator(".site-header")).to_be_hidden()
    review.screenshot(path=str(artifacts / "review-til-lung-eligible-print.png"))
    review.pdf(path=str(artifacts / "review-til-lung-eligible.pdf"))


def test_the_review_page_refuses_a_missing_or_expired_token(
    tab: Page, live_service: LiveService, artifacts: Path
) -> None:
    fire(tab, "til-lung-eligible")
    href = tab.get_by_role("link", name=WHY_LINK).first.get_attribute("href") or ""
    path = urlsplit(href).path
    decision_id = path.rsplit("/", 1)[-1]

    response = tab.goto(path)
    assert response is not None and response.status == 403
    expect(tab.get_by_role("heading", level=1)).to_have_text("Access denied")
    for datum in ("Hemoglobin", "til-lung-eligible", "58 years"):
        expect(tab.locator("body")).not_to_contain_text(datum)

    key = live_service.settings.review_signing_key.get_secret_value()
    expired = sign_review_token(decision_id, key, 60, now=time.time() - 3600)
    response = tab.goto(f"{path}?token={expired}")
    assert response is not None and response.status == 403
    expect(tab.get_by_role("heading", level=1)).to_have_text("Link expired")
    expect(tab.locator("body")).not_to_contain_text("Hemoglobin")
    tab.screenshot(path=str(artifacts / "review-expired.png"))


def test_the_console_is_usable_from_the_keyboard_and_labelled(tab: Page) -> None:
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto("/sandbox")
    assert tab.locator("html").get_attribute("lang") == "en"
    for landmark in ("banner", "main", "contentinfo"):
        expect(tab.get_by_role(landmark)).to_have_count(1)
    unlabelled = tab.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
                .filter(el => el.type !== 'hidden' && el.labels.length === 0)
                .map(el => el.id || el.name)"""
    )
    assert unlabelled == []
    reached = False
    for _ in range(40):
        tab.keyboard.press("Tab")
        if tab.evaluate("() => document.activeElement && document.activeElement.id") == "fire":
            reached = True
            break
    assert reached, "Tab never reached the fire button"
    tab.keyboard.press("Enter")
    expect(tab.locator("#status")).to_contain_text("HTTP 200", timeout=20_000)
    assert errors == [], "no script errors and no Content-Security-Policy violations"


def test_a_card_as_an_oncologist_sees_it_in_a_side_panel(
    chromium_browser: Any, live_service: Any, artifacts: Path
) -> None:
    """One card in a 400-px EHR side panel: it fits without scrolling sideways, its
    suggestions are buttons, and it says nothing in UCUM or by criterion id."""
    context = chromium_browser.new_context(
        viewport={"width": 400, "height": 900}, base_url=live_service.base_url
    )
    tab = context.new_page()
    try:
        fire(tab, "til-missing-data")
        card = tab.locator("article.cds-card").filter(has_text="NCT06538012")
        expect(card).to_have_count(1)
        expect(card.get_by_role("button", name="Order the missing tests")).to_be_visible()
        expect(card.get_by_role("button", name="Refer to the trial team")).to_be_visible()
        text = card.locator(".card-detail").inner_text()
        assert "absolute-neutrophil-count" not in text and "10*9" not in text
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        box = card.bounding_box()
        assert box is not None and box["height"] < 900, "the card is read without scrolling"
        card.screenshot(path=str(artifacts / "card-til-missing-data-400px.png"))
    finally:
        context.close()
