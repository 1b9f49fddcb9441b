"""Issue 17: databases written before the documents table, and before the compact rows of
revision 0004, still verify, export and replay after the migration, and new records chain onto
their old ones.

``data/v1-audit.sqlite3.gz`` was written by the version before the typed Decision (revision
0001, version 1 records that embed their input resources); ``data/v2-audit.sqlite3.gz`` at
revision 0002 (each input resource a row of ``audit_resource``, a manifest of them and the
decision's content in ``audit_content``; see ``data/write_v2_fixture.py``);
``data/v3-audit.sqlite3.gz`` at revision 0003 (one document per input list and per content,
deltas, text ids and hashes, card rows with their trials; see ``data/write_v3_fixture.py``).
On PostgreSQL the same rows are copied into a database migrated to that revision, then
migrated to the newest.
"""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, Table, create_engine, delete, func, inspect, select, text, update

from service.audit import AuditStore, ExportFilters, MissingAuditContentError
from service.audit._content import Codec, encode_body
from service.audit._documents import DocumentReader
from service.audit._records import card_trial_ids, find_card, stored_decision
from service.audit.export import export_ndjson
from service.audit.models import AuditDocument, AuditRecord
from service.audit.replay import replay_decision
from service.audit.store import MIGRATIONS_DIR
from service.engine.decision import decision_json
from service.engine.replay import evaluate_recorded
from service.review import build_review_page

DATA = Path(__file__).with_name("data")
DecisionFactory = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class OldDatabase:
    name: str
    revision: str
    records: int
    tables: tuple[str, ...]


V1_TABLES = ("criteria_version", "audit_record", "audit_card", "audit_chain_head")
OLD_DATABASES = {
    "v1": OldDatabase("v1-audit.sqlite3.gz", "0001_initial", 8, V1_TABLES),
    "v2": OldDatabase(
        "v2-audit.sqlite3.gz", "0002_content_addressed", 7, (*V1_TABLES, "audit_resource", "audit_content")
    ),
    "v3": OldDatabase("v3-audit.sqlite3.gz", "0003_documents", 10, (*V1_TABLES, "audit_document")),
}


def _old_sqlite(tmp_path: Path, old: OldDatabase) -> str:
    path = tmp_path / old.name.removesuffix(".gz")
    with gzip.open(DATA / old.name, "rb") as packed, path.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    return f"sqlite:///{path}"


