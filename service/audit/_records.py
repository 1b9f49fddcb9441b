"""Turn decision records and feedback items into audit rows, and rows back into plain dicts.

Kept apart from the store so the shape of a record is checked before any database work.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.engine.decision import Decision, DecisionShapeError, decision_from_data, read_decision

from ._canonical import canonical_json, parse_timestamp, scrub_secrets, utc_iso
from ._content import Document, content_document, input_list, received_inputs
from .errors import InvalidAuditRecordError

__all__ = [
    "DECISION_OUTCOMES",
    "FEEDBACK_OUTCOMES",
    "PreparedDecision",
    "PreparedFeedback",
    "card_key",
    "card_trial_ids",
    "feedback_values",
    "find_card",
    "hash_document",
    "hex_text",
    "is_canonical_uuid",
    "logical_values",
    "prepare_decision",
    "prepare_feedback",
    "record_view",
    "stored_columns",
    "stored_decision",
    "suggested_trial_ids",
]

DECISION_OUTCOMES = ("suggested", "not_suggested")
FEEDBACK_OUTCOMES = ("accepted", "overridden")


@dataclass(frozen=True)
class PreparedDecision:
    """Column values of a decision row (without seq and hashes), the keys of the cards it showed
    (:func:`card_key`), and the documents to store before the row is chained: its content and
    the input resources it read."""

    values: dict[str, Any]
    content: Document
    cards: list[int] = field(default_factory=list)
    inputs: Document | None = None
    """The input list to store, unless a known input list (``input_key``) says it is stored."""
    inputs_address: bytes | None = None
    inputs_key: bytes | None = None
    """The SHA-256 of the input list as received (before secrets are scrubbed)."""


@dataclass(frozen=True)
class PreparedFeedback:
    """A checked, secret-free feedback item and the key that makes resubmission idempotent."""

    card_uuid: str
    outcome: str
    item: dict[str, Any]
    dedupe_key: str


def _require_str(record: Mapping[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidAuditRecordError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _optional_str(record: Mapping[str, Any], key: str, where: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidAuditRecordError(f"{where}.{key} must be a string or null, got {value!r}")
    return value


def _list_of_dicts(record: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = record.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidAuditRecordError(f"{where}.{key} must be a list of objects")
    return value


def stored_decision(content: Mapping[str, Any], titles: Mapping[str, Any] | None = None) -> Decision:
    """The typed decision of a stored decision record, of any schema version.

    ``titles`` (the recorded criteria snapshot) only names the trials of version 1 records.
    """
    try:
        return read_decision(content, titles)
    except DecisionShapeError as exc:
        raise InvalidAuditRecordError(f"the record's decision is not readable: {exc}") from exc


def suggested_trial_ids(decision: Decision) -> list[str]:
    """Trial ids the decision suggested (a card was due), in verdict order."""
    return [verdict.trial_id for verdict in decision.suggested]


def card_trial_ids(card: Mapping[str, Any], decision: Decision) -> list[str]:
    """The trials a card is about, so feedback and counts can be given per trial.

    Cards say it in ``extension.trial_id`` (or ``trial_ids``); failing that a
    ``source.topic.code`` naming an evaluated trial; failing that the only suggested trial.
    """
    extension = card.get("extension")
    if isinstance(extension, Mapping):
        named = extension.get("trial_ids", extension.get("trial_id"))
        if isinstance(named, str):
            return [named]
        if isinstance(named, list) and all(isinstance(item, str) for item in named):
            return list(named)
    evaluated = [verdict.trial_id for verdict in decision.trials]
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, Mapping) else None
    code = topic.get("code") if isinstance(topic, Mapping) else None
    if isinstance(code, str) and code in evaluated:
        return [code]
    suggested = suggested_trial_ids(decision)
    return suggested if len(suggested) == 1 else []


def is_canonical_uuid(text: str) -> bool:
    """Whether ``text`` is a UUID in the one form the store gives back (lowercase, hyphenated).

    Ids are stored as UUIDs, so any other spelling would come back changed and its record's
    hash, taken over the text, would no longer verify.
    """
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def card_key(card_uuid: str) -> int:
    """The 64-bit key a card is indexed by: the first 8 bytes of the SHA-256 of its ``uuid``.

    Eight bytes rather than a UUID's sixteen, and any id, UUID or not, keys alike. Two ids may
    share a key, so an index hit is always confirmed against the ``uuid`` text in the
    decision's content.
    """
    return int.from_bytes(hashlib.sha256(card_uuid.encode("utf-8")).digest()[:8], "big", signed=True)


def find_card(content: Mapping[str, Any], card_uuid: str) -> dict[str, Any] | None:
    """The card with this ``uuid`` among those a decision's content holds, if any."""
    cards = content.get("cards")
    if not isinstance(cards, list):
        return None
    return next(
        (card for card in cards if isinstance(card, dict) and card.get("uuid") == card_uuid),
        None,
    )


