"""Content-addressed documents of the audit store: input resources, input manifests, decisions.

A document's address is the SHA-256 of its canonical JSON (UTF-8), so the address covers a
resource's type, id and ``meta.versionId`` along with everything else in it, and the same
resource read by ten chart opens is one row. Bodies are stored zstd-compressed (resources
with a shipped dictionary); the codec is named per row so a later codec or dictionary can be
added without rewriting old rows.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import zstandard

from ._canonical import SECRET_KEYS, scrub_secrets
from .errors import InvalidAuditRecordError

__all__ = [
    "CODEC",
    "RESOURCE_CODEC",
    "Document",
    "content_address",
    "decode_body",
    "document",
    "encode_body",
    "input_documents",
    "inputs_key",
]

CODEC = "zstd"
"""Plain zstd, level 3, for decision contents and manifests (tens of kB each)."""

RESOURCE_DICTIONARY = "resources-bfadd980ebb93d1a.zdict"
"""The dictionary new input resources are compressed with (``scripts/train-audit-dictionary``).

A resource is a few hundred bytes, too little for zstd to find its repeats alone: plain zstd
keeps 63% of a 1,000-Observation chart, this 32 kB dictionary (trained on Synthea bundles,
not on the benchmark's patients) 22%. Dictionaries are never replaced, only added: a row's
codec names the one it needs."""

_DICTIONARY_DIR = Path(__file__).with_name("data")
_DICTIONARY_CODEC = "zstd+dict:"
RESOURCE_CODEC = _DICTIONARY_CODEC + RESOURCE_DICTIONARY.removeprefix("resources-").removesuffix(".zdict")
_LEVEL = 3
_local = threading.local()


@lru_cache
def _dictionary(codec: str) -> zstandard.ZstdCompressionDict:
    """The dictionary a ``zstd+dict:<id>`` codec names, checked against its id."""
    name = codec.removeprefix(_DICTIONARY_CODEC)
    path = _DICTIONARY_DIR / f"resources-{name}.zdict"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidAuditRecordError(
            f"audit content codec {codec!r} needs {path.name}, which is not installed"
        ) from exc
    if hashlib.sha256(data).hexdigest()[:16] != name:
        raise InvalidAuditRecordError(f"{path.name} does not hash to its name; it was altered")
    return zstandard.ZstdCompressionDict(data)


@dataclass(frozen=True)
class Document:
    """A document ready to store: its address and its canonical JSON, not yet compressed."""

    sha256: str
    text: bytes


def content_address(text: bytes) -> str:
    """The hex SHA-256 of a document's canonical JSON bytes."""
    return hashlib.sha256(text).hexdigest()


_STRICT_SORTED = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
"""Sorted keys, and plain JSON types only: a datetime or dataclass is refused, not converted."""


def _canonical_bytes(value: Any, where: str) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes a document's address is taken over.

    orjson, because a chart open has a thousand resources and ``json.dumps`` with options
    builds an encoder per call (about 20 µs each). Input was parsed refusing NaN, so the
    texts match :func:`~service.audit._canonical.canonical_json` for what hooks send.
    """
    try:
        return orjson.dumps(value, option=_STRICT_SORTED)
    except orjson.JSONEncodeError as exc:
        raise InvalidAuditRecordError(f"{where} is not plain JSON: {exc}") from exc


def document(value: Any, where: str = "audit document") -> Document:
    """The canonical JSON of ``value`` and its address."""
    text = _canonical_bytes(value, where)
    return Document(content_address(text), text)


def inputs_key(resources: list[Any]) -> str:
    """One hash of a whole input list, to recognise a repeat chart open before any per-resource work."""
    return content_address(_canonical_bytes(resources, "decision.input_resources"))


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


def _compressor(codec: str) -> zstandard.ZstdCompressor:
    """One compressor per thread and codec: zstandard's must not be shared between threads."""
    compressors: dict[str, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if codec not in compressors:
        dictionary = None if codec == CODEC else _dictionary(codec)
        compressors[codec] = zstandard.ZstdCompressor(level=_LEVEL, dict_data=dictionary)
    return compressors[codec]


def _decompressor(codec: str) -> zstandard.ZstdDecompressor:
    decompressors: dict[str, zstandard.ZstdDecompressor] = _local.__dict__.setdefault("decompressors", {})
    if codec not in decompressors:
        if codec != CODEC and not codec.startswith(_DICTIONARY_CODEC):
            raise InvalidAuditRecordError(f"unknown audit content codec {codec!r}")
        dictionary = None if codec == CODEC else _dictionary(codec)
        decompressors[codec] = zstandard.ZstdDecompressor(dict_data=dictionary)
    return decompressors[codec]


def encode_body(text: bytes, codec: str = CODEC) -> tuple[str, bytes]:
    """The codec name and the stored body of a document's canonical JSON."""
    return codec, _compressor(codec).compress(text)


def decode_body(codec: str, body: bytes) -> bytes:
    """A stored body back to canonical JSON bytes; an unknown codec or corrupt body raises."""
    try:
        return _decompressor(codec).decompress(body)
    except zstandard.ZstdError as exc:
        raise InvalidAuditRecordError(f"stored content does not decompress: {exc}") from exc
