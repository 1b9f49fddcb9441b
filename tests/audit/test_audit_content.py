"""Issue 17: a chart open's input resources are one document, stored once by the hash of its
canonical JSON; a repeat open stores no input bytes again and its content as a small delta;
verify finds a document (or the base of a delta) that is missing or altered."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, func, select, update

from service.audit import AuditStore, MissingAuditContentError
from service.audit._content import Codec, encode_body
from service.audit.export import export_ndjson, pseudonymise_record
from service.audit.models import AuditDocument, AuditRecord

DecisionFactory = Callable[..., dict[str, Any]]


def _documents(store: AuditStore) -> dict[bytes, Any]:
    """address -> (codec, base, body) of every stored document."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(AuditDocument.address, AuditDocument.codec, AuditDocument.base, AuditDocument.body)
        ).all()
    return {row.address: row for row in rows}


def _list_address(resources: list[dict[str, Any]]) -> bytes:
    return hashlib.sha256(orjson.dumps(resources, option=orjson.OPT_SORT_KEYS)).digest()


def _content_address(store: AuditStore, decision_id: str) -> bytes:
    with store.engine.connect() as connection:
        address: bytes = connection.execute(
            select(AuditRecord.content_sha256).where(AuditRecord.record_id == decision_id)
        ).scalar_one()
    return address


def _stored_content(store: AuditStore, decision_id: str) -> Any:
    """(codec, base, body) of a decision's content: from its own row when it keeps it there."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(
                AuditRecord.content_sha256,
                AuditRecord.content_codec.label("codec"),
                AuditRecord.content_base.label("base"),
                AuditRecord.content_body.label("body"),
            ).where(AuditRecord.record_id == decision_id)
        ).one()
    return row if row.body is not None else _documents(store)[row.content_sha256]


def test_a_repeat_chart_open_stores_no_input_bytes_again(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    first = make_decision()
    first_id = store.append_decision(first)
    inputs = _list_address(first["input_resources"])
    after_first = _documents(store)
    repeat_ids = [store.append_decision(make_decision()) for _ in range(3)]

    documents = _documents(store)
    assert set(after_first) == {inputs, _content_address(store, first_id)}
    assert after_first[inputs].codec == Codec.RESOURCES and after_first[inputs].base is None
    assert documents == after_first, "no input list again, and each content delta in its decision's row"
    first_content = documents[_content_address(store, first_id)]
    for decision_id in repeat_ids:
        content = _stored_content(store, decision_id)
        assert (content.codec, content.base) == (Codec.DELTA, _content_address(store, first_id))
        assert len(content.body) * 4 <= len(first_content.body)
        stored = store.get_decision(decision_id)
        assert stored is not None and store.input_resources(stored) == first["input_resources"]


def test_another_instance_finds_the_patients_latest_documents(
    store: AuditStore, database_url: str, make_decision: DecisionFactory
) -> None:
    first_id = store.append_decision(make_decision())
    stored = _documents(store)
    other = AuditStore.from_url(database_url)
    try:
        decision_id = other.append_decision(make_decision())
        assert _documents(other) == stored
        assert _stored_content(other, decision_id).base == _content_address(other, first_id)
        record = other.get_decision(decision_id)
        assert record is not None and len(other.input_resources(record)) == 2
    finally:
        other.close()
    assert store.verify().ok


def test_a_changed_chart_is_stored_as_a_delta_of_the_last(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    first = make_decision()
    store.append_decision(first)
    changed = make_decision()
    changed["input_resources"][1] = {**changed["input_resources"][1], "meta": {"versionId": "2"}}
    decision_id = store.append_decision(changed)

    documents = _documents(store)
    new_list = documents[_list_address(changed["input_resources"])]
    assert (new_list.codec, new_list.base) == (Codec.DELTA, _list_address(first["input_resources"]))
    stored = store.get_decision(decision_id)
    assert stored is not None
    assert store.input_resources(stored) == changed["input_resources"]
    assert store.verify().ok


def test_other_patients_never_share_a_base(store: AuditStore, make_decision: DecisionFactory) -> None:
    store.append_decision(make_decision(patient_ref="Patient/a"))
    decision_id = store.append_decision(make_decision(patient_ref="Patient/b"))
    assert _documents(store)[_content_address(store, decision_id)].base is None


def test_the_address_is_the_sha256_of_canonical_json(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision()
    decision_id = store.append_decision(record)
    stored = store.get_decision(decision_id)
    assert stored is not None
    assert stored["content"]["input_list"] == {
        "sha256": _list_address(record["input_resources"]).hex(),
        "count": 2,
    }


def _rewrite(store: AuditStore, address: bytes, text: bytes) -> None:
    """Replace a document's body by ``text`` compressed on its own."""
    with store.engine.begin() as connection:
        connection.execute(
            update(AuditDocument)
            .where(AuditDocument.address == address)
            .values(codec=int(Codec.RESOURCES), base=None, body=encode_body(text, Codec.RESOURCES))
        )


