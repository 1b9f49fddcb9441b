"""``/audit``: export the audit trail and its monthly counts, behind their own bearer token.

The token is separate from the EHR's JWTs because the readers are compliance staff and
research tools, not CDS clients. Unset, the endpoints say export is disabled.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from service.api.deps import SettingsDep
from service.audit import AuditError, AuditStore, AuditUnavailableError, ExportFilters
from service.audit.export import EXPORT_FORMATS, exports_inputs, pseudonym_key_from_settings

__all__ = ["OverrideReasonCount", "TrialMonthCounts", "router"]

router = APIRouter(prefix="/audit", tags=["audit"])

_bearer = HTTPBearer(
    scheme_name="auditExportToken",
    description="The audit_export_token from the service settings",
    auto_error=False,
)
_OUTCOMES = ["suggested", "not_suggested", "accepted", "overridden"]


class OverrideReasonCount(BaseModel):
    """How often clinicians gave one override reason."""

    system: str | None
    code: str | None
    display: str | None
    count: int


class TrialMonthCounts(BaseModel):
    """Cards shown for a trial in a month, and the feedback they received."""

    month: str
    trial_id: str | None
    cards_shown: int
    accepted: int
    overridden: int
    override_reasons: list[OverrideReasonCount]


def require_export_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Allow the request only with ``Authorization: Bearer <audit_export_token>``."""
    if settings.audit_export_token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "audit export is disabled: no audit_export_token is configured on this server",
        )
    expected = settings.audit_export_token.get_secret_value().encode("utf-8")
    given = b"" if credentials is None else credentials.credentials.encode("utf-8")
    if not secrets.compare_digest(given, expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def _store(request: Request) -> AuditStore:
    store: AuditStore = request.app.state.audit_store
    return store


def _unavailable(exc: AuditError) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"audit store unavailable: {exc}")


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong audit export token"},
    403: {"description": "Audit export is disabled on this server"},
    503: {"description": "The audit database is unavailable"},
}

_EXPORT_CONTENT = {media_type: {"schema": {"type": "string"}} for media_type, _ in EXPORT_FORMATS.values()}


@router.get(
    "/export",
    operation_id="audit_export",
    summary="Stream audit records as NDJSON, CSV or a FHIR Bundle of AuditEvents",
    dependencies=[Depends(require_export_token)],
    response_class=StreamingResponse,
    responses={
        200: {"description": "The matching records, streamed", "content": _EXPORT_CONTENT},
        400: {"description": "A query parameter is invalid"},
        **_AUTH_RESPONSES,
    },
)
async def export_audit_records(
    request: Request,
    settings: SettingsDep,
    export_format: Annotated[
        str,
        Query(
            alias="format",
            description="ndjson, csv or fhir",
            json_schema_extra={"enum": list(EXPORT_FORMATS)},
        ),
    ] = "ndjson",
    since: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
    patient: Annotated[str | None, Query(description="Patient reference")] = None,
    trial: Annotated[str | None, Query(description="Trial id")] = None,
    outcome: Annotated[
        str | None, Query(description="Record outcome", json_schema_extra={"enum": _OUTCOMES})
    ] = None,
    kind: Annotated[
        str | None,
        Query(description="decision or feedback", json_schema_extra={"enum": ["decision", "feedback"]}),
    ] = None,
) -> StreamingResponse:
    """Parse the filters, read the first chunk (so a dead store is a 503), then stream."""
    if export_format not in EXPORT_FORMATS:
        raise HTTPException(400, f"unknown format {export_format!r}; use ndjson, csv or fhir")
    try:
        filters = ExportFilters.from_text(
            since=since,
            until=until,
            patient_ref=patient,
            trial_id=trial,
            outcome=outcome,
            kind=kind,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    try:
        key = pseudonym_key_from_settings(settings)
    except AuditError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    media_type, exporter = EXPORT_FORMATS[export_format]
    records = _store(request).iter_records(filters, with_inputs=exports_inputs(export_format, key))
    chunks = exporter(records, pseudonym_key=key)
    try:
        first = await run_in_threadpool(next, chunks, "")
    except AuditUnavailableError as exc:
        raise _unavailable(exc) from exc
    body: Iterator[str] = itertools.chain([first], chunks)
    extension = {"ndjson": "ndjson", "csv": "csv", "fhir": "json"}[export_format]
    headers = {"Content-Disposition": f'attachment; filename="audit-export.{extension}"'}
    return StreamingResponse(body, media_type=media_type, headers=headers)


@router.get(
    "/counts",
    operation_id="audit_counts",
    summary="Cards shown, accepted and overridden per trial and month",
    dependencies=[Depends(require_export_token)],
    responses={400: {"description": "A query parameter is invalid"}, **_AUTH_RESPONSES},
)
def audit_counts(
    request: Request,
    since: Annotated[str | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO 8601, exclusive")] = None,
) -> list[TrialMonthCounts]:
    """Monthly per-trial tallies from the audit trail."""
    try:
        filters = ExportFilters.from_text(since=since, until=until)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc
    try:
        rows = _store(request).counts(filters.since, filters.until)
    except AuditUnavailableError as exc:
        raise _unavailable(exc) from exc
    return [TrialMonthCounts.model_validate(row) for row in rows]
