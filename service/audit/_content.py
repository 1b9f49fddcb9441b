"""Content-addressed documents of the audit store: decision contents and input lists.

A document's address is the 32-byte SHA-256 of its canonical JSON (UTF-8). A chart open has
two: the list of FHIR resources it read (its address covers every resource's type, id,
``meta.versionId`` and everything else) and the decision's content. Each is stored as one
zstd frame named by a one-byte codec: on its own, with a shipped dictionary, or as a *delta*
whose dictionary is the text of an earlier document of the same patient (its base, always
stored on its own). A chart opened again with nothing new compresses to a few hundred bytes
against the last one; a whole 1,000-Observation chart is one frame of about 14 kB, where the
same resources compressed one by one took eight times that.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import zstandard

from ._canonical import SECRET_KEYS, scrub_secrets
from .errors import InvalidAuditRecordError

__all__ = [
    "LEGACY_CODECS",
    "Base",
    "Codec",
    "Document",
    "address_of",
    "decode_body",
    "content_document",
    "encode_body",
    "holds_secret_keys",
    "input_list",
    "received_inputs",
    "smallest_encoding",
]


class Codec(IntEnum):
    """How a document's body is stored; numbers are never reused, a new codec gets a new one."""

    ZSTD = 1
    """Plain zstd (revision 0002 decision contents and manifests)."""
    RESOURCES = 2
    """zstd with the FHIR resources dictionary: input lists, and revision 0002's single resources."""
    DELTA = 3
    """zstd whose dictionary is the text of the document named by the row's ``base``."""
    DECISIONS = 4
    """zstd with the decision contents dictionary."""


_DICTIONARY_FILES = {
    Codec.RESOURCES: "resources-bfadd980ebb93d1a.zdict",
    Codec.DECISIONS: "decisions-253817c715a0560d.zdict",
}
"""The shipped dictionaries (``scripts/train-audit-dictionary``), trained on Synthea bundles and
the synthetic cohort's decisions, not on the benchmark's patients. A dictionary is never
replaced: a new one is a new file and a new codec."""

LEGACY_CODECS = {"zstd": Codec.ZSTD, "zstd+dict:bfadd980ebb93d1a": Codec.RESOURCES}
"""Revision 0002 named codecs by text; the migration to 0003 maps them to these numbers."""

_DICTIONARY_DIR = Path(__file__).with_name("data")
_LEVEL = 3
_DELTA_SHARE = 4
"""A delta is kept when it is at most a quarter of its base's stored size; a larger one means
the chart has moved on, and the document, stored alone, becomes its patient's next base."""
_local = threading.local()


@lru_cache
def _dictionary(codec: Codec) -> zstandard.ZstdCompressionDict:
    """A shipped dictionary, checked against the hash its file is named by."""
    path = _DICTIONARY_DIR / _DICTIONARY_FILES[codec]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidAuditRecordError(
            f"audit codec {codec.name} needs {path.name}, which is not installed"
        ) from exc
    if not path.stem.endswith("-" + hashlib.sha256(data).hexdigest()[:16]):
        raise InvalidAuditRecordError(f"{path.name} does not hash to its name; it was altered")
    return zstandard.ZstdCompressionDict(data)


@dataclass(frozen=True)
class Document:
    """A document ready to store: its address and its canonical JSON, not yet compressed."""

    address: bytes
    text: bytes


@dataclass(frozen=True)
class Base:
    """A stored document that later ones of its patient may be deltas of, and its stored size."""

    address: bytes
    text: bytes
    size: int