def test_verify_finds_an_altered_input_list(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    ids = [store.append_decision(record), store.append_decision(make_decision())]
    address = _list_address(record["input_resources"])
    altered = [
        record["input_resources"][0],
        {**record["input_resources"][1], "valueQuantity": {"value": 0.4}},
    ]
    _rewrite(store, address, orjson.dumps(altered, option=orjson.OPT_SORT_KEYS))

    report = store.verify()

    assert not report.ok
    assert report.problems == [
        f"seq {seq} (record {record_id}): input list {address.hex()} does not match its address"
        for seq, record_id in enumerate(ids, start=1)
    ]
    stored = store.get_decision(ids[0])
    assert stored is not None
    with pytest.raises(MissingAuditContentError, match="does not match its address"):
        store.input_resources(stored)


def test_verify_finds_a_corrupt_body(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    decision_id = store.append_decision(record)
    address = _list_address(record["input_resources"])
    with store.engine.begin() as connection:
        connection.execute(
            update(AuditDocument).where(AuditDocument.address == address).values(body=b"\0" * 40)
        )

    (problem,) = store.verify().problems
    assert problem.startswith(
        f"seq 1 (record {decision_id}): input list {address.hex()}: stored content does not"
    )


def test_verify_finds_a_missing_input_list(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = make_decision()
    decision_id = store.append_decision(record)
    address = _list_address(record["input_resources"])
    with store.engine.begin() as connection:
        connection.execute(delete(AuditDocument).where(AuditDocument.address == address))

    assert store.verify().problems == [f"seq 1 (record {decision_id}): input list {address.hex()} is missing"]
    stored = store.get_decision(decision_id)
    assert stored is not None
    with pytest.raises(MissingAuditContentError, match="missing"):
        store.input_resources(stored)


def test_verify_finds_a_missing_or_altered_base(store: AuditStore, make_decision: DecisionFactory) -> None:
    ids = [store.append_decision(make_decision()) for _ in range(2)]
    base, delta = (_content_address(store, decision_id) for decision_id in ids)
    assert _stored_content(store, ids[1]).base == base

    _rewrite(store, base, b'{"altered":true}')
    assert store.verify().problems == [
        f"seq 1 (record {ids[0]}): content {base.hex()} does not match its address",
        f"seq 2 (record {ids[1]}): content {delta.hex()}: its base {base.hex()} does not match its address",
    ]

    with store.engine.begin() as connection:
        connection.execute(delete(AuditDocument).where(AuditDocument.address == base))
    assert store.verify().problems == [
        f"seq 1 (record {ids[0]}): content {base.hex()} is missing",
        f"seq 2 (record {ids[1]}): content {delta.hex()}: its base {base.hex()} is missing",
    ]
    with pytest.raises(MissingAuditContentError, match="is missing"):
        store.get_decision(ids[1])


def test_verify_finds_an_altered_content_kept_in_its_row(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    ids = [store.append_decision(make_decision()) for _ in range(2)]
    base, delta = (_content_address(store, decision_id) for decision_id in ids)
    kept = _stored_content(store, ids[1])
    assert kept.codec == Codec.DELTA and store.verify().ok
    base_text = store.get_decision(ids[0])
    assert base_text is not None
    altered = orjson.dumps({**base_text["content"], "decision_id": ids[0]}, option=orjson.OPT_SORT_KEYS)

    for body, problem in (
        (encode_body(altered, Codec.DECISIONS), "does not match its address"),
        (b"\0" * 40, ": stored content does not decompress"),
    ):
        with store.engine.begin() as connection:
            connection.execute(
                update(AuditRecord)
                .where(AuditRecord.seq == 2)
                .values(content_codec=int(Codec.DECISIONS), content_base=None, content_body=body)
            )
        (found,) = store.verify().problems
        assert found.startswith(f"seq 2 (record {ids[1]}): content {delta.hex()}") and problem in found
        with pytest.raises(MissingAuditContentError):
            store.get_decision(ids[1])


def test_a_lost_base_makes_the_next_document_stand_alone(
    store: AuditStore, database_url: str, make_decision: DecisionFactory
) -> None:
    first_id = store.append_decision(make_decision())
    with store.engine.begin() as connection:
        connection.execute(
            delete(AuditDocument).where(AuditDocument.address == _content_address(store, first_id))
        )
    other = AuditStore.from_url(database_url)
    try:
        decision_id = other.append_decision(make_decision())
        assert _documents(other)[_content_address(other, decision_id)].base is None
        assert other.get_decision(decision_id) is not None
    finally:
        other.close()


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
    assert "input_list" not in pseudonymised["content"]
    assert pseudonymised["content"]["input_resources_omitted"] == 2


def test_a_decision_without_inputs_stores_only_its_content(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = make_decision()
    del record["input_resources"]
    decision_id = store.append_decision(record)
    stored = store.get_decision(decision_id)
    assert stored is not None and "input_list" not in stored["content"]
    assert store.input_resources(stored) == []
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(AuditDocument)).scalar_one() == 1
    assert store.verify().ok


def test_a_chart_that_moved_on_starts_a_new_base(store: AuditStore, make_decision: DecisionFactory) -> None:
    store.append_decision(make_decision())
    grown = make_decision()
    grown["input_resources"] += [
        {
            "resourceType": "Observation",
            "id": f"lab-{n}",
            "status": "final",
            "note": [{"text": f"{n * n:x}" * 9}],
        }
        for n in range(60)
    ]
    store.append_decision(grown)
    again = make_decision()
    again["input_resources"] = [*grown["input_resources"], {"resourceType": "Observation", "id": "lab-new"}]
    store.append_decision(again)

    documents = _documents(store)
    assert documents[_list_address(grown["input_resources"])].base is None, "too far from the first list"
    latest = documents[_list_address(again["input_resources"])]
    assert (latest.codec, latest.base) == (Codec.DELTA, _list_address(grown["input_resources"]))
    assert all(row.base is None or documents[row.base].base is None for row in documents.values())
    assert store.verify().ok


@pytest.mark.parametrize("key", ["access_token", "Access_Token", "access_to\u212aen"])
def test_a_secret_key_in_any_case_is_dropped_from_the_content(
    store: AuditStore, make_decision: DecisionFactory, key: str
) -> None:
    """The quick look for secret keys must see what the scrubber drops: ``str.lower()`` folds
    the Kelvin sign to "k", which a bytes comparison does not."""
    record = make_decision(data_sources={"client-key": {key: "s3cret-value", "kept": "yes"}})
    decision_id = store.append_decision(record)

    stored = store.get_decision(decision_id)

    assert stored is not None
    assert stored["content"]["data_sources"] == {"client-key": {"kept": "yes"}}
