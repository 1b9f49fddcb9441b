"""``/sandbox``: a console for integration engineers, only with ``dev`` or ``sandbox_console``.

It plays the EHR: picks a patient (the synthetic ones of ``deploy/sandbox/patients/``, or ``Patient?_count=50`` from a
FHIR server), fills our prefetch templates from that server when asked, and calls the
hook through this app's own HTTP route, so what it shows is exactly what an EHR gets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict

from service.api.deps import RuntimeDep, SettingsDep
from service.api.routes.review import HTML_HEADERS, templates
from service.gather.prefetch import render_template
from service.pipeline import SERVICE_ID, Runtime
from service.sandbox.patient_files import read_patient_files
from service.sandbox.synthetic import PARTIAL_PREFETCH_KEYS, find_patient, hook_request
from service.settings import Settings

__all__ = ["router"]

DEFAULT_FHIR_SERVER = "http://127.0.0.1:8080/fhir"
# CommonMark with raw HTML off: card text is escaped, and unsafe link schemes are refused.
_markdown = MarkdownIt("commonmark", {"html": False})


def _render_markdown(text: str) -> Markup:
    return Markup(_markdown.render(text))


templates.env.filters["markdown"] = _render_markdown


def _console_enabled(settings: SettingsDep) -> None:
    if not (settings.dev or settings.sandbox_console):
        raise HTTPException(404, "Not Found")


router = APIRouter(prefix="/sandbox", tags=["sandbox"], dependencies=[Depends(_console_enabled)])


class FireRequest(BaseModel):
    """What the console form sends: a patient, where it lives, and how much to prefetch."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["builtin", "fhir"]
    patient_id: str
    fhir_server: str | None = None
    prefetch: Literal["full", "partial", "none"] = "full"


def _checked_server(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HTTPException(400, f"not an http(s) FHIR base URL: {url!r}")
    return url.rstrip("/")


async def _get_json(runtime: Runtime, settings: Settings, url: str) -> dict[str, Any]:
    response = await runtime.http.get(
        url, headers={"Accept": "application/fhir+json"}, timeout=settings.fhir_timeout_seconds
    )
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("the answer is not a FHIR resource")
    return body


def _patient_label(resource: dict[str, Any]) -> str:
    names = resource.get("name") or [{}]
    name = names[0] if isinstance(names[0], dict) else {}
    text = name.get("text") or " ".join([*(name.get("given") or []), name.get("family") or ""]).strip()
    details = ", ".join(str(x) for x in (resource.get("gender"), resource.get("birthDate")) if x)
    return f"{text or resource.get('id')}" + (f" ({details})" if details else "")


async def _fill_prefetch(
    runtime: Runtime, settings: Settings, server: str, patient_id: str, keys: list[str], notes: list[str]
) -> dict[str, Any]:
    """Act as the EHR: run each prefetch template against the FHIR server; a failed key stays absent."""

    async def one(key: str) -> tuple[str, dict[str, Any] | None]:
        query = render_template(
            runtime.templates[key], {"patientId": patient_id, "userId": "Practitioner/sandbox-console"}
        )
        try:
            return key, await _get_json(runtime, settings, urljoin(server + "/", query))
        except (httpx.HTTPError, ValueError) as exc:
            notes.append(f"prefetch '{key}' not filled ({type(exc).__name__}); the service may fetch it")
            return key, None

    filled = await asyncio.gather(*(one(key) for key in keys))
    return {key: value for key, value in filled if value is not None}


async def _hook_body(
    request: FireRequest, runtime: Runtime, settings: Settings, notes: list[str]
) -> dict[str, Any]:
    server = _checked_server(request.fhir_server)
    if request.source == "builtin":
        try:
            patient = find_patient(request.patient_id, datetime.now(UTC).date())
        except LookupError:
            raise HTTPException(404, f"no built-in synthetic patient {request.patient_id!r}") from None
        return hook_request(
            patient,
            runtime.mappings,
            prefetch=request.prefetch,
            fhir_server=server,
            hook_instance=str(uuid.uuid4()),
        )
    if server is None:
        raise HTTPException(400, "a FHIR base URL is needed for patients from a FHIR server")
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": server,
        "context": {"userId": "Practitioner/sandbox-console", "patientId": request.patient_id},
    }
    if request.prefetch != "none":
        keys = list(runtime.templates) if request.prefetch == "full" else list(PARTIAL_PREFETCH_KEYS)
        body["prefetch"] = await _fill_prefetch(runtime, settings, server, request.patient_id, keys, notes)
    return body


@router.get("", response_class=HTMLResponse, include_in_schema=False)
async def console_page(request: Request) -> HTMLResponse:
    """The console form."""
    context = {
        "title": "CDS Hooks sandbox console",
        "patients": read_patient_files(),
        "default_fhir": DEFAULT_FHIR_SERVER,
    }
    return templates.TemplateResponse(request, "console.html", context, headers=HTML_HEADERS)


@router.get("/patients", include_in_schema=False)
async def console_patients(runtime: RuntimeDep, settings: SettingsDep, fhir_server: str) -> JSONResponse:
    """Up to 50 patients of a FHIR server, for the picker."""
    server = _checked_server(fhir_server) or ""
    try:
        bundle = await _get_json(runtime, settings, f"{server}/Patient?_count=50")
    except (httpx.HTTPError, ValueError) as exc:
        return JSONResponse({"error": f"{server} did not list patients ({type(exc).__name__}: {exc})"}, 502)
    patients = [
        {"id": str(entry["resource"].get("id")), "label": _patient_label(entry["resource"])}
        for entry in bundle.get("entry") or []
        if isinstance(entry.get("resource"), dict) and entry["resource"].get("resourceType") == "Patient"
    ]
    return JSONResponse({"patients": patients})


@router.post("/fire", include_in_schema=False)
async def console_fire(
    request: Request, fire: FireRequest, runtime: RuntimeDep, settings: SettingsDep
) -> JSONResponse:
    """Build the hook request, call our own hook route over HTTP (ASGI), render the cards."""
    notes: list[str] = []
    body = await _hook_body(fire, runtime, settings, notes)
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(transport=transport, base_url=settings.public_base_url) as client:
        started = time.perf_counter()
        response = await client.post(f"/cds-services/{SERVICE_ID}", json=body)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    try:
        answer: Any = response.json()
    except ValueError:
        answer = {"non_json_body": response.text[:2000]}
    cards = answer.get("cards", []) if isinstance(answer, dict) and response.status_code == 200 else []
    cards_html = templates.get_template("_cards.html").render(cards=cards, status=response.status_code)
    return JSONResponse(
        {
            "request": body,
            "status": response.status_code,
            "response": answer,
            "elapsed_ms": elapsed_ms,
            "cards_html": cards_html,
            "notes": notes,
        }
    )
