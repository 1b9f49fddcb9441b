"""Issue 17: databases written before the documents table still verify, export and replay
after the migration, and new records chain onto their old ones.

``data/v1-audit.sqlite3.gz`` was written by the version before the typed Decision (revision
0001, version 1 records that embed their input resources); ``data/v2-audit.sqlite3.gz`` at
revision 0002 (each input resource a row of ``audit_resource``, a manifest of them and the
decision's content in ``audit_content``; see ``data/write_v2_fixture.py``). On PostgreSQL the
same rows are copied into a database migrated to that revision, then migrated to the newest.
"""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
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
from service.audit._records import stored_decision
from service.audit.export import export_ndjson
from service.audit.models import AuditDocument
from service.audit.replay import replay_decision
from service.audit.store import MIGRATIONS_DIR
from service.engine.decision import decision_json
from service.engine.replay import evaluate_recorded
from service.review import build_review_page

DATA = Path(__file__).with_name("data")


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
