"""OpenAPI descriptions of the error responses (all OperationOutcome bodies)."""

from __future__ import annotations

from typing import Any

__all__ = ["FEEDBACK_ERRORS", "HOOK_ERRORS"]

_OUTCOME = {"application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _OUTCOME}


HOOK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Not a valid CDS Hooks request, or a malformed, mistyped or foreign prefetch resource"),
    401: {"description": "Missing or invalid client JWT (no detail is given)"},
    404: _error("Unknown service id"),
    412: _error("Required data could be neither prefetched nor fetched from the FHIR server"),
    413: _error("Request body too large"),
    415: _error("Body is not JSON"),
    503: _error("The audit store is unavailable; no decision was made"),
}
FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Not valid CDS Hooks feedback"),
    401: {"description": "Missing or invalid client JWT (no detail is given)"},
    404: _error("Unknown service id or card"),
    413: _error("Request body too large"),
    503: _error("The audit store is unavailable"),
}
