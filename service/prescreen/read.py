"""Bulk Data NDJSON files -> one keyed record per resource line, and a tally of bad lines.

The driver lists the files and cuts them into byte ranges; each Spark task reads one
range itself (Hadoop-style: a range owns the lines that start inside it), so a line
keeps its file and byte offset.  That position orders a patient's resources the same
way on every run and names a bad line in the summary.  Every line ends up either as a
resource of a patient or as a counted problem of its file: none is dropped silently.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from service.facts import registry
from service.facts.common import relative_reference

__all__ = [
    "BAD_INPUT_KINDS",
    "READ_TYPES",
    "InputFile",
    "EXAMPLES_KEPT",
    "LineRecord",
    "PROBLEMS_KEY",
    "Problem",
    "input_files",
    "patient_of",
    "read_range",
    "read_ranges",
    "split_ranges",
]

READ_TYPES = tuple(kind for kind in registry.HARVESTED_TYPES if kind in registry.READERS)
"""The resource types the hook reads, from the facts registry.  A Medication is read only where
a medication record refers to it, and a bulk export's Medications name no patient, so a drug
named only by such a reference is unknown here, as in a hook call without the Medication."""
TYPE_RANK = {kind: rank for rank, kind in enumerate(READ_TYPES)}

BAD_INPUT_KINDS = {
    "not_json": "not JSON",
    "not_resource": "JSON but not a FHIR resource (no resourceType)",
    "unknown_type": "a resource type the criteria do not read",
    "no_subject": "no subject: the resource names no Patient",
    "no_id": "no id",
    "patient_missing": "resources of a patient with no Patient resource in the export",
}
"""Problem kinds counted per file and shown in the run's summary."""

_SUFFIXES = (".ndjson", ".ndjson.gz")


@dataclass(frozen=True)
class InputFile:
    """One NDJSON file of the export, with what the audit record's input manifest holds."""

    index: int
    path: str
    name: str
    size: int
    sha256: str

    @property
    def is_gzip(self) -> bool:
        return self.name.endswith(".gz")


LineRecord = tuple[str, tuple[int, int, int, bytes]]
"""``(patient id, (type rank, file index, byte offset, the line))``: one resource for the group-by."""
Problem = tuple[str, str, int, str]
"""``(file name, problem kind, byte offset, detail)``."""
PROBLEMS_KEY = ""
"""The group-by key of a partition's problem tally (no patient id is empty)."""
EXAMPLES_KEPT = 20
"""Problems kept with their position per file and kind; all of them are counted."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_files(directory: Path) -> list[InputFile]:
    """The export's ``*.ndjson`` (and ``*.ndjson.gz``) files in name order, hashed for the manifest."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a folder of NDJSON files")
    paths = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))
    if not paths:
        raise FileNotFoundError(f"{directory} holds no .ndjson files")
    return [InputFile(i, str(p.resolve()), p.name, p.stat().st_size, _sha256(p)) for i, p in enumerate(paths)]


def split_ranges(files: list[InputFile], target_bytes: int) -> list[tuple[InputFile, int, int]]:
    """Byte ranges of about ``target_bytes``; a gzip file is one range (it cannot be cut)."""
    ranges = []
    for file in files:
        if file.is_gzip or file.size <= target_bytes:
            ranges.append((file, 0, max(file.size, 1)))
            continue
        for start in range(0, file.size, target_bytes):
            ranges.append((file, start, min(start + target_bytes, file.size)))
    return ranges


