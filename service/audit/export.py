"""Stream audit records out as NDJSON, CSV or a FHIR R4 Bundle of AuditEvents.

Every exporter is a generator of text chunks fed by :meth:`AuditStore.iter_records`, so an
export of any size holds one record in memory at a time. With a pseudonym key, patient and
user references are replaced by ``pseudo:`` + a keyed HMAC in every format, and the raw input
resources (names, birth dates) are left out.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from fhir.resources.R4B.auditevent import AuditEvent

from service.engine.decision import Decision, decision_json
from service.settings import AuditExportSettings

from ._canonical import canonical_json
from ._records import stored_decision, suggested_trial_ids
from .errors import AuditConfigurationError

__all__ = [
    "CSV_COLUMNS",
    "EXPORT_FORMATS",
    "ExportFormat",
    "audit_event",
    "export_csv",
    "export_fhir_bundle",
    "export_ndjson",
    "exports_inputs",
    "pseudonym",
    "pseudonym_key_from_settings",
    "pseudonymise_record",
]

PSEUDONYM_SYSTEM = "urn:til-cds:pseudonym"
DECISION_SYSTEM = "urn:til-cds:decision"
CARD_SYSTEM = "urn:til-cds:card"
SERVICE_SYSTEM = "urn:til-cds:service"
HOOK_SYSTEM = "https://cds-hooks.org/hooks"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

CSV_COLUMNS = (
    "seq", "record_id", "kind", "recorded_at", "service_id", "hook", "patient_ref", "user_ref",
    "trial_ids", "suggested_trials", "card_count", "outcome", "decision_id", "hash",
)  # fmt: skip


def pseudonym(key: bytes, reference: str) -> str:
    """A stable, unlinkable-without-the-key stand-in for a patient or user reference."""
    return "pseudo:" + hmac.new(key, reference.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def pseudonym_key_from_settings(settings: AuditExportSettings) -> bytes | None:
    """The HMAC key when exports must be pseudonymised, None when they need not be."""
    if not settings.audit_pseudonymise_exports:
        return None
    if settings.audit_pseudonym_key is None:
        raise AuditConfigurationError(
            "pseudonymised exports need audit_pseudonym_key (TIL_CDS_AUDIT_PSEUDONYM_KEY), which "
            "is not set; refusing to export real patient references"
        )
    return settings.audit_pseudonym_key.get_secret_value().encode("utf-8")


def _reference_pattern(references: Iterable[str]) -> re.Pattern[str]:
    """The references wherever they occur in a text, as whole references.

    A card's Markdown cites its evidence (``Patient/7``, ``Patient/7/_history/2``), so a
    reference is found inside text too, but never as the start of a longer id
    (``Patient/7`` is not in ``Patient/77``).
    """
    alternatives = "|".join(re.escape(r) for r in sorted(references, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w.-])")


def _replace_references(value: Any, replacements: Mapping[str, str], pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda match: replacements[match.group(0)], value)
    if isinstance(value, list):
        return [_replace_references(item, replacements, pattern) for item in value]
    if isinstance(value, Mapping):
        replaced = {key: _replace_references(item, replacements, pattern) for key, item in value.items()}
        for type_key in ("resourceType", "resource_type"):  # a resource, or a decision's input
            typed_ref = f"{value.get(type_key)}/{value.get('id')}"
            if typed_ref in replacements:
                replaced["id"] = replacements[typed_ref]
        return replaced
    return value


def pseudonymise_record(record: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A copy with patient and user references replaced wherever they occur."""
    references = {record.get("patient_ref"), record.get("user_ref")}
    replacements = {ref: pseudonym(key, ref) for ref in references if isinstance(ref, str) and ref}
    content = dict(record["content"])
    omitted = len(content.pop("input_resources", None) or [])
    reference = content.get("input_list", content.get("input_manifest"))
    if isinstance(reference, Mapping):  # not a pre-screen run's list of input files
        content.pop("input_list", None)
        content.pop("input_manifest", None)
        omitted = int(reference["count"])
    else:
        reference = None
    if reference is not None or "input_resources" in record["content"]:
        content["input_resources_omitted"] = omitted
    if not replacements:
        return {**record, "content": content, "pseudonymised": True}
    pattern = _reference_pattern(replacements)
    result: dict[str, Any] = _replace_references({**record, "content": content}, replacements, pattern)
    result["pseudonymised"] = True
    return result


