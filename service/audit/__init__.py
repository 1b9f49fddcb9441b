"""The audit trail: one append-only, hash-chained record per hook call and per feedback item."""

from __future__ import annotations

from ._content import Document, received_inputs
from ._records import stored_decision
from .errors import (
    AuditConfigurationError,
    AuditError,
    AuditUnavailableError,
    DuplicateRecordError,
    InvalidAuditRecordError,
    MissingAuditContentError,
    MissingCriteriaVersionError,
    UnknownCardError,
    UnknownDecisionError,
)
from .store import AuditStore, ExportFilters, VerifyReport

__all__ = [
    "AuditConfigurationError",
    "AuditError",
    "AuditStore",
    "AuditUnavailableError",
    "Document",
    "DuplicateRecordError",
    "ExportFilters",
    "InvalidAuditRecordError",
    "MissingAuditContentError",
    "MissingCriteriaVersionError",
    "UnknownCardError",
    "UnknownDecisionError",
    "VerifyReport",
    "received_inputs",
    "stored_decision",
]
