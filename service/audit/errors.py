"""The audit trail's exceptions, a branch of the service tree in ``service.errors``.

TilCdsError
└── AuditError
    ├── AuditUnavailableError      the store cannot be reached or written (→ 503)
    ├── AuditConfigurationError    settings make an operation impossible (e.g. no pseudonym key)
    ├── InvalidAuditRecordError    a record or feedback item lacks a field or has a wrong type
    ├── DuplicateRecordError       a record id is already in the trail (→ 409)
    ├── UnknownCardError           feedback names a card no recorded decision showed
    ├── UnknownDecisionError       replay asked for a decision that is not in the trail
    ├── MissingAuditContentError   a record's content or input resource is gone or altered
    └── MissingCriteriaVersionError  replay needs a criteria snapshot that was never saved
"""

from __future__ import annotations

from service.errors import ConfigurationError, TilCdsError

__all__ = [
    "AuditConfigurationError",
    "AuditError",
    "AuditUnavailableError",
    "DuplicateRecordError",
    "InvalidAuditRecordError",
    "MissingAuditContentError",
    "MissingCriteriaVersionError",
    "UnknownCardError",
    "UnknownDecisionError",
]


class AuditError(TilCdsError):
    """Base of every audit trail error."""


class AuditUnavailableError(AuditError):
    """The audit database refused or failed; the caller must not answer as if it was recorded."""


class AuditConfigurationError(AuditError, ConfigurationError):
    """The settings do not allow the requested audit operation."""


class InvalidAuditRecordError(AuditError, ValueError):
    """A record handed to the store is malformed; this is a bug in the caller, not bad input."""


class DuplicateRecordError(AuditError):
    """A record (decision, feedback or pre-screen run) with this id was already appended."""


class UnknownCardError(AuditError):
    """Feedback refers to a card uuid that no recorded decision contains."""


class UnknownDecisionError(AuditError):
    """No recorded decision has this id."""


class MissingAuditContentError(AuditError):
    """A stored document a record refers to is missing or does not hash to its address."""


class MissingCriteriaVersionError(AuditError):
    """The decision's criteria fingerprint has no saved snapshot, so it cannot be replayed."""
