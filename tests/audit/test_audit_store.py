"""AuditStore on SQLite and PostgreSQL: decisions, feedback, criteria versions, JWT ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, text
from sqlalchemy.dialects import sqlite

import service.audit
from service.audit import (
    AuditStore,
    AuditUnavailableError,
    DuplicateRecordError,
    ExportFilters,
    InvalidAuditRecordError,
    UnknownCardError,
)
from service.audit._chain import ChainHead, link
from service.audit._records import card_key, prepare_decision
from service.audit.models import AuditBase, AuditCard

DecisionFactory = Callable[..., dict[str, Any]]


def _feedback(card: str, outcome: str = "accepted", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "card": card,
        "outcome": outcome,
        "outcomeTimestamp": "2024-05-14T09:35:10.52Z",
    }
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
    item.update(extra)
    return item


def test_public_names_resolve() -> None:
    for name in service.audit.__all__:
        assert getattr(service.audit, name) is not None


def test_migrations_match_the_models(store: AuditStore) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), AuditBase.metadata)
    assert differences == []


@pytest.mark.postgres
def test_postgres_indexes_what_the_queries_need(postgres_url: str) -> None:
    """What ``compare_metadata`` does not compare: the index methods and storage options."""
    store = AuditStore.from_url(postgres_url)
    try:
        store.migrate()
        with store.engine.connect() as connection:
            definitions = dict(
                connection.execute(
                    text(
                        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('audit_record', 'audit_card')"
                    )
                ).all()
            )
    finally:
        store.close()
    assert set(definitions) == {
        "audit_record_pkey",
        "audit_record_record_id_key",
        "ix_audit_record_recorded_at",
        "ix_audit_record_patient_ref",
        "ix_audit_record_dedupe_key",
        "ix_audit_card_card",
    }
    assert "USING brin (recorded_at) WITH (autosummarize='on')" in definitions["ix_audit_record_recorded_at"]
    assert definitions["ix_audit_record_dedupe_key"].endswith("WHERE (dedupe_key IS NOT NULL)")


def test_migrate_twice_is_harmless(store: AuditStore) -> None:
    store.migrate()
    assert store.verify().ok


def test_decision_round_trip(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    decision_id = store.append_decision(record)

    stored = store.get_decision(decision_id)

    assert decision_id == record["decision_id"]
    assert stored is not None
    assert stored["seq"] == 1
    assert stored["kind"] == "decision"
    assert stored["recorded_at"] == "2024-05-14T09:30:00.250000Z"
    assert stored["trial_ids"] == ["NCT05727904"]
    assert stored["outcome"] == "suggested"
    inputs = record.pop("input_resources")
    assert store.input_resources(stored) == inputs
    assert stored["content"].pop("input_list")["count"] == len(inputs)
    assert stored["content"] == record
    assert store.get_decision(str(uuid.uuid4())) is None


def test_find_decision_by_card(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    store.append_decision(record)
    card_uuid = record["cards"][0]["uuid"]

    found = store.find_decision_by_card(card_uuid)

    assert found is not None and found["record_id"] == record["decision_id"]
    assert store.find_decision_by_card("no-such-card") is None


@pytest.mark.parametrize(
    "suggested", [{"NCT05727904": True}, {"NCT05727904": False}], ids=["cards", "no card"]
)
def test_duplicate_decision_is_refused(
    store: AuditStore, make_decision: DecisionFactory, suggested: dict[str, bool]
) -> None:
    """Told by the INSERT itself (no card row's key to trip over without cards), and the
    chain goes on from the first record."""
    record = make_decision(suggested=suggested)
    store.append_decision(record)
    with pytest.raises(DuplicateRecordError):
        store.append_decision(record)
    store.append_decision(make_decision(suggested=suggested))
    report = store.verify()
    assert report.ok and report.records_checked == 2


def test_a_driver_that_cannot_count_the_rows_written_links_nothing(make_decision: DecisionFactory) -> None:
    """rowcount -1 (a driver or SQLAlchemy that does not keep it) must not move the chain head
    past a row that may not exist: the record is refused as unwritten."""

    class Uncounted:
        dialect = sqlite.dialect()
        statements: list[Any] = []

        def execute(self, statement: Any, parameters: Any = None) -> Any:
            self.statements.append(statement)
            return SimpleNamespace(rowcount=-1)

    connection = Uncounted()
    values = prepare_decision(make_decision()).values
    with pytest.raises(AuditUnavailableError, match="reported -1 rows written"):
        link(connection, ChainHead(0, "0" * 64), values)  # type: ignore[arg-type]
    assert len(connection.statements) == 1, "the head was moved"


@pytest.mark.parametrize(
    "change",
    [
        {"decision_id": "not-a-uuid"},
        {"decision_id": "7E6B1F52-3C0A-4F0E-9D7B-2A1C5E8F9B10"},
        {"recorded_at": "yesterday"},
        {"hook": None},
        {"decision": {"trials": [{"suggested": True}]}},
        {"user_ref": 42},
    ],
)
def test_malformed_decision_is_refused(
    store: AuditStore, make_decision: DecisionFactory, change: dict[str, Any]
) -> None:
    with pytest.raises(InvalidAuditRecordError):
        store.append_decision(make_decision(**change))


def test_feedback_is_linked_to_the_card_decision(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    store.append_decision(record)
    card_uuid = record["cards"][0]["uuid"]

    feedback_id, is_new = store.append_feedback("til-trials", _feedback(card_uuid))

    assert is_new
    [stored] = list(store.iter_records(ExportFilters(kind="feedback")))
    assert stored["record_id"] == feedback_id
    assert stored["decision_id"] == record["decision_id"]
    assert stored["content"]["decision_id"] == record["decision_id"]
    assert stored["trial_ids"] == ["NCT05727904"]
    assert stored["patient_ref"] == "Patient/pat-1"
    assert stored["outcome"] == "accepted"


def test_feedback_is_idempotent(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    store.append_decision(record)
    item = _feedback(record["cards"][0]["uuid"], "overridden")

    first = store.append_feedback("til-trials", item)
    again = store.append_feedback("til-trials", item)
    later = store.append_feedback("til-trials", {**item, "outcomeTimestamp": "2024-05-14T10:00:00Z"})

    assert first[1] and not again[1] and later[1]
    assert again[0] == first[0] and later[0] != first[0]
    assert store.verify().records_checked == 3


def test_bare_coding_override_reason_is_nested(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    store.append_decision(record)
    coding = {"system": "urn:til-cds:override", "code": "declined", "display": "Declined"}

    store.append_feedback(
        "til-trials", _feedback(record["cards"][0]["uuid"], "overridden", overrideReason=coding)
    )

    [stored] = list(store.iter_records(ExportFilters(kind="feedback")))
    assert stored["content"]["feedback"]["overrideReason"] == {"reason": coding}


def test_a_card_is_found_by_its_id_even_when_that_is_no_uuid(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision(suggested={"NCT05727904": True, "NCT06538012": True})
    record["cards"][0]["uuid"] = "card-7"
    record["cards"][1]["extension"] = {"trial_ids": ["NCT06538012", "NCT05727904"]}
    store.append_decision(record)

    found = store.find_decision_by_card("card-7")
    assert found is not None and found["record_id"] == record["decision_id"]
    store.append_feedback("til-trials", _feedback("card-7"))
    store.append_feedback("til-trials", _feedback(record["cards"][1]["uuid"]))

    feedback = list(store.iter_records(ExportFilters(kind="feedback")))
    assert [item["trial_ids"] for item in feedback] == [["NCT05727904"], ["NCT06538012", "NCT05727904"]]
    assert store.verify().ok


def test_a_card_key_hit_is_confirmed_by_the_content(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    """Card keys are 64 bits of a hash, so two ids may share one: a decision whose card row has
    the key of a card it did not show is not that card's decision."""
    store.append_decision(make_decision())
    with store.engine.begin() as connection:
        connection.execute(insert(AuditCard).values(card=card_key("card-it-never-showed"), seq=1))

    assert store.find_decision_by_card("card-it-never-showed") is None
    with pytest.raises(UnknownCardError):
        store.append_feedback("til-trials", _feedback("card-it-never-showed"))


def test_a_decision_id_is_found_in_any_spelling_of_its_uuid_and_text_is_not(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision()
    store.append_decision(record)
    assert store.get_decision("not-a-uuid") is None
    found = store.get_decision(record["decision_id"].upper())
    assert found is not None and found["record_id"] == record["decision_id"]
    assert store.get_decision(record["decision_id"]) is not None


def test_unknown_card_raises(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    store.append_decision(record)
    with pytest.raises(UnknownCardError):
        store.append_feedback("til-trials", _feedback(str(uuid.uuid4())))
    with pytest.raises(UnknownCardError, match="other-service"):
        store.append_feedback("other-service", _feedback(record["cards"][0]["uuid"]))
    assert store.verify().records_checked == 1


@pytest.mark.parametrize(
    "item",
    [
        {"outcome": "accepted", "outcomeTimestamp": "2024-05-14T09:35:10Z"},
        {"card": "c", "outcome": "ignored", "outcomeTimestamp": "2024-05-14T09:35:10Z"},
        {"card": "c", "outcome": "accepted", "outcomeTimestamp": "soon"},
    ],
)
def test_malformed_feedback_is_refused(store: AuditStore, item: dict[str, Any]) -> None:
    with pytest.raises(InvalidAuditRecordError):
        store.append_feedback("til-trials", item)


def test_criteria_version_is_saved_once(store: AuditStore) -> None:
    snapshot = {"trials": [{"id": "NCT05727904", "criteria": []}]}
    store.save_criteria_version("sha256:criteria-v1", snapshot)
    store.save_criteria_version("sha256:criteria-v1", snapshot)

    assert store.get_criteria_version("sha256:criteria-v1") == snapshot
    assert store.get_criteria_version("sha256:unknown") is None


def test_remember_jti_refuses_a_replay(store: AuditStore) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=5)
    assert store.remember_jti("https://ehr.example.org", "jti-1", expires)
    assert not store.remember_jti("https://ehr.example.org", "jti-1", expires)
    assert store.remember_jti("https://other.example.org", "jti-1", expires)


def test_remember_jti_is_shared_between_instances(database_url: str) -> None:
    first, second = AuditStore.from_url(database_url), AuditStore.from_url(database_url)
    try:
        first.migrate()
        expires = datetime.now(UTC) + timedelta(minutes=5)
        assert first.remember_jti("https://ehr.example.org", "jti-shared", expires)
        assert not second.remember_jti("https://ehr.example.org", "jti-shared", expires)
    finally:
        first.close()
        second.close()


def test_expired_jti_are_purged(store: AuditStore) -> None:
    now = datetime.now(UTC)
    store.remember_jti("iss", "old", now - timedelta(minutes=1))
    store.remember_jti("iss", "fresh", now + timedelta(minutes=5))

    assert store.purge_expired_jti(now) == 1
    assert store.remember_jti("iss", "old", now + timedelta(minutes=5))
    assert not store.remember_jti("iss", "fresh", now + timedelta(minutes=5))


def test_counts_per_trial_and_month(store: AuditStore, make_decision: DecisionFactory) -> None:
    may = make_decision(suggested={"NCT-A": True, "NCT-B": True})
    june = make_decision(suggested={"NCT-A": True}, recorded_at="2024-06-02T08:00:00Z")
    store.append_decision(may)
    store.append_decision(june)
    reason = {"reason": {"system": "urn:r", "code": "declined", "display": "Declined"}}
    store.append_feedback("til-trials", _feedback(may["cards"][0]["uuid"], "accepted"))
    store.append_feedback(
        "til-trials", _feedback(may["cards"][1]["uuid"], "overridden", overrideReason=reason)
    )

    rows = store.counts(until=datetime(2024, 7, 1, tzinfo=UTC))

    by_key = {(row["month"], row["trial_id"]): row for row in rows}
    assert by_key[("2024-05", "NCT-A")]["cards_shown"] == 1
    assert by_key[("2024-05", "NCT-B")]["cards_shown"] == 1
    assert by_key[("2024-06", "NCT-A")]["cards_shown"] == 1
    feedback_rows = store.counts(since=datetime(2024, 7, 1, tzinfo=UTC))
    feedback = {row["trial_id"]: row for row in feedback_rows}
    assert feedback["NCT-A"]["accepted"] == 1 and feedback["NCT-A"]["overridden"] == 0
    assert feedback["NCT-B"]["overridden"] == 1
    assert feedback["NCT-B"]["override_reasons"] == [
        {"system": "urn:r", "code": "declined", "display": "Declined", "count": 1}
    ]


def test_card_topic_names_its_trial(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision(suggested={"NCT-A": True, "NCT-B": True})
    for card in record["cards"]:
        trial_id = card.pop("extension")["trial_id"]
        card["source"]["topic"] = {"system": "urn:til-cds:trial", "code": trial_id}
    store.append_decision(record)

    store.append_feedback("til-trials", _feedback(record["cards"][1]["uuid"]))

    [feedback] = list(store.iter_records(ExportFilters(kind="feedback")))
    assert feedback["trial_ids"] == ["NCT-B"]


def test_ping(store: AuditStore, tmp_path: Path) -> None:
    assert store.ping()
    unmigrated = AuditStore.from_url(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    try:
        assert not unmigrated.ping()
    finally:
        unmigrated.close()


def test_feedback_on_a_decision_whose_content_is_lost_is_still_recorded(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    """The clinician's feedback is not refused for a fault of the store's: it is linked to the
    decision its card names, without trials, and ``audit verify`` names the damaged record."""
    record = make_decision()
    store.append_decision(record)
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_document"))

    feedback_id, is_new = store.append_feedback("til-trials", _feedback(record["cards"][0]["uuid"]))

    assert is_new
    (stored,) = store.iter_records(ExportFilters(kind="feedback"))
    assert stored["record_id"] == feedback_id
    assert (stored["decision_id"], stored["trial_ids"]) == (record["decision_id"], [])
    assert any(record["decision_id"] in problem for problem in store.verify().problems)
