"""The CDS Hooks 2.0 prefetch contract: what each key may hold and what it means.

Per prefetch key: present -> use it (its ``next`` link is followed later when we may);
``null`` -> no data; absent, or an OperationOutcome, or a Bundle of OperationOutcomes ->
fetch it ourselves.  Every resource, prefetched or fetched, passes the same checks: the
type its key holds, and that it is the context's patient or belongs to it.  Resources a
client prefetched under keys of its own naming are used by type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from service.cdshooks import HookRequest
from service.errors import PrefetchError
from service.facts import registry
from service.facts.common import relative_reference
from service.gather.fhir_client import next_link, outcome_text

__all__ = [
    "GatheredData",
    "PrefetchReading",
    "bundle_resources",
    "check_resource",
    "read_prefetch",
    "render_template",
]


@dataclass
class GatheredData:
    """Every resource found for the patient, and how each prefetch key was satisfied."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class PrefetchReading:
    """What the prefetch left to do: keys to fetch (key -> rendered query) and pages to follow."""

    missing: dict[str, str] = field(default_factory=dict)
    next_pages: dict[str, str] = field(default_factory=dict)


expected_types = registry.expected_types


def _reference_of(resource: dict[str, Any]) -> str:
    """The patient reference a resource carries (``subject``, or ``patient`` for Immunization)."""
    subject = resource.get("subject") or resource.get("patient")
    return str(subject.get("reference")) if isinstance(subject, dict) else "?"


def _belongs_to(resource: dict[str, Any], patient_id: str) -> bool:
    subject = resource.get("subject") or resource.get("patient")
    if not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
        return True
    return relative_reference(subject["reference"]) == f"Patient/{patient_id}"


def _check_owner(where: str, resource: dict[str, Any], patient_id: str) -> None:
    """The resource is the context's Patient, or belongs to it, and has an id."""
    if resource["resourceType"] == "Patient":
        if resource.get("id") != patient_id:
            raise PrefetchError(
                f"{where} is Patient/{resource.get('id')}, not the context's Patient/{patient_id}",
                expression=where,
            )
    elif not _belongs_to(resource, patient_id):
        raise PrefetchError(
            f"{where} belongs to {_reference_of(resource)}, not Patient/{patient_id}", expression=where
        )
    if not isinstance(resource.get("id"), str):
        raise PrefetchError(f"{where} has no id", expression=where)


def check_resource(key: str, where: str, resource: Any, patient_id: str) -> dict[str, Any]:
    """A resource of prefetch key ``key`` (found at ``where``), checked; else a PrefetchError."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise PrefetchError(f"{where} is not a FHIR resource (no resourceType)", expression=where)
    expected = expected_types(key)
    actual = resource["resourceType"]
    if actual not in expected:
        raise PrefetchError(
            f"{where} is a {actual}; prefetch key '{key}' holds {' or '.join(expected)} resources",
            expression=where,
        )
    _check_owner(where, resource, patient_id)
    if actual == "Patient":
        try:
            Patient.model_validate(resource)
        except RecursionError as exc:  # fhir.resources validates nested extensions recursively
            raise PrefetchError(
                f"{where} is not a valid FHIR R4 Patient: nested too deep to read", expression=where
            ) from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            raise PrefetchError(
                f"{where} is not a valid FHIR R4 Patient: {'.'.join(map(str, first['loc']))}: {first['msg']}",
                expression=where,
            ) from exc
    return resource


def bundle_resources(
    key: str,
    where: str,
    bundle: dict[str, Any],
    patient_id: str,
    data: GatheredData,
    label: str | None = None,
) -> list[dict[str, Any]]:
    """Resources of a searchset Bundle for ``key``; OperationOutcome entries become problems of ``label``."""
    resources = []
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise PrefetchError(f"{where}.entry must be a list", expression=f"{where}.entry")
    expected = set(expected_types(key)) - {"Patient"}
    own_reference = f"Patient/{patient_id}"
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            resource_type = resource.get("resourceType")
            if resource_type == "OperationOutcome":
                data.problems.append(f"{label or key}: the FHIR server reported: {outcome_text(resource)}")
                continue
            if resource_type in expected and _is_plainly_owned(resource, own_reference):
                resources.append(resource)
                continue
        resources.append(check_resource(key, f"{where}.entry[{index}].resource", resource, patient_id))
    return resources


def _is_plainly_owned(resource: dict[str, Any], own_reference: str) -> bool:
    """The common case of :func:`check_resource`, for thousands of entries a call: an id, and
    a subject (or patient) that is exactly ``Patient/<id>``.  Anything else is checked in full."""
    if not isinstance(resource.get("id"), str):
        return False
    subject = resource.get("subject") or resource.get("patient")
    return isinstance(subject, dict) and subject.get("reference") == own_reference


def _only_outcomes(bundle: dict[str, Any]) -> bool:
    """A Bundle whose entries are all OperationOutcomes: the EHR's search failed."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        return False  # bundle_resources refuses it, by its path
    any_entry = False
    for entry in entries:
        if isinstance(entry, dict):
            resource = entry.get("resource")
            if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
                return False  # stops at the first real resource, not after thousands
            any_entry = True
    return any_entry