def exports_inputs(export_format: str, pseudonym_key: bytes | None) -> bool:
    """Whether an export carries each decision's input resources: NDJSON, not pseudonymised.

    The store keeps each resource once and a decision names its inputs by hash; an NDJSON
    export puts them back (as ``input_resources``, beside the ``input_list`` the chain
    proves), so it can be read and replayed without the database, as exports before were.
    CSV and AuditEvent exports never carried resources; pseudonymised ones leave them out.
    """
    return export_format == "ndjson" and pseudonym_key is None


def _prepared(records: Iterable[Mapping[str, Any]], key: bytes | None) -> Iterator[dict[str, Any]]:
    for record in records:
        yield pseudonymise_record(record, key) if key is not None else dict(record)


def export_ndjson(
    records: Iterable[Mapping[str, Any]], *, pseudonym_key: bytes | None = None
) -> Iterator[str]:
    """One JSON object per line, as stored (metadata plus content)."""
    for record in _prepared(records, pseudonym_key):
        yield canonical_json(record) + "\n"


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def export_csv(records: Iterable[Mapping[str, Any]], *, pseudonym_key: bytes | None = None) -> Iterator[str]:
    """A header line, then one flattened line per record; lists are joined with ``;``."""
    yield _csv_line(CSV_COLUMNS)
    for record in _prepared(records, pseudonym_key):
        content = record["content"]
        is_decision = record["kind"] == "decision"
        suggested = suggested_trial_ids(stored_decision(content)) if is_decision else []
        flat = {
            **record,
            "trial_ids": ";".join(record["trial_ids"]),
            "suggested_trials": ";".join(suggested),
            "card_count": len(content.get("cards", [])) if is_decision else "",
        }
        yield _csv_line("" if flat.get(name) is None else flat[name] for name in CSV_COLUMNS)


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _who(reference: str, *, pseudonymised: bool) -> dict[str, Any]:
    if pseudonymised:
        return {"identifier": {"system": PSEUDONYM_SYSTEM, "value": reference}}
    if "/" in reference:
        return {"reference": reference}
    return {"identifier": {"value": reference}}


def _detail(name: str, value: Any) -> dict[str, str]:
    text = value if isinstance(value, str) else canonical_json(value)
    return {"type": name, "valueString": text}


def _agents(record: Mapping[str, Any], pseudonymised: bool) -> list[dict[str, Any]]:
    service = record["service_id"]
    agents: list[dict[str, Any]] = []
    if record.get("user_ref"):
        agents.append(
            {
                "type": {"coding": [_coding(_DCM, "110153", "Source Role ID")]},
                "who": _who(record["user_ref"], pseudonymised=pseudonymised),
                "requestor": True,
            }
        )
    agents.append(
        {
            "type": {"coding": [_coding(_DCM, "110150", "Application")]},
            "who": {"identifier": {"system": SERVICE_SYSTEM, "value": service}, "display": service},
            "requestor": not agents,
        }
    )
    return agents


def _input_entities(decision: Decision, pseudonymised: bool) -> list[dict[str, Any]]:
    entities = []
    for item in decision.inputs:
        if not item.resource_type or not item.id or (pseudonymised and item.resource_type == "Patient"):
            continue
        reference = str(item)
        entities.append(
            {
                "what": {"reference": reference},
                "type": _coding(_ENTITY_TYPE, "2", "System Object"),
                "role": _coding(_OBJECT_ROLE, "4", "Domain Resource"),
            }
        )
    return entities


