"""Exports: NDJSON, CSV and a FHIR Bundle of AuditEvents; filters, pseudonyms and secrets."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from service.audit import AuditStore, ExportFilters
from service.audit._documents import DocumentReader
from service.audit.export import (
    EXPORT_FORMATS,
    export_csv,
    export_fhir_bundle,
    export_ndjson,
    pseudonym,
    pseudonymise_record,
)
from service.audit.models import AuditBase

ACCESS_TOKEN = "eyJhbGciOiJSUzM4NCJ9.SECRET-ACCESS-TOKEN-b7c1.sig"

DecisionFactory = Callable[..., dict[str, Any]]
PSEUDONYM_KEY = b"test-pseudonym-key"


def _trail(store: AuditStore, make_decision: DecisionFactory) -> list[dict[str, Any]]:
    """Three decisions (two patients, two months) and an override on the first card."""
    decisions = [
        make_decision(patient_ref="Patient/pat-1", suggested={"NCT-A": True, "NCT-B": False}),
        make_decision(patient_ref="Patient/pat-2", suggested={"NCT-A": False}),
        make_decision(
            patient_ref="Patient/pat-1",
            suggested={"NCT-B": True},
            recorded_at="2024-06-03T12:00:00Z",
            errors=["FHIR server slow: Observation search timed out"],
        ),
    ]
    for decision in decisions:
        store.append_decision(decision)
    store.append_feedback(
        "til-trials",
        {
            "card": decisions[0]["cards"][0]["uuid"],
            "outcome": "overridden",
            "overrideReason": {
                "reason": {"system": "urn:r", "code": "declined", "display": "Declined"},
                "userComment": "patient prefers standard care",
            },
            "outcomeTimestamp": "2024-05-14T09:40:00Z",
        },
    )
    return decisions


def _text(chunks: Any) -> str:
    return "".join(chunks)


def test_ndjson_has_one_line_per_record(store: AuditStore, make_decision: DecisionFactory) -> None:
    _trail(store, make_decision)
    lines = _text(export_ndjson(store.iter_records())).splitlines()
    assert len(lines) == 4
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]


def test_csv_has_a_header_and_one_row_per_record(store: AuditStore, make_decision: DecisionFactory) -> None:
    decisions = _trail(store, make_decision)
    rows = list(csv.DictReader(io.StringIO(_text(export_csv(store.iter_records())))))
    assert len(rows) == 4
    assert rows[0]["record_id"] == decisions[0]["decision_id"]
    assert rows[0]["trial_ids"] == "NCT-A;NCT-B"
    assert rows[0]["suggested_trials"] == "NCT-A"
    assert rows[0]["card_count"] == "1"
    assert rows[3]["kind"] == "feedback" and rows[3]["outcome"] == "overridden"


def test_fhir_bundle_is_valid_and_streams_audit_events(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    decisions = _trail(store, make_decision)
    chunks = list(export_fhir_bundle(store.iter_records()))

    assert len(chunks) == 6  # opening, one chunk per record, closing
    document = json.loads("".join(chunks))
    bundle = Bundle.model_validate(document)
    assert bundle.type == "collection"
    events = [AuditEvent.model_validate(entry["resource"]) for entry in document["entry"]]
    assert [event.id for event in events][:3] == [d["decision_id"] for d in decisions]
    first = document["entry"][0]["resource"]
    assert first["type"]["code"] == "110112"
    assert first["subtype"][0]["code"] == "patient-view"
    assert first["outcome"] == "0"
    assert {"reference": "Patient/pat-1"} in [entity["what"] for entity in first["entity"]]
    assert {"reference": "Observation/anc-1/_history/1"} in [e["what"] for e in first["entity"]]
    assert first["agent"][0]["who"] == {"reference": "Practitioner/doc-7"}
    assert document["entry"][2]["resource"]["outcome"] == "4"
    feedback = document["entry"][3]["resource"]
    assert feedback["entity"][-1]["name"] == "feedback"


def test_empty_bundle_is_valid(store: AuditStore) -> None:
    document = json.loads(_text(export_fhir_bundle(store.iter_records())))
    assert document["entry"] == []
    Bundle.model_validate(document)


@pytest.mark.parametrize(
    ("filters", "expected_seqs"),
    [
        (ExportFilters(patient_ref="Patient/pat-1"), [1, 3, 4]),
        (ExportFilters(trial_id="NCT-B"), [1, 3]),
        (ExportFilters(trial_id="NCT-A", outcome="suggested"), [1]),
        (ExportFilters(trial_id="NCT-A", outcome="not_suggested"), [2]),
        (ExportFilters(trial_id="NCT-"), []),
        (ExportFilters(outcome="suggested"), [1, 3]),
        (ExportFilters(outcome="overridden"), [4]),
        (ExportFilters(kind="feedback"), [4]),
        (ExportFilters(until=datetime(2024, 6, 1, tzinfo=UTC), kind="decision"), [1, 2]),
        (ExportFilters(since=datetime(2024, 6, 1), kind="decision"), [3]),
    ],
)
def test_filters(
    store: AuditStore,
    make_decision: DecisionFactory,
    filters: ExportFilters,
    expected_seqs: list[int],
) -> None:
    _trail(store, make_decision)
    assert [record["seq"] for record in store.iter_records(filters)] == expected_seqs


def test_filters_reject_unknown_values() -> None:
    with pytest.raises(ValueError, match="outcome"):
        ExportFilters(outcome="maybe")
    with pytest.raises(ValueError, match="since is not an ISO 8601 timestamp"):
        ExportFilters.from_text(since="last tuesday")


@pytest.mark.parametrize("export_format", sorted(EXPORT_FORMATS))
def test_pseudonymisation_hides_references(
    store: AuditStore, make_decision: DecisionFactory, export_format: str
) -> None:
    _trail(store, make_decision)
    _media_type, exporter = EXPORT_FORMATS[export_format]

    exported = _text(exporter(store.iter_records(), pseudonym_key=PSEUDONYM_KEY))

    for real in ("pat-1", "pat-2", "doc-7", "Realname"):
        assert real not in exported
    assert pseudonym(PSEUDONYM_KEY, "Patient/pat-1") in exported
    if export_format == "fhir":
        Bundle.model_validate(json.loads(exported))


def test_pseudonymisation_reaches_references_cited_inside_card_text() -> None:
    """Cards cite their evidence in Markdown (`Patient/pat-1`); found by the v1 audit fixture."""
    record = {
        "record_id": "r1",
        "kind": "decision",
        "patient_ref": "Patient/pat-1",
        "user_ref": "Practitioner/doc-7",
        "content": {
            "cards": [{"detail": "- **age**: age 58 — `Patient/pat-1`; see Patient/pat-1/_history/3"}],
            "note": "Patient/pat-12 and Practitioner/doc-77 are other people",
        },
    }
    exported = pseudonymise_record(record, PSEUDONYM_KEY)
    stand_in = pseudonym(PSEUDONYM_KEY, "Patient/pat-1")
    detail = exported["content"]["cards"][0]["detail"]
    assert detail == f"- **age**: age 58 — `{stand_in}`; see {stand_in}/_history/3"
    assert exported["content"]["note"] == record["content"]["note"], "a longer id is another reference"


def test_pseudonyms_are_keyed_and_stable() -> None:
    assert pseudonym(b"k", "Patient/1") == pseudonym(b"k", "Patient/1")
    assert pseudonym(b"k", "Patient/1") != pseudonym(b"other", "Patient/1")
    assert len(pseudonym(b"k", "Patient/1")) == len("pseudo:") + 32


def _readable(row: Any, reader: DocumentReader) -> str:
    """A row as text, with compressed document bodies decoded so a secret would show."""
    values = row._asdict()
    if "body" in values:
        values["body"] = reader.text(values["address"], "document").decode("utf-8")
    return repr(values)


def _database_text(store: AuditStore) -> str:
    with store.engine.connect() as connection:
        reader = DocumentReader(connection)
        return "\n".join(
            _readable(row, reader)
            for table in AuditBase.metadata.sorted_tables
            for row in connection.execute(select(table))
        )


def test_access_tokens_are_never_stored_or_exported(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision(
        fhirAuthorization={
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "scope": "patient/*.read",
        },
        request_headers={"Authorization": f"Bearer {ACCESS_TOKEN}"},
        jwt=ACCESS_TOKEN,
    )
    record["cards"][0]["access_token"] = ACCESS_TOKEN
    record["input_resources"][1]["extension"] = [{"url": "urn:x", "jwt": ACCESS_TOKEN}]
    store.append_decision(record)
    store.append_feedback(
        "til-trials",
        {
            "card": record["cards"][0]["uuid"],
            "outcome": "accepted",
            "acceptedSuggestions": [],
            "outcomeTimestamp": "2024-05-14T09:40:00Z",
            "jwt": ACCESS_TOKEN,
        },
    )

    database = _database_text(store)
    assert "SECRET-ACCESS-TOKEN" not in database
    assert '"url":"urn:x"' in database, "the input resource was not stored, so the test proved nothing"
    for _media_type, exporter in EXPORT_FORMATS.values():
        assert "SECRET-ACCESS-TOKEN" not in _text(exporter(store.iter_records(with_inputs=True)))
    stored = store.get_decision(record["decision_id"])
    assert stored is not None and "fhirAuthorization" not in stored["content"]
    assert stored["content"]["request_headers"] == {}
