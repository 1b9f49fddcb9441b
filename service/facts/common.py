"""What every reader shares: FHIR dates, codings, the source reference and the decoding edge.

A resource is decoded once, by msgspec, into a struct holding only the fields its reader
reads (``decode``).  A field of the wrong type is left out, as today's readers always
skipped what they could not use, and named in one data problem per resource (its path,
in plain words); past that point a reader reads typed values, so a bug in a reader is an
exception, not a "data problem".
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any, TypeVar

import msgspec

from service.terminology import LOINC

__all__ = [
    "LOINC",
    "CodeableConcept",
    "Coding",
    "Period",
    "Quantity",
    "Reference",
    "Shape",
    "SourceRef",
    "codings_of",
    "concept_text",
    "relative_reference",
    "decode",
    "last_day_meant",
    "parse_fhir_datetime",
    "source_ref",
    "text_of",
]

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
S = TypeVar("S", bound="Shape")


class Shape(msgspec.Struct, gc=False):
    """The base of every decoded shape: untracked by the garbage collector (a shape holds only
    strings, numbers and other shapes, never a cycle), which makes decoding thousands cheaper."""


class SourceRef(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """Which resource (and version) a fact came from (a frozen msgspec struct: one per
    resource per call, and a dataclass's frozen ``__init__`` cost four times as much)."""

    resource_type: str
    id: str
    version_id: str | None = None

    def __str__(self) -> str:
        base = f"{self.resource_type}/{self.id}"
        return f"{base}/_history/{self.version_id}" if self.version_id else base


class Coding(Shape):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(Shape):
    coding: list[Coding] | None = None
    text: str | None = None


class Quantity(Shape):
    value: int | float | None = None  # kept as written: "<5" reads as it was sent
    comparator: str | None = None
    unit: str | None = None
    code: str | None = None


class Period(Shape):
    start: str | None = None
    end: str | None = None


class Reference(Shape):
    reference: str | None = None
    display: str | None = None


def parse_fhir_datetime(value: Any) -> datetime | None:
    """Parse a FHIR date/dateTime/instant; partial dates take their first day; naive is UTC;
    anything else (text, an impossible day) is no date."""
    if not isinstance(value, str) or not value or len(value) > _LONGEST_FHIR_DATETIME:
        return None
    return _parsed_datetime(value)


_LONGEST_FHIR_DATETIME = 40
"""Longer than any FHIR instant ("2026-11-29T09:00:00.123456789+14:00" is 35): such text is no
date, and is not kept in the cache below, which would otherwise hold it after the call."""


@lru_cache(maxsize=4096)
def _parsed_datetime(value: str) -> datetime | None:
    """Cached, because a chart repeats its timestamps (a panel's results share one, a chart
    opened again has the same) and a lookup costs a third of a parse; datetimes are immutable."""
    match = _DATE_RE.match(value) if len(value) <= 11 else None  # longer text has a time part
    if match:
        year, month, day = match.groups()
        try:
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        except ValueError:  # "2026-13-45", "0000-00-00": no such day
            return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def last_day_meant(value: str | None, first_day: date | None) -> date | None:
    """The last day a partial FHIR date means: "1935" -> 1935-12-31, "1935-11" -> 1935-11-30."""
    if first_day is None or value is None:
        return first_day
    if len(value) == 4:
        return date(first_day.year, 12, 31)
    if len(value) == 7:
        return date(first_day.year, first_day.month, calendar.monthrange(first_day.year, first_day.month)[1])
    return first_day


def source_ref(resource: dict[str, Any]) -> SourceRef:
    """The resource's type, id and version, from the raw resource (so that even one that
    cannot be decoded is named)."""
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    # A versionId that is not a FHIR id (a number, an object) cannot name a version: dropped.
    version_id = version if isinstance(version, str) and version else None
    return SourceRef(str(resource.get("resourceType")), str(resource.get("id")), version_id)


def codings_of(concept: CodeableConcept | None) -> list[tuple[str, str]]:
    """(system, code) pairs of a concept's codings that have a code."""
    if concept is None or not concept.coding:
        return []
    return [(c.system or "", c.code) for c in concept.coding if c.code is not None]


def text_of(concept: CodeableConcept | None) -> str:
    """The concept's text and codings' displays, de-duplicated, joined with ' | '."""
    if concept is None:
        return ""
    if not concept.coding:
        return concept.text or ""
    if not concept.text and len(concept.coding) == 1:  # most concepts: one coding, no text
        return concept.coding[0].display or ""
    unique: dict[str, None] = {}
    if concept.text:
        unique[concept.text] = None
    for coding in concept.coding or ():
        if coding.display:
            unique[coding.display] = None
    return " | ".join(unique)


def relative_reference(reference: str) -> str:
    """ "Type/id" for "Type/id", "https://ehr/fhir/Type/id/_history/2" and the like: the one
    form in which a reference is looked up among the resources read."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def concept_text(concept: Any) -> str:
    """The text and displays of a CodeableConcept given as JSON (see :func:`text_of`),
    tolerating anything that is not one."""
    if not isinstance(concept, dict):
        return ""
    unique: dict[str, None] = {}
    text = concept.get("text")
    if isinstance(text, str) and text:
        unique[text] = None
    listed = concept.get("coding")
    for coding in listed if isinstance(listed, list) else []:
        if isinstance(coding, dict):
            display = coding.get("display")
            if isinstance(display, str) and display:
                unique[display] = None
    return " | ".join(unique)


_TYPE_WORDS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "nothing (null)",
}
_EXPECTED_GOT = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")


def _plain(message: str) -> str:
    """msgspec's "Expected `float | null`, got `str`" as "expected a number, got text"."""
    match = _EXPECTED_GOT.match(message)
    if match is None:
        return message[:1].lower() + message[1:]
    names = [t.strip() for t in match["expected"].split("|")]
    if "float" in names and "int" in names:
        names.remove("int")
    expected = [_TYPE_WORDS.get(t, t) for t in names]
    wanted = " or ".join(t for t in expected if t != _TYPE_WORDS["null"]) or _TYPE_WORDS["null"]
    return f"expected {wanted}, got {_TYPE_WORDS.get(match['got'], match['got'])}"


_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MAX_DROPPED_FIELDS = 20  # a resource with more wrong-typed fields than this is not read


def _without(value: Any, steps: list[str | int]) -> Any:
    """A copy of ``value`` with the item at ``steps`` left out (the input is never changed:
    the audit record keeps the resource as it came)."""
    if not steps:
        return None
    step, rest = steps[0], steps[1:]
    if isinstance(value, dict) and isinstance(step, str) and step in value:
        copy = dict(value)
        if rest:
            copy[step] = _without(value[step], rest)
        else:
            del copy[step]
        return copy
    if isinstance(value, list) and isinstance(step, int) and step < len(value):
        copy_list = list(value)
        if rest:
            copy_list[step] = _without(value[step], rest)
        else:
            del copy_list[step]
        return copy_list
    return None


def decode(resource: dict[str, Any], shape: type[S], source: SourceRef) -> tuple[S | None, str | None]:
    """The fields a reader reads, typed, and the data problem that names what could not be.

    Unknown fields are ignored and every field is optional, so resources that leave things
    out read as before.  A field of the wrong type is left out, as if absent (a coding
    whose code is a number, a dosage given as text), and the one problem names each such
    path, in sorted order (the same resource with its keys in another order reads the
    same); the reader then sees only well-typed values.
    """
    value: Any = resource
    issues: list[str] = []
    for _ in range(_MAX_DROPPED_FIELDS):
        try:
            decoded = msgspec.convert(value, shape, strict=True)
        except msgspec.ValidationError as exc:
            message, _, where = str(exc).partition(" - at `$")
            path = where.rstrip("`")
            steps: list[str | int] = [key or int(index) for key, index in _PATH_STEP.findall(path)]
            issues.append(f"{path.lstrip('.') or 'the resource'}: {_plain(message)}")
            value = _without(value, steps)
            if not isinstance(value, dict):
                break
            continue
        return decoded, (f"{source}: {'; '.join(sorted(issues))}; ignored" if issues else None)
    return None, f"{source}: {'; '.join(sorted(issues))}; the resource was not read"
