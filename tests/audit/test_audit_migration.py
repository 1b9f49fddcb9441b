"""Issue 17: a database written before input resources were stored apart still verifies,
exports and replays after the migration, and new records chain onto its old ones.

``data/v1-audit.sqlite3.gz`` was written by the version before the typed Decision (revision
0001, version 1 records that embed their input resources). On PostgreSQL the same rows are
copied into a database migrated to 0001, then migrated to the newest revision.
"""

from __future__ import annotations

import gzip
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, delete

from service.audit import AuditStore, ExportFilters
from service.audit._records import stored_decision
from service.audit.export import export_ndjson
from service.audit.replay import replay_decision
from service.engine.decision import decision_json
from service.engine.replay import evaluate_recorded

OLD_DATABASE = Path(__file__).with_name("data") / "v1-audit.sqlite3.gz"
OLD_RECORDS = 8
OLD_TABLES = ("criteria_version", "audit_record", "audit_card", "audit_chain_head")


def _old_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "v1-audit.sqlite3"
    with gzip.open(OLD_DATABASE, "rb") as packed, path.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    return f"sqlite:///{path}"


def _as_utc(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite keeps naive UTC datetimes; PostgreSQL must not read them in its own time zone."""
    return {
        key: value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value
        for key, value in row.items()
    }


def _old_postgres(tmp_path: Path, postgres_url: str) -> str:
    """The old SQLite rows in a PostgreSQL database at revision 0001."""
    old = create_engine(_old_sqlite(tmp_path))
    store = AuditStore.from_url(postgres_url)
    store.migrate("0001_initial")
    try:
        with old.connect() as source, store.engine.begin() as target:
            target.execute(delete(Table("audit_chain_head", MetaData(), autoload_with=target)))
            for name in OLD_TABLES:
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        url = _old_sqlite(tmp_path)
    else:
        url = _old_postgres(tmp_path, request.getfixturevalue("postgres_url"))
    store = AuditStore.from_url(url)
    store.migrate()
    yield store
    store.close()


def _decision_ids(store: AuditStore) -> list[str]:
    return [record["record_id"] for record in store.iter_records(ExportFilters(kind="decision"))]


def test_old_records_verify_export_and_replay(migrated: AuditStore) -> None:
    report = migrated.verify()
    assert report.ok, report.problems
    assert report.records_checked == OLD_RECORDS

    lines = [json.loads(line) for line in export_ndjson(migrated.iter_records(with_inputs=True))]
    assert len(lines) == OLD_RECORDS
    decisions = [line for line in lines if line["kind"] == "decision"]
    assert decisions and all(line["content"]["input_resources"] for line in decisions)

    for decision_id in _decision_ids(migrated):
        replayed = replay_decision(migrated, decision_id, evaluate_recorded)
        assert replayed.agrees, [difference.describe() for difference in replayed.differences]


def test_new_records_chain_onto_old_ones_and_replay(migrated: AuditStore) -> None:
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
    assert report.records_checked == OLD_RECORDS + 2
    new = migrated.get_decision(new_ids[1])
    assert new is not None and new["seq"] == OLD_RECORDS + 2
    assert "input_resources" not in new["content"]
    assert migrated.input_resources(new) == inputs
    for decision_id in new_ids:
        assert replay_decision(migrated, decision_id, evaluate_recorded).agrees
