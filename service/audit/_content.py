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

import orjson
import zstandard

from ._canonical import SECRET_KEYS, scrub_secrets
from .errors import InvalidAuditRecordError

__all__ = [
    "CODEC",
    "Document",
    "content_address",
    "decode_body",
    "document",
    "encode_body",
    "input_documents",
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


def _canonical_bytes(value: Any, where: str) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes a document's address is taken over.

    orjson, because a chart open has a thousand resources and ``json.dumps`` with options
    builds an encoder per call (about 20 µs each). Input was parsed refusing NaN, so the
    texts match :func:`~service.audit._canonical.canonical_json` for what hooks send.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise InvalidAuditRecordError(f"{where} is not plain JSON: {exc}") from exc


def document(value: Any, where: str = "audit document") -> Document:
    """The canonical JSON of ``value`` and its address."""
    text = _canonical_bytes(value, where)
    return Document(content_address(text), text)


def _reference(resource: Mapping[str, Any], sha256: str) -> dict[str, Any]:
    meta = resource.get("meta")
    return {
        "type": resource.get("resourceType"),
        "id": resource.get("id"),
        "versionId": meta.get("versionId") if isinstance(meta, Mapping) else None,
        "sha256": sha256,
    }


def input_documents(resources: list[Any], where: str) -> tuple[list[Document], list[dict[str, Any]]]:
    """FHIR input resources (secrets scrubbed) as documents, and the references a decision keeps.

    The references (``type``, ``id``, ``versionId``, ``sha256``) keep input order; the
    documents are one per address. Secrets are looked for once over all texts together, and
    only a resource that may hold one is scrubbed and serialised again.
    """
    texts = []
    for index, resource in enumerate(resources):
        if not isinstance(resource, Mapping):
            raise InvalidAuditRecordError(f"{where}[{index}] must be a FHIR resource (an object)")
        texts.append(_canonical_bytes(resource, f"{where}[{index}]"))
    if _may_hold_secrets(b"".join(texts)):
        for index, text in enumerate(texts):
            if _may_hold_secrets(text):
                resources[index] = scrub_secrets(resources[index])
                texts[index] = _canonical_bytes(resources[index], f"{where}[{index}]")
    documents: dict[str, Document] = {}
    references = []
    for resource, text in zip(resources, texts, strict=True):
        sha256 = content_address(text)
        documents.setdefault(sha256, Document(sha256, text))
        references.append(_reference(resource, sha256))
    return list(documents.values()), references


_SECRET_KEY_MARKS = tuple(sorted(f'"{key}":'.encode("ascii") for key in SECRET_KEYS))


def _may_hold_secrets(text: bytes) -> bool:
    """:func:`~service.audit._canonical.may_hold_secrets` on bytes, run once over all resources."""
    lowered = text.lower()
    return any(mark in lowered for mark in _SECRET_KEY_MARKS)


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
