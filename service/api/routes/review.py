"""``GET /review/{decision_id}?token=...``: the page behind each card's "Why" link.

Server-rendered HTML of the recorded decision.  Without a genuine, unexpired token for
this decision the page is a plain 403 that shows nothing of the decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service.api.deps import AuditDep, SettingsDep
from service.audit import stored_decision
from service.review import ReviewLinkError, ReviewLinkExpiredError, build_review_page, verify_review_token

__all__ = ["HTML_HEADERS", "router", "templates"]

router = APIRouter(tags=["review"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")

# Everything the pages load comes from this service; the token never leaves in a Referer.
HTML_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


def _refusal(request: Request, status: int, title: str, explanation: str) -> HTMLResponse:
    context: dict[str, Any] = {"title": title, "explanation": explanation, "status": status}
    return templates.TemplateResponse(
        request, "denied.html", context, status_code=status, headers=HTML_HEADERS
    )


@router.get("/review/{decision_id}", response_class=HTMLResponse, include_in_schema=False)
async def review_page(
    request: Request,
    decision_id: str,
    settings: SettingsDep,
    audit: AuditDep,
    token: str | None = None,
) -> HTMLResponse:
    """Every criterion of a recorded decision with its evidence, for a holder of the card's link."""
    try:
        verify_review_token(token, decision_id, settings.review_signing_key.get_secret_value())
    except ReviewLinkExpiredError:
        return _refusal(
            request,
            403,
            "Link expired",
            "This review link has expired. Open the patient's chart again in the EHR "
            "to get a card with a fresh link.",
        )
    except ReviewLinkError as exc:
        return _refusal(
            request,
            403,
            "Access denied",
            f"{str(exc).capitalize()}. Review pages open only from the link on a TIL trial card.",
        )
    decision = await run_in_threadpool(audit.get_decision, decision_id)
    if decision is None:
        return _refusal(request, 404, "Decision not found", "No recorded decision matches this link.")
    fingerprint = stored_decision(decision["content"]).criteria_fingerprint
    snapshot = await run_in_threadpool(audit.get_criteria_version, fingerprint) if fingerprint else None
    page = build_review_page(decision, snapshot)
    return templates.TemplateResponse(
        request, "review.html", {"page": page, "title": "Why these trial suggestions"}, headers=HTML_HEADERS
    )
