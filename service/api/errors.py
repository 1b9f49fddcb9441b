"""Domain errors become HTTP responses here, once, each with an OperationOutcome body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.outcomes import operation_outcome
from service.audit.errors import AuditUnavailableError, UnknownCardError
from service.errors import FhirServerError, PreconditionFailedError, RequestError
from service.observability import AUDIT_WRITE_FAILURES

__all__ = ["register_exception_handlers"]

logger = logging.getLogger("til_cds.api")
_FHIR_JSON = "application/fhir+json"


def _outcome(
    status: int,
    diagnostics: str,
    code: str,
    expression: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content=operation_outcome(diagnostics, code=code, expression=expression),
        media_type=_FHIR_JSON,
        headers=headers,
    )


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    if request.method == "POST" and not _is_json(request):
        return _outcome(
            415,
            f"the body must be JSON (Content-Type: application/json), not '{request.headers.get('content-type', 'none')}'",
            "not-supported",
        )
    problems = []
    for error in exc.errors()[:10]:
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        path = ".".join(location) or "body"
        if error.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'parse error')}")
        else:
            problems.append(f"{path}: {error.get('msg')}")
    errors = exc.errors()
    first_path = None
    if errors and errors[0].get("type") != "json_invalid":
        first_path = ".".join(str(p) for p in errors[0].get("loc", ()) if p != "body")
    return _outcome(400, "invalid CDS Hooks request: " + "; ".join(problems), "structure", first_path or None)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return _outcome(400, str(exc), "invalid", exc.expression)


async def _precondition(request: Request, exc: PreconditionFailedError | FhirServerError) -> JSONResponse:
    return _outcome(412, str(exc), "incomplete")


async def _audit_unavailable(request: Request, exc: AuditUnavailableError) -> JSONResponse:
    AUDIT_WRITE_FAILURES.inc()
    logger.error("audit store unavailable; call refused so no decision goes unrecorded: %s", exc)
    return _outcome(
        503,
        "the audit store is unavailable; no decision was made, so none is left unrecorded. Retry later.",
        "transient",
        headers={"Retry-After": "5"},
    )


async def _unknown_card(request: Request, exc: UnknownCardError) -> JSONResponse:
    return _outcome(404, str(exc), "not-found", "feedback.card")


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 401:
        return JSONResponse(status_code=401, content=None, headers={"WWW-Authenticate": "Bearer"})
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}; discovery is at /cds-services"
    return _outcome(
        exc.status_code,
        detail,
        {404: "not-found", 413: "too-costly"}.get(exc.status_code, "invalid"),
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error while serving %s %s", request.method, request.url.path)
    return _outcome(500, "internal error; the service log has the details", "exception")


def register_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(PreconditionFailedError, _precondition)  # type: ignore[arg-type]
    app.add_exception_handler(FhirServerError, _precondition)  # type: ignore[arg-type]
    app.add_exception_handler(AuditUnavailableError, _audit_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(UnknownCardError, _unknown_card)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