def address_of(text: bytes) -> bytes:
    """The 32-byte SHA-256 of a document's canonical JSON bytes."""
    return hashlib.sha256(text).digest()


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
    builds an encoder per call (about 20 µs each). Input was parsed refusing NaN.
    """
    try:
        return orjson.dumps(value, option=_STRICT_SORTED)
    except orjson.JSONEncodeError as exc:
        raise InvalidAuditRecordError(f"{where} is not plain JSON: {exc}") from exc


_KELVIN_SIGN = "\u212a".encode()
_SECRET_KEY_PATTERN = re.compile(
    b'"(?:'
    + b"|".join(
        re.escape(key.encode("ascii")).replace(b"k", b"(?:k|" + _KELVIN_SIGN + b")")
        for key in sorted(SECRET_KEYS)
    )
    + b')":'
)
"""Any secret key as canonical JSON spells it (``"name":``), in lower case, with the Kelvin
sign allowed wherever the key has a "k"."""


def holds_secret_keys(text: bytes) -> bool:
    """Whether canonical JSON bytes have any secret key; a no skips the costly deep scrub.

    Canonical JSON has no whitespace, so a key appears as ``"name":``; only false positives
    are possible (they fall back to :func:`scrub_secrets`), never misses.  The scrubber
    compares keys by ``str.lower()``, which folds exactly one character outside ASCII into
    ASCII, the Kelvin sign (to "k"); the pattern takes it for a "k", so that ``bytes.lower()``,
    quicker on a decision's 100 kB than decoding it, matches the same keys. One pattern
    searched once costs about half of looking for each key in turn.
    """
    return _SECRET_KEY_PATTERN.search(text.lower()) is not None


def content_document(record: dict[str, Any], where: str) -> tuple[dict[str, Any], Document]:
    """A decision's content without secrets, and its document (canonical JSON by orjson).

    The address is taken over the stored bytes, and ``audit verify`` hashes what is stored,
    so records written with the standard library's encoder before still verify.
    """
    text = _canonical_bytes(record, where)
    if holds_secret_keys(text):
        record = scrub_secrets(record)
        text = _canonical_bytes(record, where)
    return record, Document(address_of(text), text)


def received_inputs(resources: list[Any], where: str) -> Document:
    """The input resources as received, as canonical JSON, and its address: what the store
    recognises a repeat chart open by, and what a caller that needs the address first (the
    hook pipeline, to find the chart's remembered facts) hands to ``append_decision``."""
    text = _canonical_bytes(resources, where)
    return Document(address_of(text), text)


def input_list(received: Document, resources: list[Any], where: str) -> Document:
    """The input list to store: ``received`` (:func:`received_inputs`) checked, with secrets
    scrubbed; ``received`` itself, its address already taken, when it holds none.

    Secrets are looked for once over the whole text; only when a secret key may occur is the
    list scrubbed and serialised again.
    """
    for index, resource in enumerate(resources):
        if not isinstance(resource, Mapping):
            raise InvalidAuditRecordError(f"{where}[{index}] must be a FHIR resource (an object)")
    if not holds_secret_keys(received.text):
        return received
    text = _canonical_bytes(scrub_secrets(resources), where)
    return Document(address_of(text), text)


def _compressor(codec: Codec) -> zstandard.ZstdCompressor:
    """One compressor per thread and codec: zstandard's must not be shared between threads."""
    compressors: dict[Codec, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if codec not in compressors:
        dictionary = None if codec == Codec.ZSTD else _dictionary(codec)
        compressors[codec] = zstandard.ZstdCompressor(level=_LEVEL, dict_data=dictionary)
    return compressors[codec]


def _decompressor(codec: Codec) -> zstandard.ZstdDecompressor:
    decompressors: dict[Codec, zstandard.ZstdDecompressor] = _local.__dict__.setdefault("decompressors", {})
    if codec not in decompressors:
        dictionary = None if codec == Codec.ZSTD else _dictionary(codec)
        decompressors[codec] = zstandard.ZstdDecompressor(dict_data=dictionary)
    return decompressors[codec]


def _base_dictionary(base: bytes) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def encode_body(text: bytes, codec: Codec, base: bytes | None = None) -> bytes:
    """The stored body of a document's canonical JSON; a delta needs its base's text."""
    if codec != Codec.DELTA:
        return _compressor(codec).compress(text)
    if base is None:
        raise ValueError("a delta needs the text of its base")
    return zstandard.ZstdCompressor(level=_LEVEL, dict_data=_base_dictionary(base)).compress(text)


def decode_body(codec: int, body: bytes, base: bytes | None = None) -> bytes:
    """A stored body back to canonical JSON bytes; an unknown codec or a corrupt body raises."""
    try:
        known = Codec(codec)
    except ValueError as exc:
        raise InvalidAuditRecordError(f"unknown audit codec {codec}") from exc
    try:
        if known != Codec.DELTA:
            return _decompressor(known).decompress(body)
        if base is None:
            raise InvalidAuditRecordError("a delta needs the text of its base")
        return zstandard.ZstdDecompressor(dict_data=_base_dictionary(base)).decompress(body)
    except zstandard.ZstdError as exc:
        raise InvalidAuditRecordError(f"stored content does not decompress: {exc}") from exc


def smallest_encoding(text: bytes, codec: Codec, base: Base | None) -> tuple[Codec, bytes | None, bytes]:
    """``(codec, base address or None, body)``: a delta against ``base`` while small, else ``codec``."""
    if base is not None:
        delta = encode_body(text, Codec.DELTA, base.text)
        if len(delta) * _DELTA_SHARE <= base.size:
            return Codec.DELTA, base.address, delta
    return codec, None, encode_body(text, codec)
