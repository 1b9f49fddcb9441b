"""Canonical JSON, record hashing, secret scrubbing and UTC time helpers for the audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidAuditRecordError

__all__ = [
    "GENESIS_HASH",
    "SECRET_KEYS",
    "as_utc",
    "canonical_json",
    "chain_hash",
    "parse_timestamp",
    "scrub_secrets",
    "utc_iso",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first record: a value no sha256 hex digest of real content takes."""

SECRET_KEYS = frozenset(
    {"access_token", "fhirauthorization", "authorization", "jwt", "id_token", "refresh_token"}
)
"""Keys dropped anywhere in a record, compared case-insensitively."""


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: one text per value, so its hash is stable."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidAuditRecordError(f"audit record is not plain JSON: {exc}") from exc


def chain_hash(fields: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 over the canonical JSON of a record's fields followed by the previous hash."""
    digest = hashlib.sha256()
    digest.update(canonical_json(dict(fields)).encode("utf-8"))
    digest.update(prev_hash.encode("ascii"))
    return digest.hexdigest()


def scrub_secrets(value: Any) -> Any:
    """A deep copy of ``value`` without any key that could hold an access token or a JWT."""
    if isinstance(value, Mapping):
        return {
            key: scrub_secrets(item)
            for key, item in value.items()
            if not (isinstance(key, str) and key.lower() in SECRET_KEYS)
        }
    if isinstance(value, list | tuple):
        return [scrub_secrets(item) for item in value]
    return value


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC, which is what the store writes."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_iso(moment: datetime) -> str:
    """Fixed-width ISO 8601 in UTC with microseconds, the form hashed and exported."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str, field: str) -> datetime:
    """Parse an ISO 8601 timestamp (``Z`` allowed, date-only means midnight UTC) into UTC."""
    try:
        return as_utc(datetime.fromisoformat(text))
    except (TypeError, ValueError) as exc:
        raise InvalidAuditRecordError(f"{field} is not an ISO 8601 timestamp: {text!r}") from exc