_HEX_COLUMNS = ("dedupe_key", "content_sha256", "prev_hash", "hash")
"""Columns stored as 32 bytes (revision 0004) whose hex text the chain hash and views use."""


def stored_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """The columns to insert for a record's values: hex as bytes, ``decision_id`` NULL when it
    is the record's own id."""
    row = dict(values)
    for name in _HEX_COLUMNS:
        if row.get(name) is not None:
            row[name] = bytes.fromhex(row[name])
    if row["decision_id"] == row["record_id"]:
        row["decision_id"] = None
    return row


def logical_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row's values as the record has them, which its hash covers and views show.

    A column edited by hand into something it cannot hold (text in a hash column, an id that
    is no UUID: SQLite keeps either) is shown as found, so that its record's hash no longer
    matches and ``audit verify`` reports it, rather than failing to read the row.
    """
    values = dict(row)
    for name in _HEX_COLUMNS:
        if values.get(name) is not None:
            values[name] = hex_text(values[name])
    for name in ("record_id", "decision_id"):
        if values.get(name) is not None:
            values[name] = _uuid_text(values[name])
    if values.get("decision_id") is None:
        values["decision_id"] = values["record_id"]
    return values


def hex_text(found: object) -> str:
    """A 32-byte column's value as the hex text records hold, or, edited into text, as found."""
    return bytes(found).hex() if isinstance(found, bytes | memoryview) else str(found)


def _uuid_text(found: object) -> str:
    """An id column's value in the form records hold (lowercase, hyphenated), or as found."""
    try:
        return str(found if isinstance(found, uuid.UUID) else uuid.UUID(str(found)))
    except ValueError:
        return str(found)


@dataclass(frozen=True)
class _Inputs:
    document: Document | None
    address: bytes
    key: bytes


def _split_inputs(
    record: Mapping[str, Any], known: Mapping[bytes, bytes], received: Document | None = None
) -> tuple[dict[str, Any], _Inputs | None]:
    """The record with ``input_resources`` replaced by a reference to them, and their document.

    The reference (``input_list``: address and count) is part of the chained content; a repeat
    chart open reads the same resources, so it names the same document and stores nothing new.
    ``known`` maps the hashes of input lists as received to the addresses of stored ones: a
    hit skips looking for secrets in a list already scrubbed and stored.  ``received``: the
    list's :func:`received_inputs`, when the caller has taken it already (the hook pipeline
    does, to find the chart's remembered facts).
    """
    rest = {key: value for key, value in record.items() if key != "input_resources"}
    if "input_resources" not in record:
        return rest, None
    resources = record["input_resources"]
    if not isinstance(resources, list):
        raise InvalidAuditRecordError("decision.input_resources must be a list of FHIR resources")
    if received is None:
        received = received_inputs(resources, "decision.input_resources")
    key = received.address
    stored_address = known.get(key)
    if stored_address is not None:
        inputs = _Inputs(None, stored_address, key)
    else:
        stored = input_list(received, resources, "decision.input_resources")
        inputs = _Inputs(stored, stored.address, key)
    rest["input_list"] = {"sha256": inputs.address.hex(), "count": len(resources)}
    return rest, inputs


def prepare_decision(
    record: Mapping[str, Any],
    known_inputs: Mapping[bytes, bytes] | None = None,
    *,
    received: Document | None = None,
) -> PreparedDecision:
    """Check a decision record, drop secrets, split off its inputs and derive the indexed columns.

    ``known_inputs`` and ``received``: see :func:`_split_inputs`.
    """
    if not isinstance(record, Mapping):
        raise InvalidAuditRecordError("a decision record must be an object")
    clean, inputs = _split_inputs(record, known_inputs or {}, received)
    clean, content = content_document(clean, "decision")
    where = "decision"
    decision_id = _require_str(clean, "decision_id", where)
    if not is_canonical_uuid(decision_id):
        raise InvalidAuditRecordError(
            f"decision.decision_id is not a uuid in lowercase hyphenated form: {decision_id!r}"
        )
    recorded_at = parse_timestamp(_require_str(clean, "recorded_at", where), "decision.recorded_at")
    stored = clean.get("decision")
    if not isinstance(stored, Mapping):
        raise InvalidAuditRecordError("decision.decision must be the engine's decision (an object)")
    try:
        decision = decision_from_data(stored)
    except DecisionShapeError as exc:
        path = f"decision.decision.{exc.path}" if exc.path else "decision.decision"
        raise InvalidAuditRecordError(f"{path}: {exc.problem}") from exc
    cards = _list_of_dicts(clean, "cards", where)
    trial_ids = list(dict.fromkeys(verdict.trial_id for verdict in decision.trials))
    card_rows = {  # card uuid -> the key its row is indexed by
        card["uuid"]: card_key(card["uuid"])
        for card in cards
        if isinstance(card.get("uuid"), str) and card["uuid"]
    }
    values = {
        "record_id": decision_id,
        "kind": "decision",
        "recorded_at": recorded_at,
        "service_id": _require_str(clean, "service_id", where),
        "hook": _require_str(clean, "hook", where),
        "patient_ref": _optional_str(clean, "patient_ref", where),
        "user_ref": _optional_str(clean, "user_ref", where),
        "decision_id": decision_id,
        "trial_ids": trial_ids,
        "outcome": "suggested" if decision.suggested else "not_suggested",
        "dedupe_key": None,
        "content": "",
    }
    values["content_sha256"] = content.address.hex()
    return PreparedDecision(
        values=values,
        cards=list(card_rows.values()),
        content=content,
        inputs=inputs.document if inputs is not None else None,
        inputs_address=inputs.address if inputs is not None else None,
        inputs_key=inputs.key if inputs is not None else None,
    )


