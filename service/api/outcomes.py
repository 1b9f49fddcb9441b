"""FHIR OperationOutcome bodies for every error the API returns."""

from __future__ import annotations

from typing import Any

__all__ = ["operation_outcome"]


def operation_outcome(
    diagnostics: str, *, code: str = "invalid", severity: str = "error", expression: str | None = None
) -> dict[str, Any]:
    """A minimal R4 OperationOutcome with one issue."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