def render_template(template: str, context: Mapping[str, Any]) -> str:
    """A prefetch template with its ``{{context.name}}`` tokens filled from a hook context."""
    rendered = template
    for name, value in context.items():
        if isinstance(value, str | int | float):
            rendered = rendered.replace("{{context." + name + "}}", str(value))
    return rendered


def _harvest_other_keys(
    prefetch: dict[str, Any], templates: dict[str, str], patient_id: str, data: GatheredData
) -> set[str]:
    """Use resources a client prefetched under keys of its own naming, by resource type.

    Some clients prefetch with their own key names (one "observations" Bundle, say).
    Those resources are checked like ours and used; a resource type they bring counts as
    prefetched, so our keys for that type are neither fetched nor reported missing.
    """
    covered: set[str] = set()
    for key, value in prefetch.items():
        if key in templates or not isinstance(value, dict):
            continue
        where = f"prefetch.{key}"
        if value.get("resourceType") == "Bundle":
            entries = value.get("entry") or []
            if not isinstance(entries, list):
                raise PrefetchError(f"{where}.entry must be a list", expression=f"{where}.entry")
            candidates = [
                (f"{where}.entry[{i}].resource", e.get("resource"))
                for i, e in enumerate(entries)
                if isinstance(e, dict)
            ]
        else:
            candidates = [(where, value)]
        used = 0
        for place, resource in candidates:
            if not isinstance(resource, dict) or resource.get("resourceType") not in registry.HARVESTED_TYPES:
                continue
            _check_owner(place, resource, patient_id)
            data.resources.append(resource)
            if (
                resource["resourceType"] != "Medication"
            ):  # a referenced Medication stands for no search of ours
                covered.add(str(resource["resourceType"]))
            used += 1
        if used:
            data.sources[key] = f"prefetch key of the client's own naming ({used} resources used by type)"
    return covered


def read_prefetch(
    request: HookRequest, patient_id: str, templates: dict[str, str], data: GatheredData, *, may_page: bool
) -> PrefetchReading:
    """Take in every prefetched key (into ``data``) and say what is left to fetch.

    ``may_page`` is False when no FHIR server may be called: a paged prefetch then keeps
    its first page, with a problem noted.
    """
    prefetch = request.prefetch or {}
    reading = PrefetchReading()
    for key, template in templates.items():
        where = f"prefetch.{key}"
        if key not in prefetch:
            reading.missing[key] = render_template(template, request.context)
            continue
        value = prefetch[key]
        if value is None:
            data.sources[key] = "prefetch (null: no data)"
            continue
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise PrefetchError(f"{where} must be a FHIR resource, a Bundle or null", expression=where)
        if value["resourceType"] == "OperationOutcome":
            data.problems.append(f"{key}: the EHR could not prefetch it ({outcome_text(value)})")
            reading.missing[key] = render_template(template, request.context)
            continue
        if key == "patient":
            data.resources.append(check_resource(key, where, value, patient_id))
            data.sources[key] = "prefetch"
            continue
        if value["resourceType"] != "Bundle":
            raise PrefetchError(
                f"{where} is a {value['resourceType']}; a search prefetch must be a Bundle", expression=where
            )
        if _only_outcomes(value):
            data.problems.append(
                f"{key}: the EHR's prefetch holds only OperationOutcomes; fetching it instead"
            )
            reading.missing[key] = render_template(template, request.context)
            continue
        data.resources.extend(bundle_resources(key, where, value, patient_id, data))
        data.sources[key] = "prefetch"
        next_url = next_link(value)
        if next_url is not None and may_page:
            reading.next_pages[key] = next_url
        elif next_url is not None:
            data.problems.append(
                f"{key}: prefetch is paged and the next pages cannot be fetched; only the first page was read"
            )
    covered_types = _harvest_other_keys(prefetch, templates, patient_id, data)
    for key in list(reading.missing):
        covered = sorted(set(expected_types(key)) & covered_types)
        if covered:
            data.sources[key] = f"covered by other prefetch keys ({', '.join(covered)})"
            del reading.missing[key]
    return reading