def _record_entity(record: Mapping[str, Any]) -> dict[str, Any]:
    content = record["content"]
    details = [_detail(name, record[name]) for name in ("seq", "outcome", "prev_hash", "hash")]
    if record["kind"] == "decision":
        decision = stored_decision(content)
        identifier = {"system": DECISION_SYSTEM, "value": record["record_id"]}
        details.append(_detail("suggested_trials", suggested_trial_ids(decision)))
        if content.get("hook_instance") is not None:
            details.append(_detail("hook_instance", content["hook_instance"]))
        details.append(_detail("criteria_fingerprint", decision.criteria_fingerprint))
        details.append(_detail("input_fingerprint", decision.input_fingerprint))
        details.append(_detail("evaluated_at", decision.evaluated_at.isoformat()))
        details.append(_detail("decision", decision_json(decision)))
        details.append(_detail("card_uuids", [card.get("uuid") for card in content.get("cards", [])]))
        return {
            "what": {"identifier": identifier},
            "type": _coding(_ENTITY_TYPE, "2", "System Object"),
            "role": _coding(_OBJECT_ROLE, "3", "Report"),
            "name": "decision",
            "detail": details,
        }
    feedback = content.get("feedback", {})
    details.append(_detail("decision_id", record["decision_id"]))
    for name in ("outcomeTimestamp", "overrideReason", "acceptedSuggestions"):
        if feedback.get(name) is not None:
            details.append(_detail(name, feedback[name]))
    return {
        "what": {"identifier": {"system": CARD_SYSTEM, "value": str(feedback.get("card"))}},
        "type": _coding(_ENTITY_TYPE, "2", "System Object"),
        "role": _coding(_OBJECT_ROLE, "3", "Report"),
        "name": "feedback",
        "detail": details,
    }


def audit_event(record: Mapping[str, Any]) -> AuditEvent:
    """One record as a validated FHIR R4B AuditEvent (an R4-compatible resource)."""
    pseudonymised = bool(record.get("pseudonymised"))
    content = record["content"]
    is_decision = record["kind"] == "decision"
    decision = stored_decision(content) if is_decision else None
    errors = list(decision.data_problems) if decision is not None else []
    entities = []
    if record.get("patient_ref"):
        entities.append(
            {
                "what": _who(record["patient_ref"], pseudonymised=pseudonymised),
                "type": _coding(_ENTITY_TYPE, "1", "Person"),
                "role": _coding(_OBJECT_ROLE, "1", "Patient"),
            }
        )
    if decision is not None:
        entities.extend(_input_entities(decision, pseudonymised))
    entities.append(_record_entity(record))
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": record["record_id"],
        "type": _coding(_DCM, "110112", "Query")
        if is_decision
        else _coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "RESTful Operation"),
        "subtype": [_coding(HOOK_SYSTEM, record["hook"], record["hook"])],
        "action": "E" if is_decision else "C",
        "recorded": record["recorded_at"],
        "outcome": "4" if errors else "0",
        "agent": _agents(record, pseudonymised),
        "source": {
            "site": record["service_id"],
            "observer": {"display": f"til-cds/{record['service_id']}"},
            "type": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "4",
                    "Application Server",
                )
            ],
        },
        "entity": entities,
    }
    if errors:
        event["outcomeDesc"] = "; ".join(str(error) for error in errors)[:1000]
    return AuditEvent.model_validate(event)


def export_fhir_bundle(
    records: Iterable[Mapping[str, Any]], *, pseudonym_key: bytes | None = None
) -> Iterator[str]:
    """A ``collection`` Bundle written piece by piece: opening, one entry per record, close."""
    opening = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    yield json.dumps(opening)[:-1] + ',"entry":['
    separator = ""
    for record in _prepared(records, pseudonym_key):
        resource = audit_event(record).model_dump_json(exclude_none=True)
        yield f'{separator}{{"fullUrl":"urn:uuid:{record["record_id"]}","resource":{resource}}}'
        separator = ","
    yield "]}\n"


class ExportFormat(Protocol):
    """An exporter: records in, text chunks out."""

    def __call__(
        self, records: Iterable[Mapping[str, Any]], *, pseudonym_key: bytes | None = None
    ) -> Iterator[str]: ...


EXPORT_FORMATS: dict[str, tuple[str, ExportFormat]] = {
    "ndjson": ("application/x-ndjson", export_ndjson),
    "csv": ("text/csv", export_csv),
    "fhir": ("application/fhir+json", export_fhir_bundle),
}
"""Format name → (media type, exporter taking records and ``pseudonym_key=``)."""