def _lines(file: InputFile, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for each line that starts in ``[start, end)``."""
    if file.is_gzip:
        with gzip.open(file.path, "rb") as handle:
            offset = 0
            for line in handle:
                yield offset, line
                offset += len(line)
        return
    with open(file.path, "rb") as handle:
        offset = start
        if start > 0:
            handle.seek(start - 1)
            offset = start - 1 + len(handle.readline())  # the rest of a line owned by the range before
        while offset < end:
            line = handle.readline()
            if not line:
                return
            yield offset, line
            offset += len(line)


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the Patient a resource belongs to (``subject``, or ``patient`` for Immunization)."""
    if resource.get("resourceType") == "Patient":
        return resource["id"] if isinstance(resource.get("id"), str) else None
    subject = resource.get("subject") or resource.get("patient")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str):
        return None
    kind, _, patient_id = relative_reference(reference).partition("/")
    return patient_id if kind == "Patient" and patient_id else None


def _names_a_code(observation: dict[str, Any], codes: frozenset[str]) -> bool:
    """Whether the Observation's code, or a component's (a panel of results), is one of ``codes``."""
    concepts = [observation.get("code")]
    components = observation.get("component")
    if isinstance(components, list):
        concepts += [c.get("code") for c in components if isinstance(c, dict)]
    for concept in concepts:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict) and coding.get("code") in codes:
                return True
    return False


def _reference_only(observation: dict[str, Any]) -> bytes:
    """An Observation the criteria cannot read, cut down to what still reaches the facts: its reference.

    The facts list every input resource (the audit's input fingerprint), and read nothing
    else of an Observation whose codes no mapping names; so the engine sees the same.
    """
    stub: dict[str, Any] = {"resourceType": "Observation", "id": observation["id"]}
    meta = observation.get("meta")
    if isinstance(meta, dict) and "versionId" in meta:
        stub["meta"] = {"versionId": meta["versionId"]}
    return orjson.dumps(stub)


def read_range(
    file: InputFile, start: int, end: int, observation_codes: frozenset[str] | None = None
) -> Iterator[tuple[str, LineRecord | Problem]]:
    """``("resource", record)`` or ``("problem", problem)`` for every non-blank line of the range.

    With ``observation_codes`` (the codes the hook's prefetch asks for), an Observation naming
    none of them is passed on as its reference alone: most of a record's Observations are
    vital signs and the like, and this keeps them out of the shuffle.
    """
    for offset, raw in _lines(file, start, end):
        line = raw.strip()
        if not line:
            continue
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield "problem", (file.name, "not_json", offset, str(exc).split(":")[0])
            continue
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(kind, str):
            yield "problem", (file.name, "not_resource", offset, "")
            continue
        if kind not in TYPE_RANK:
            yield "problem", (file.name, "unknown_type", offset, kind)
            continue
        if not isinstance(resource.get("id"), str):
            yield "problem", (file.name, "no_id", offset, kind)
            continue
        patient = patient_of(resource)
        if patient is None:
            yield "problem", (file.name, "no_subject", offset, f"{kind}/{resource['id']}")
            continue
        if (
            observation_codes is not None
            and kind == "Observation"
            and not _names_a_code(resource, observation_codes)
        ):
            line = _reference_only(resource)
        yield "resource", (patient, (TYPE_RANK[kind], file.index, offset, line))


def read_ranges(
    ranges: Iterable[tuple[InputFile, int, int]], observation_codes: frozenset[str] | None = None
) -> Iterator[tuple[str, Any]]:
    """A partition's resources keyed by patient, then one ``(PROBLEMS_KEY, (counts, examples))``."""
    counts: dict[tuple[str, str], int] = {}
    examples: list[Problem] = []
    for file, start, end in ranges:
        for kind, item in read_range(file, start, end, observation_codes):
            if kind == "resource":
                record = cast(LineRecord, item)
                yield record[0], record[1]
                continue
            problem = cast(Problem, item)
            key = (problem[0], problem[1])
            counts[key] = counts.get(key, 0) + 1
            if counts[key] <= EXAMPLES_KEPT:
                examples.append(problem)
    yield (
        PROBLEMS_KEY,
        (0, 0, 0, orjson.dumps({"counts": [[*k, n] for k, n in counts.items()], "examples": examples})),
    )