def _as_utc(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite keeps naive UTC datetimes; PostgreSQL must not read them in its own time zone."""
    return {
        key: value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }


def _old_postgres(tmp_path: Path, postgres_url: str, old_database: OldDatabase) -> str:
    """The old SQLite rows in a PostgreSQL database at the revision that wrote them."""
    old = create_engine(_old_sqlite(tmp_path, old_database))
    store = AuditStore.from_url(postgres_url)
    store.migrate(old_database.revision)
    try:
        with old.connect() as source, store.engine.begin() as target:
            target.execute(delete(Table("audit_chain_head", MetaData(), autoload_with=target)))
            for name in old_database.tables:
                rows = [
                    _as_utc(dict(row))
                    for row in source.execute(
                        Table(name, MetaData(), autoload_with=source).select()
                    ).mappings()
                ]
                target.execute(Table(name, MetaData(), autoload_with=target).insert(), rows)
    finally:
        old.dispose()
        store.close()
    return postgres_url


@pytest.fixture(params=list(OLD_DATABASES))
def old_database(request: pytest.FixtureRequest) -> OldDatabase:
    return OLD_DATABASES[request.param]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated(request: pytest.FixtureRequest, tmp_path: Path, old_database: OldDatabase) -> Any:
    if request.param == "sqlite":
        url = _old_sqlite(tmp_path, old_database)
    else:
        url = _old_postgres(tmp_path, request.getfixturevalue("postgres_url"), old_database)
    store = AuditStore.from_url(url)
    store.migrate()
    yield store
    store.close()


def _decision_ids(store: AuditStore) -> list[str]:
    return [record["record_id"] for record in store.iter_records(ExportFilters(kind="decision"))]


def test_old_records_verify_export_and_replay(migrated: AuditStore, old_database: OldDatabase) -> None:
    report = migrated.verify()
    assert report.ok, report.problems
    assert report.records_checked == old_database.records

    lines = [json.loads(line) for line in export_ndjson(migrated.iter_records(with_inputs=True))]
    assert len(lines) == old_database.records
    decisions = [line for line in lines if line["kind"] == "decision"]
    assert decisions and all(line["content"]["input_resources"] for line in decisions)

    for decision_id in _decision_ids(migrated):
        replayed = replay_decision(migrated, decision_id, evaluate_recorded)
        assert replayed.agrees, [difference.describe() for difference in replayed.differences]


def test_new_records_chain_onto_old_ones_and_replay(migrated: AuditStore, old_database: OldDatabase) -> None:
    old = migrated.get_decision(_decision_ids(migrated)[0])
    assert old is not None
    fingerprint = stored_decision(old["content"]).criteria_fingerprint
    snapshot = migrated.get_criteria_version(fingerprint)
    assert snapshot is not None
    inputs = migrated.input_resources(old)
    record = {
        "decision_id": str(uuid.uuid4()),
        "recorded_at": datetime.now(UTC).isoformat(),
        "hook": old["hook"],
        "hook_instance": str(uuid.uuid4()),
        "service_id": old["service_id"],
        "user_ref": old["user_ref"],
        "patient_ref": old["patient_ref"],
        "fhir_server": old["content"]["fhir_server"],
        "decision": decision_json(stored_decision(old["content"], snapshot)),
        "input_resources": inputs,
        "cards": [],
    }

    new_ids = [
        migrated.append_decision(record),
        migrated.append_decision({**record, "decision_id": str(uuid.uuid4())}),
    ]

    report = migrated.verify()
    assert report.ok, report.problems
    assert report.records_checked == old_database.records + 2
    new = migrated.get_decision(new_ids[1])
    assert new is not None and new["seq"] == old_database.records + 2
    assert "input_resources" not in new["content"]
    assert migrated.input_resources(new) == inputs
    for decision_id in new_ids:
        assert replay_decision(migrated, decision_id, evaluate_recorded).agrees


V2 = OLD_DATABASES["v2"]


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(text(table))).scalar_one())
    finally:
        engine.dispose()


def test_the_v2_fixture_keeps_resources_one_by_one(tmp_path: Path) -> None:
    url = _old_sqlite(tmp_path, V2)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            assert (
                connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
                == V2.revision
            )
            codecs = set(connection.execute(text("SELECT codec FROM audit_resource")).scalars())
    finally:
        engine.dispose()
    assert codecs == {"zstd+dict:bfadd980ebb93d1a"}
    assert _count(url, "audit_resource") > 50


def test_the_migration_moves_every_v2_document(tmp_path: Path) -> None:
    url = _old_sqlite(tmp_path, V2)
    documents = _count(url, "audit_resource") + _count(url, "audit_content")
    store = AuditStore.from_url(url)
    try:
        store.migrate()
        with store.engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            moved = connection.execute(select(func.count()).select_from(AuditDocument)).scalar_one()
    finally:
        store.close()
    assert moved == documents
    assert not tables & {"audit_resource", "audit_content"}


def _a_v2_resource(store: AuditStore) -> tuple[str, dict[str, Any]]:
    """The record id of the one decision about til-low-anc, and an Observation of its manifest."""
    (record,) = [r for r in store.iter_records(ExportFilters(patient_ref="Patient/til-low-anc"))]
    manifest = bytes.fromhex(record["content"]["input_manifest"]["sha256"])
    with store.engine.connect() as connection:
        references = json.loads(DocumentReader(connection).text(manifest, "input manifest"))
    return record["record_id"], next(r for r in references if r["type"] == "Observation")


@pytest.mark.parametrize("old_database", [V2], ids=["v2"])
def test_verify_finds_an_altered_or_missing_v2_resource(migrated: AuditStore) -> None:
    record_id, reference = _a_v2_resource(migrated)
    address = bytes.fromhex(reference["sha256"])
    name = f"{reference['type']}/{reference['id']} (version {reference['versionId']}, {reference['sha256']})"
    with migrated.engine.begin() as connection:
        connection.execute(
            update(AuditDocument)
            .where(AuditDocument.address == address)
            .values(body=encode_body(b'{"resourceType":"Observation"}', Codec.RESOURCES))
        )
    assert migrated.verify().problems == [
        f"seq 2 (record {record_id}): 1 input resources missing or altered: {name} does not match its address"
    ]

    with migrated.engine.begin() as connection:
        connection.execute(delete(AuditDocument).where(AuditDocument.address == address))
    assert migrated.verify().problems == [
        f"seq 2 (record {record_id}): 1 input resources missing or altered: {name} is missing"
    ]
    stored = migrated.get_decision(record_id)
    assert stored is not None
    with pytest.raises(MissingAuditContentError, match="is missing"):
        migrated.input_resources(stored)


@pytest.mark.parametrize("old_database", [V2], ids=["v2"])
def test_v2_decisions_render_a_review_page(migrated: AuditStore) -> None:
    for decision_id in _decision_ids(migrated):
        record = migrated.get_decision(decision_id)
        assert record is not None
        snapshot = migrated.get_criteria_version(stored_decision(record["content"]).criteria_fingerprint)
        assert snapshot is not None
        page = build_review_page(record, snapshot)
        assert page.trials and all(trial.title for trial in page.trials)


def _migrate(store: AuditStore, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def test_a_downgrade_keeps_every_document_readable(tmp_path: Path) -> None:
    store = AuditStore.from_url(_old_sqlite(tmp_path, V2))
    try:
        store.migrate()
        *_, old = store.iter_records(ExportFilters(kind="decision"))
        migrated_inputs = store.input_resources(old)
        record = {
            **old["content"],
            "decision_id": str(uuid.uuid4()),
            "recorded_at": datetime.now(UTC).isoformat(),
        }
        del record["input_manifest"]
        new_ids = [
            store.append_decision({**record, "input_resources": migrated_inputs[:-1]}),
            store.append_decision(
                {**record, "decision_id": str(uuid.uuid4()), "input_resources": migrated_inputs}
            ),
        ]
        with store.engine.connect() as connection:
            codecs = set(connection.execute(select(AuditDocument.codec)).scalars())
        assert Codec.DELTA in codecs, "the downgrade must meet a delta"
        _migrate(store, V2.revision, down=True)
        store.close()
        store = AuditStore.from_url(str(store.engine.url))
        store.migrate()
        report = store.verify()
        assert report.ok, report.problems
        latest = store.get_decision(new_ids[1])
        assert latest is not None and store.input_resources(latest) == migrated_inputs
    finally:
        store.close()


V3 = OLD_DATABASES["v3"]


@dataclass(frozen=True)
class OldCard:
    card_uuid: str
    record_id: str
    trial_ids: list[str]


def _old_cards(tmp_path: Path, old: OldDatabase) -> list[OldCard]:
    """The card rows of an old database as stored, each with the latest decision that showed it."""
    engine = create_engine(_old_sqlite(tmp_path / "raw", old))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT c.card_uuid, c.record_id, c.trial_ids FROM audit_card c "
                    "JOIN audit_record r ON r.record_id = c.record_id ORDER BY r.seq"
                )
            ).all()
    finally:
        engine.dispose()
    latest = {
        card_uuid: OldCard(card_uuid, record_id, json.loads(trials)) for card_uuid, record_id, trials in rows
    }
    return list(latest.values())


def test_old_cards_find_their_decision_and_its_trials(
    migrated: AuditStore, old_database: OldDatabase, tmp_path: Path
) -> None:
    """Revision 0004 keys cards by the decision's seq and reads their trials from its content:
    each old card finds the decision its row named, with the trials its row held."""
    (tmp_path / "raw").mkdir()
    cards = _old_cards(tmp_path, old_database)
    assert cards
    for card in cards:
        found = migrated.find_decision_by_card(card.card_uuid)
        assert found is not None and found["record_id"] == card.record_id
        shown = find_card(found["content"], card.card_uuid)
        assert shown is not None
        assert card_trial_ids(shown, stored_decision(found["content"])) == card.trial_ids

    card = cards[-1]
    feedback_id, is_new = migrated.append_feedback(
        str(found["service_id"]),
        {"card": card.card_uuid, "outcome": "accepted", "outcomeTimestamp": datetime.now(UTC).isoformat()},
    )
    assert is_new
    (feedback,) = [
        r for r in migrated.iter_records(ExportFilters(kind="feedback")) if r["record_id"] == feedback_id
    ]
    assert (feedback["decision_id"], feedback["trial_ids"]) == (card.record_id, card.trial_ids)
    assert migrated.verify().ok


def test_a_card_id_that_is_no_uuid_is_still_found(tmp_path: Path) -> None:
    store = AuditStore.from_url(_old_sqlite(tmp_path, V3))
    try:
        store.migrate()
        found = store.find_decision_by_card("legacy-card-1")
        assert found is not None and found["patient_ref"] == "Patient/til-low-anc"
        assert [card["uuid"] for card in found["content"]["cards"]] == ["legacy-card-1"]
    finally:
        store.close()


def test_an_id_a_uuid_column_would_respell_stops_the_migration(tmp_path: Path) -> None:
    """A UUID column gives ids back lowercase and hyphenated; any other spelling would no longer
    verify, so the migration refuses it and leaves the database as it was."""
    url = _old_sqlite(tmp_path, V3)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_record SET record_id = upper(record_id) WHERE seq = 10"))
    finally:
        engine.dispose()
    store = AuditStore.from_url(url)
    try:
        with pytest.raises(
            RuntimeError, match=r"audit record seq 10: record_id '[0-9A-F-]{36}' is not a UUID"
        ):
            store.migrate()
        with store.engine.connect() as connection:
            assert (
                connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
                == V3.revision
            )
            assert connection.execute(text("SELECT count(*) FROM audit_record")).scalar_one() == V3.records
    finally:
        store.close()


def test_a_downgrade_to_0003_gives_cards_their_ids_and_trials_back(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    old_cards = _old_cards(tmp_path, V3)
    store = AuditStore.from_url(_old_sqlite(tmp_path, V3))
    try:
        store.migrate()
        *_, latest = store.iter_records(
            ExportFilters(kind="decision", patient_ref="Patient/til-lung-eligible")
        )
        inputs = store.input_resources(latest)
        repeat = {
            **latest["content"],
            "decision_id": str(uuid.uuid4()),
            "recorded_at": datetime.now(UTC).isoformat(),
            "cards": [{**card, "uuid": str(uuid.uuid4())} for card in latest["content"]["cards"]],
            "input_resources": inputs,
        }
        del repeat["input_list"]
        new_id = store.append_decision(repeat)
        with store.engine.connect() as connection:
            kept_in_row = connection.execute(
                select(func.count()).select_from(AuditRecord).where(AuditRecord.content_body.is_not(None))
            ).scalar_one()
        assert kept_in_row == 1, "the repeat keeps its content delta in its row"

        _migrate(store, V3.revision, down=True)
        with store.engine.connect() as connection:
            rows = connection.execute(text("SELECT card_uuid, record_id, trial_ids FROM audit_card")).all()
        cards = {(card_uuid, record_id): json.loads(trials) for card_uuid, record_id, trials in rows}
        for card in old_cards:
            assert cards[(card.card_uuid, card.record_id)] == card.trial_ids
        assert {card["uuid"] for card in repeat["cards"]} == {
            card_uuid for card_uuid, record_id in cards if record_id == new_id
        }

        store.migrate()
        report = store.verify()
        assert report.ok, report.problems
        again = store.get_decision(new_id)
        assert again is not None and store.input_resources(again) == inputs
        assert all(store.find_decision_by_card(card.card_uuid) is not None for card in old_cards)
    finally:
        store.close()


def test_a_round_trip_through_0003_copies_every_batch(tmp_path: Path, make_decision: DecisionFactory) -> None:
    """Both directions copy rows a batch at a time; a store of more than one batch keeps every
    record and card."""
    store = AuditStore.from_url(_old_sqlite(tmp_path, V3))
    try:
        store.migrate()
        records = [make_decision(patient_ref=f"Patient/p{n % 7}") for n in range(520)]
        for record in records:
            store.append_decision(record)
        _migrate(store, V3.revision, down=True)
        store.migrate()
        report = store.verify()
        assert report.ok, report.problems
        assert report.records_checked == V3.records + len(records)
        for record in (records[0], records[499], records[-1]):
            found = store.find_decision_by_card(record["cards"][0]["uuid"])
            assert found is not None and found["record_id"] == record["decision_id"]
    finally:
        store.close()
