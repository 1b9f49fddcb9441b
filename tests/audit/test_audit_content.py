"""Issue 17: input resources are stored once, by the hash of their canonical JSON, and verify
finds a referenced resource that is missing or altered."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, func, select, update

from service.audit import AuditStore, MissingAuditContentError
from service.audit._content import RESOURCE_CODEC, decode_body, encode_body
from service.audit.export import export_ndjson, pseudonymise_record
from service.audit.models import AuditContent, AuditRecord, AuditResource

DecisionFactory = Callable[..., dict[str, Any]]


def _stored(store: AuditStore) -> tuple[int, int]:
    """(rows, body bytes) of the resource table."""
    with store.engine.connect() as connection:
        rows, size = connection.execute(
            select(func.count(), func.coalesce(func.sum(func.length(AuditResource.body)), 0))
        ).one()
    return int(rows), int(size)


def _address(resource: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_repeat_chart_opens_store_each_resource_once(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    first = make_decision()
    store.append_decision(first)
    after_first = _stored(store)
    for _ in range(3):
        store.append_decision(make_decision())

    assert after_first[0] == len(first["input_resources"]) == 2
    assert _stored(store) == after_first
    with store.engine.connect() as connection:
        contents = connection.execute(select(func.count()).select_from(AuditContent)).scalar_one()
    assert contents == 1 + 4, "one shared input manifest and one content per decision"


def test_another_instance_finds_the_stored_manifest(
    store: AuditStore, database_url: str, make_decision: DecisionFactory
) -> None:
    store.append_decision(make_decision())
    stored = _stored(store)
    other = AuditStore.from_url(database_url)
    try:
        decision_id = other.append_decision(make_decision())
        assert _stored(other) == stored
        record = other.get_decision(decision_id)
        assert record is not None and len(other.input_resources(record)) == 2
    finally:
        other.close()
    assert store.verify().ok


def test_a_new_version_of_a_resource_is_one_more_row(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    store.append_decision(make_decision())
    changed = make_decision()
    changed["input_resources"][1] = {**changed["input_resources"][1], "meta": {"versionId": "2"}}
    decision_id = store.append_decision(changed)

    assert _stored(store)[0] == 3
    stored = store.get_decision(decision_id)
    assert stored is not None
    assert store.input_resources(stored) == changed["input_resources"]


def test_the_address_is_the_sha256_of_canonical_json(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision()
    store.append_decision(record)
    with store.engine.connect() as connection:
        rows = connection.execute(select(AuditResource.sha256, AuditResource.codec, AuditResource.body)).all()
    expected = {_address(resource) for resource in record["input_resources"]}
    assert {row.sha256 for row in rows} == expected
    for row in rows:
        assert row.codec == RESOURCE_CODEC
        assert hashlib.sha256(decode_body(row.codec, row.body)).hexdigest() == row.sha256


def _observation_address(record: dict[str, Any]) -> str:
    return _address(record["input_resources"][1])


def test_verify_finds_an_altered_resource(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    ids = [store.append_decision(record), store.append_decision(make_decision())]
    address = _observation_address(record)
    altered = {**record["input_resources"][1], "valueQuantity": {"value": 0.4, "unit": "10*9/L"}}
    with store.engine.begin() as connection:
        connection.execute(
            update(AuditResource)
            .where(AuditResource.sha256 == address)
            .values(body=encode_body(orjson.dumps(altered, option=orjson.OPT_SORT_KEYS), RESOURCE_CODEC)[1])
        )

    report = store.verify()

    assert not report.ok
    assert report.problems == [
        f"seq {seq} (record {record_id}): 1 input resources missing or altered: "
        f"Observation/anc-1 (version 1, {address}) does not match its address"
        for seq, record_id in enumerate(ids, start=1)
    ]
    stored = store.get_decision(ids[0])
    assert stored is not None
    with pytest.raises(MissingAuditContentError, match="does not match its address"):
        store.input_resources(stored)


def test_verify_finds_a_missing_resource(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    decision_id = store.append_decision(record)
    address = _observation_address(record)
    with store.engine.begin() as connection:
        connection.execute(delete(AuditResource).where(AuditResource.sha256 == address))

    assert store.verify().problems == [
        f"seq 1 (record {decision_id}): 1 input resources missing or altered: "
        f"Observation/anc-1 (version 1, {address}) is missing"
    ]
    stored = store.get_decision(decision_id)
    assert stored is not None
    with pytest.raises(MissingAuditContentError, match="missing"):
        store.input_resources(stored)


def test_verify_finds_a_missing_manifest_and_content(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    ids = [store.append_decision(make_decision()) for _ in range(2)]
    first = store.get_decision(ids[0])
    assert first is not None
    manifest = first["content"]["input_manifest"]["sha256"]
    with store.engine.begin() as connection:
        content = connection.execute(
            select(AuditRecord.content_sha256).where(AuditRecord.seq == 2)
        ).scalar_one()
        connection.execute(delete(AuditContent).where(AuditContent.sha256.in_([manifest, content])))

    assert store.verify().problems == [
        f"seq 1 (record {ids[0]}): input manifest {manifest} is missing",
        f"seq 2 (record {ids[1]}): content {content} is missing",
    ]
    with pytest.raises(MissingAuditContentError, match="missing"):
        store.get_decision(ids[1])


def test_exports_carry_inputs_only_when_not_pseudonymised(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision()
    store.append_decision(record)

    (exported,) = [orjson.loads(line) for line in export_ndjson(store.iter_records(with_inputs=True))]
    (plain,) = list(store.iter_records())
    pseudonymised = pseudonymise_record(plain, b"key")

    assert exported["content"]["input_resources"] == record["input_resources"]
    assert "input_resources" not in plain["content"]
    assert "input_manifest" not in pseudonymised["content"]
    assert pseudonymised["content"]["input_resources_omitted"] == 2
