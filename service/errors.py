"""The service's exception tree.  Foreign errors (httpx, pydantic, SQLAlchemy) are
translated into these once, at the edge that met them.

    TilCdsError
    ├── ConfigurationError          a criteria, mapping or settings file is invalid (start-up)
    ├── RequestError                the CDS Hooks request itself is wrong (400)
    │   └── PrefetchError           a prefetched resource is malformed, mistyped or for another patient
    ├── PreconditionFailedError     data the service needs can be neither prefetched nor fetched (412)
    ├── ReviewLinkError             a review-page token is missing, forged or for another decision (403)
    │   └── ReviewLinkExpiredError  ... or expired (service/review.py)
    ├── AuditError                  the audit store refused or lost a write (service/audit/errors.py)
    └── FhirServerError             the FHIR server failed us while fetching
        ├── FhirTimeoutError
        ├── FhirUnavailableError    connection refused, DNS, TLS
        ├── FhirResponseError       non-2xx status, HTML, OperationOutcome, not JSON
        └── FhirServerNotAllowedError  the fhirServer is not on the caller's allowlist
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "FhirResponseError",
    "FhirServerError",
    "FhirServerNotAllowedError",
    "FhirTimeoutError",
    "FhirUnavailableError",
    "PrefetchError",
    "PreconditionFailedError",
    "RequestError",
    "TilCdsError",
]


class TilCdsError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigurationError(TilCdsError):
    """A criteria, mapping or settings file is invalid; the message names file and path."""


class RequestError(TilCdsError):
    """The CDS Hooks request is invalid; answered with 400 and an OperationOutcome."""

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message)
        self.expression = expression


class PrefetchError(RequestError):
    """A prefetched resource is malformed, of the wrong type or for another patient."""


class PreconditionFailedError(TilCdsError):
    """Needed data could be neither prefetched nor fetched; answered with 412."""


class FhirServerError(TilCdsError):
    """The FHIR server could not give us what we asked for."""


class FhirTimeoutError(FhirServerError):
    """The FHIR server did not answer within the time budget."""


class FhirUnavailableError(FhirServerError):
    """The FHIR server could not be reached."""


class FhirResponseError(FhirServerError):
    """The FHIR server answered, but not with a usable FHIR JSON response."""


class FhirServerNotAllowedError(FhirServerError):
    """The request names a FHIR server this client may not have us call."""