def prepare_feedback(feedback: Mapping[str, Any]) -> PreparedFeedback:
    """Check a CDS Hooks 2.0 feedback item; a bare Coding as ``overrideReason`` is nested."""
    if not isinstance(feedback, Mapping):
        raise InvalidAuditRecordError("a feedback item must be an object")
    item: dict[str, Any] = scrub_secrets(feedback)
    where = "feedback"
    card_uuid = _require_str(item, "card", where)
    outcome = _require_str(item, "outcome", where)
    if outcome not in FEEDBACK_OUTCOMES:
        raise InvalidAuditRecordError(f"feedback.outcome must be accepted or overridden: {outcome!r}")
    outcome_timestamp = _require_str(item, "outcomeTimestamp", where)
    parse_timestamp(outcome_timestamp, "feedback.outcomeTimestamp")
    reason = item.get("overrideReason")
    if isinstance(reason, Mapping) and "code" in reason and "reason" not in reason:
        item["overrideReason"] = {"reason": dict(reason)}
    key_text = json.dumps([card_uuid, outcome, outcome_timestamp], separators=(",", ":"))
    dedupe_key = hashlib.sha256(key_text.encode("utf-8")).hexdigest()
    return PreparedFeedback(card_uuid=card_uuid, outcome=outcome, item=item, dedupe_key=dedupe_key)


def feedback_values(
    prepared: PreparedFeedback,
    *,
    service_id: str,
    decision: Mapping[str, Any],
    trial_ids: list[str],
) -> dict[str, Any]:
    """Column values of a feedback row, linked to its decision and copying its references."""
    content = {"decision_id": decision["record_id"], "feedback": prepared.item}
    return {
        "record_id": str(uuid.uuid4()),
        "kind": "feedback",
        "recorded_at": datetime.now(UTC),
        "service_id": service_id,
        "hook": decision["hook"],
        "patient_ref": decision["patient_ref"],
        "user_ref": decision["user_ref"],
        "decision_id": decision["record_id"],
        "trial_ids": trial_ids,
        "outcome": prepared.outcome,
        "dedupe_key": prepared.dedupe_key,
        "content": canonical_json(content),
        "content_sha256": None,
    }


HASHED_FIELDS = (
    "seq",
    "record_id",
    "kind",
    "recorded_at",
    "service_id",
    "hook",
    "patient_ref",
    "user_ref",
    "decision_id",
    "trial_ids",
    "outcome",
    "dedupe_key",
    "content",
)
"""Every column but the two hashes: ``prev_hash`` is appended to the hashed text instead.
``content_sha256`` joins them when set, so records written before it existed hash as they did."""


def hash_document(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a record's hash covers, with the timestamp in its one canonical text form."""
    hashed = {name: values[name] for name in HASHED_FIELDS}
    hashed["recorded_at"] = utc_iso(values["recorded_at"])
    hashed["trial_ids"] = list(values["trial_ids"])
    if values.get("content_sha256") is not None:
        hashed["content_sha256"] = values["content_sha256"]
    return hashed


def record_view(values: Mapping[str, Any], content: str | bytes | None = None) -> dict[str, Any]:
    """A stored row as a plain dict: metadata columns plus the parsed content.

    ``content`` is the row's content document when it is kept apart (``content_sha256``).
    """
    return {
        "seq": values["seq"],
        "record_id": values["record_id"],
        "kind": values["kind"],
        "recorded_at": utc_iso(values["recorded_at"]),
        "service_id": values["service_id"],
        "hook": values["hook"],
        "patient_ref": values["patient_ref"],
        "user_ref": values["user_ref"],
        "decision_id": values["decision_id"],
        "trial_ids": list(values["trial_ids"]),
        "outcome": values["outcome"],
        "content": json.loads(values["content"] if content is None else content),
        "prev_hash": values["prev_hash"],
        "hash": values["hash"],
    }
