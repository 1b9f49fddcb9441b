"""Resources -> one frozen ``PatientFacts``: decode each at the edge, read it, derive, freeze."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from service.facts.collector import Collector
from service.facts.common import Shape, SourceRef, codings_of, decode, source_ref, text_of
from service.facts.derived import derive_absolute_counts
from service.facts.medication import MedicationRecord, MedicationShape, medication_concept
from service.facts.model import DrugExposure, LabResult, PatientFacts, TestResult
from service.facts.registry import READERS, REFERENCED_SHAPES, Reader
from service.mappings import Mappings

__all__ = ["age_in_years", "build_facts", "draft_order_exposures", "unique_resources"]


def _medications(medications: list[dict[str, Any]], into: Collector) -> None:
    """Decode the Medications first, so the records that refer to them can name their drug."""
    shape = REFERENCED_SHAPES["Medication"]
    for resource in medications:
        decoded, problem = decode(resource, shape, source_ref(resource))
        if problem is not None:
            into.problems.append(problem)
        if isinstance(decoded, MedicationShape):
            into.medications[f"Medication/{resource.get('id')}"] = decoded


def _link_administrations(drugs: list[DrugExposure], into: Collector) -> None:
    """An order's newest administration is its newest evidence of being acted on."""
    for index, drug in enumerate(drugs):
        given = into.given_for_request.get(f"{drug.source.resource_type}/{drug.source.id}")
        if drug.source.resource_type != "MedicationRequest" or not given:
            continue
        newest = max(given)
        if drug.last_evidence is None or newest > drug.last_evidence[0]:
            drugs[index] = replace(drug, last_evidence=(newest, "given"))


def _by_type(resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The resources of each type, in order (one pass over thousands of resources)."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        resource_type = resource.get("resourceType")
        if isinstance(resource_type, str):
            by_type.setdefault(resource_type, []).append(resource)
    return by_type


def _decoded_batches(
    by_type: dict[str, list[dict[str, Any]]], readers: Mapping[str, Reader]
) -> dict[str, Iterator[Shape | None]]:
    """Each read resource type's resources decoded, in order, a chunk per msgspec call."""
    batches: dict[str, Iterator[Shape | None]] = {}
    for resource_type, resources in by_type.items():
        reader = readers.get(resource_type)
        if reader is not None:
            batches[resource_type] = _decoded_in_chunks(resources, reader.shape)
    return batches


_CHUNK = 256
"""Resources per msgspec call: one call per resource cost twice as much as one per chunk,
and a resource that does not decode sends only its chunk through ``decode``."""
_LIST_OF: dict[type[Shape], Any] = {}


def _decoded_in_chunks(resources: list[dict[str, Any]], shape: type[Shape]) -> Iterator[Shape | None]:
    """The resources decoded as they are; None for each of a chunk holding one that does
    not decode, to be decoded one by one (``decode``, which names what it leaves out)."""
    list_of = _LIST_OF.get(shape)
    if list_of is None:
        list_of = _LIST_OF[shape] = list[shape]  # type: ignore[valid-type]  # a shape class held in a variable
    for start in range(0, len(resources), _CHUNK):
        chunk = resources[start : start + _CHUNK]
        try:
            yield from msgspec.convert(chunk, list_of, strict=True)
        except msgspec.ValidationError:
            yield from (None for _ in chunk)


def _newest_first(item: LabResult | TestResult) -> datetime:
    return item.when or datetime.min.replace(tzinfo=UTC)


def build_facts(
    patient_id: str,
    resources: list[dict[str, Any]],
    mappings: Mappings,
    *,
    draft_orders: Iterable[DrugExposure] = (),
    unavailable: Mapping[str, str] | None = None,
    problems: Iterable[str] = (),
    readers: Mapping[str, Reader] = READERS,
) -> PatientFacts:
    """Turn one patient's resources into facts, once.

    A field of the wrong type is left out and named in one data problem per resource;
    ``unavailable`` (the sources that could not be read, by the names
    ``registry.unavailable_sources`` gives), ``problems`` (what gathering noticed) and the
    order-select ``draft_orders`` are part of the facts, since nothing changes them later.
    ``readers`` is the registry's table (a copy with another entry reads another type).
    A reader's exception is a bug and propagates.
    """
    into = Collector(mappings)
    by_type = _by_type(resources)
    _medications(by_type.get("Medication", []), into)
    inputs: list[SourceRef] = []
    batches = _decoded_batches(by_type, readers)
    for resource in resources:
        source = source_ref(resource)
        inputs.append(source)
        reader = readers.get(source.resource_type)
        if reader is None:
            continue
        decoded = next(batches[source.resource_type])
        if decoded is None:
            decoded, problem = decode(resource, reader.shape, source)
            if problem is not None or decoded is None:
                into.problems.append(problem or f"{source} could not be decoded; ignored")
        if decoded is not None:
            reader.read(decoded, source, into)
    derive_absolute_counts(into)
    drugs = list(into.drugs)
    _link_administrations(drugs, into)
    return PatientFacts(
        patient_id=patient_id,
        birth_date=into.birth_date,
        sex=into.sex,
        labs={k: tuple(sorted(v, key=_newest_first, reverse=True)) for k, v in into.labs.items()},
        tests={k: tuple(sorted(v, key=_newest_first, reverse=True)) for k, v in into.tests.items()},
        diagnoses=tuple(into.diagnoses),
        procedures=tuple(into.procedures),
        drugs=tuple(drugs),
        immunizations=tuple(into.immunizations),
        draft_orders=tuple(draft_orders),
        inputs=tuple(inputs),
        data_problems=(*into.problems, *problems),
        unavailable=dict(unavailable or {}),
        stages=tuple(into.stages),
        deceased=into.deceased,
        birth_date_latest=into.birth_date_latest,
    )


def age_in_years(birth_date: date, at: datetime) -> int:
    """Completed years at ``at`` (a birthday on the evaluation day counts)."""
    on = at.date()
    return on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))


class _DraftOrder(MedicationRecord):
    resourceType: Any = None
    id: Any = None


def draft_order_exposures(draft_orders: Any, selections: list[str]) -> list[DrugExposure]:
    """The selected draft medication orders of an order-select call, as drug exposures.

    Draft orders come from the EHR's order composer and may be half-filled: entries that
    are not resources, have no medication, or hold fields of the wrong type are skipped
    rather than refused (the clinician is still typing).  With no ``selections`` every
    draft counts.
    """
    exposures: list[DrugExposure] = []
    entries = draft_orders.get("entry") if isinstance(draft_orders, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        source = SourceRef(str(resource.get("resourceType")), str(resource.get("id")))
        if selections and str(source) not in selections:
            continue
        draft, _ = decode(resource, _DraftOrder, source)
        if draft is None:
            continue
        concept = medication_concept(draft)
        codings, text = codings_of(concept), text_of(concept)
        if codings or text:
            exposures.append(DrugExposure(tuple(codings), text, "draft", None, None, source))
    return exposures


def unique_resources(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One resource per type and id, the first one seen kept: the same resource may arrive
    under two prefetch keys or searches, and must count once (hook and pre-screen alike)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        seen.setdefault((str(resource.get("resourceType")), str(resource.get("id"))), resource)
    return list(seen.values())
