"""Content-addressed documents of the audit store: input resources, input manifests, decisions.

A document's address is the SHA-256 of its canonical JSON (UTF-8), so the address covers a
resource's type, id and ``meta.versionId`` along with everything else in it, and the same
resource read by ten chart opens is one row. Bodies are stored zstd-compressed; the codec is
named per row so a later codec can be added without rewriting old rows.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zstandard

from ._canonical import canonical_json, may_hold_secrets, scrub_secrets
from .errors import InvalidAuditRecordError

__all__ = [
    "CODEC",
    "Document",
    "content_address",
    "decode_body",
    "document",
    "encode_body",
    "input_document",
]

CODEC = "zstd"
"""zstd level 3: at 1,000 Observations it packs a resource to ~63% in ~15 µs; levels 9 and 19
save 1-4% more for 3-12 times the time (measured in the issue-17 notes of the README)."""

_LEVEL = 3
_local = threading.local()


@dataclass(frozen=True)
class Document:
    """A document ready to store: its address and its canonical JSON, not yet compressed."""

    sha256: str
    text: bytes


def content_address(text: bytes) -> str:
    """The hex SHA-256 of a document's canonical JSON bytes."""
    return hashlib.sha256(text).hexdigest()


def document(value: Any) -> Document:
    """The canonical JSON of ``value`` and its address."""
    text = canonical_json(value).encode("utf-8")
    return Document(content_address(text), text)


def input_document(resource: Any, where: str) -> tuple[Document, dict[str, Any]]:
    """A FHIR input resource (secrets scrubbed) as a document, and the reference to it.

    The reference (``type``, ``id``, ``versionId``, ``sha256``) is what a decision keeps.
    """
    if not isinstance(resource, Mapping):
        raise InvalidAuditRecordError(f"{where} must be a FHIR resource (an object)")
    text = canonical_json(resource)
    if may_hold_secrets(text):
        resource = scrub_secrets(resource)
        text = canonical_json(resource)
    encoded = text.encode("utf-8")
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, Mapping) else None
    sha256 = content_address(encoded)
    reference = {
        "type": resource.get("resourceType"),
        "id": resource.get("id"),
        "versionId": version,
        "sha256": sha256,
    }
    return Document(sha256, encoded), reference


def _compressor() -> zstandard.ZstdCompressor:
    """One compressor per thread: zstandard's compressors must not be shared between threads."""
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=_LEVEL)
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def encode_body(text: bytes) -> tuple[str, bytes]:
    """The codec name and the stored body of a document's canonical JSON."""
    return CODEC, _compressor().compress(text)


def decode_body(codec: str, body: bytes) -> bytes:
    """A stored body back to canonical JSON bytes; an unknown codec or corrupt body raises."""
    if codec != CODEC:
        raise InvalidAuditRecordError(f"unknown audit content codec {codec!r}")
    try:
        return _decompressor().decompress(body)
    except zstandard.ZstdError as exc:
        raise InvalidAuditRecordError(f"stored content does not decompress: {exc}") from exc
