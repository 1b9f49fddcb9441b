"""Domain errors become HTTP responses here, once, each with an OperationOutcome body."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.outcomes import operation_outcome
from service.audit.errors import AuditUnavailableError, DuplicateRecordError, UnknownCardError
from service.errors import FhirServerError, PreconditionFailedError, RequestError
from service.observability import AUDIT_WRITE_FAILURES, INTERNAL_ERRORS, current_request_id

__all__ = ["InternalErrorMiddleware", "register_exception_handlers"]

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


async def _duplicate_record(request: Request, exc: DuplicateRecordError) -> JSONResponse:
    """Record ids are uuid4s the service makes: a clash means the trail already holds this one."""
    return _outcome(409, str(exc), "duplicate")


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


class InternalErrorMiddleware:
    """Any unexpected exception becomes a 500 OperationOutcome naming the request id.

    Starlette's own last-resort handler answers and then re-raises, so the server resets
    the kept-alive connection and an EHR that reuses connections gets "connection reset"
    on its next call.  Here the exception is logged once with its traceback, counted, and
    answered, and it goes no further: the connection stays usable.  Added inside the
    observability middleware, so the request id is known and the 500 is in the metrics.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            request_id = current_request_id() or "unknown"
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            logger.exception("internal error while serving %s %s", scope.get("method"), scope.get("path"))
            INTERNAL_ERRORS.labels(route=route).inc()
            if started:  # nothing can be said any more; the server closes this response
                raise
            response = _outcome(
                500,
                f"internal error (request id {request_id}); the service log has the details under that id",
                "exception",
            )
            await response(scope, receive, send)


def register_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(PreconditionFailedError, _precondition)  # type: ignore[arg-type]
    app.add_exception_handler(FhirServerError, _precondition)  # type: ignore[arg-type]
    app.add_exception_handler(AuditUnavailableError, _audit_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(UnknownCardError, _unknown_card)  # type: ignore[arg-type]
    app.add_exception_handler(DuplicateRecordError, _duplicate_record)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
