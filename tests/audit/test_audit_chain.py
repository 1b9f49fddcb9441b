"""The hash chain: linear under concurrent writers, and tampering is found by verify."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from service.audit import AuditStore, ExportFilters
from service.audit._content import Codec, encode_body
from service.audit._documents import DocumentReader
from service.audit.models import AuditCard, AuditDocument, AuditRecord

DecisionFactory = Callable[..., dict[str, Any]]

THREADS = 8
APPENDS_PER_THREAD = 25


def _fill(store: AuditStore, make_decision: DecisionFactory, count: int) -> list[str]:
    return [store.append_decision(make_decision(patient_ref=f"Patient/p{n}")) for n in range(count)]


def _assert_linear_chain(store: AuditStore, expected: int) -> list[dict[str, Any]]:
    records = list(store.iter_records(ExportFilters()))
    assert [record["seq"] for record in records] == list(range(1, expected + 1))
    for previous, record in pairwise(records):
        assert record["prev_hash"] == previous["hash"]
    report = store.verify()
    assert report.ok, report.problems
    assert report.records_checked == expected
    return records


def test_concurrent_threads_extend_one_chain(store: AuditStore, make_decision: DecisionFactory) -> None:
    written: dict[int, list[str]] = {worker: [] for worker in range(THREADS)}
    failures: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(worker: int) -> None:
        try:
            start.wait()
            for _ in range(APPENDS_PER_THREAD):
                written[worker].append(store.append_decision(make_decision()))
        except BaseException as exc:  # noqa: B036 -- handed to the main thread to fail the test
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    records = _assert_linear_chain(store, THREADS * APPENDS_PER_THREAD)
    position = {record["record_id"]: record["seq"] for record in records}
    for ids in written.values():
        assert [position[record_id] for record_id in ids] == sorted(position[i] for i in ids)


_WRITER = textwrap.dedent(
    """
    import pathlib, sys, time, uuid
    from service.audit import AuditStore
    url, count, writer, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3], pathlib.Path(sys.argv[4])
    store = AuditStore.from_url(url)
    store.verify()
    gate.with_name("ready-" + writer.replace("/", "-")).touch()
    while not gate.exists():
        time.sleep(0.01)
    for n in range(count):
        store.append_decision({
            "decision_id": str(uuid.uuid4()), "recorded_at": "2024-05-14T09:30:00Z",
            "hook": "patient-view", "service_id": "til-trials", "patient_ref": writer,
            "user_ref": None, "cards": [],
            "input_resources": [{"resourceType": "Patient", "id": "shared", "meta": {"versionId": "1"}},
                                {"resourceType": "Observation", "id": "n", "valueInteger": n}],
            "decision": {"evaluated_at": "2024-05-14T09:30:00Z", "criteria_fingerprint": "sha256:c",
                         "input_fingerprint": "sha256:i", "patient": {"reference": writer}},
        })
        time.sleep(0.002)
    store.close()
    """
)
PROCESS_APPENDS = 100


def test_concurrent_processes_extend_one_chain(database_url: str, tmp_path: Path) -> None:
    store = AuditStore.from_url(database_url)
    store.migrate()
    gate = tmp_path / "go"
    try:
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, database_url, str(PROCESS_APPENDS), name, str(gate)]
            )
            for name in ("Patient/writer-a", "Patient/writer-b")
        ]
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < len(writers):
            assert time.monotonic() < deadline, "the writer processes did not start"
            time.sleep(0.01)
        gate.touch()
        assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
        records = _assert_linear_chain(store, 2 * PROCESS_APPENDS)
        authors = [record["patient_ref"] for record in records]
        switches = sum(1 for before, after in pairwise(authors) if before != after)
        assert switches > 1, "the two writers never interleaved; the test proved nothing"
        with store.engine.connect() as connection:
            documents = connection.execute(select(func.count()).select_from(AuditDocument)).scalar_one()
        assert documents == PROCESS_APPENDS + 2 * PROCESS_APPENDS, (
            "each input list once, whichever writer stored it first, and each decision's content"
        )
    finally:
        store.close()


def test_untouched_chain_verifies(store: AuditStore, make_decision: DecisionFactory) -> None:
    _fill(store, make_decision, 5)
    assert store.verify().ok


def _content_address(store: AuditStore, seq: int) -> bytes:
    with store.engine.begin() as connection:
        address: bytes = connection.execute(
            select(AuditRecord.content_sha256).where(AuditRecord.seq == seq)
        ).scalar_one()
    return address


def test_edited_content_is_detected(store: AuditStore, make_decision: DecisionFactory) -> None:
    ids = _fill(store, make_decision, 5)
    key = _content_address(store, 3)
    with store.engine.begin() as connection:
        edited = DocumentReader(connection).text(key, "content").replace(b"NCT05727904", b"NCT99999999")
        connection.execute(
            update(AuditDocument)
            .where(AuditDocument.address == key)
            .values(codec=int(Codec.DECISIONS), base=None, body=encode_body(edited, Codec.DECISIONS))
        )

    report = store.verify()

    assert not report.ok
    assert report.problems == [f"seq 3 (record {ids[2]}): content {key.hex()} does not match its address"]


def test_content_swapped_for_another_is_detected(store: AuditStore, make_decision: DecisionFactory) -> None:
    ids = _fill(store, make_decision, 5)
    with store.engine.begin() as connection:
        connection.execute(
            update(AuditRecord).where(AuditRecord.seq == 3).values(content_sha256=_content_address(store, 4))
        )

    report = store.verify()

    assert report.problems == [f"edited content at seq 3 (record {ids[2]}): hash does not match the record"]


def test_edited_column_is_detected(store: AuditStore, make_decision: DecisionFactory) -> None:
    _fill(store, make_decision, 3)
    with store.engine.begin() as connection:
        connection.execute(
            update(AuditRecord).where(AuditRecord.seq == 2).values(patient_ref="Patient/other")
        )
    report = store.verify()
    assert not report.ok and "edited content at seq 2" in report.problems[0]


@pytest.mark.parametrize(
    ("column", "value"),
    [("record_id", "'tampered'"), ("decision_id", "'not-an-id'"), ("hash", "'f00d'"), ("prev_hash", "'x'")],
)
def test_a_column_edited_into_what_it_cannot_hold_is_reported_not_a_crash(
    store: AuditStore, make_decision: DecisionFactory, column: str, value: str
) -> None:
    """SQLite keeps any text in a UUID or 32-byte column; verify, export and review must still
    read the row and report the edit, not fail on it."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column types refuse such a write")
    _fill(store, make_decision, 3)
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE audit_record SET {column} = {value} WHERE seq = 2")

    report = store.verify()

    assert not report.ok
    assert any(
        problem.startswith(("edited content at seq 2", "broken link at seq 2")) for problem in report.problems
    )
    assert len(list(store.iter_records())) == 3


def test_a_chain_head_hash_edited_into_text_is_reported_not_a_crash(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's column types refuse such a write")
    _fill(store, make_decision, 2)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE audit_chain_head SET last_hash = 'f00d'")

    assert store.verify().problems == [
        "chain head names seq 2 but the last record is seq 2 (records deleted at the end?)"
    ]


def test_rehashed_edit_breaks_the_next_link(store: AuditStore, make_decision: DecisionFactory) -> None:
    _fill(store, make_decision, 3)
    with store.engine.begin() as connection:
        connection.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(hash=b"\xff" * 32))
    problems = store.verify().problems
    assert any(problem.startswith("edited content at seq 2") for problem in problems)
    assert any(problem.startswith("broken link at seq 3") for problem in problems)


def _delete_record(store: AuditStore, seq: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(delete(AuditCard).where(AuditCard.seq == seq))
        connection.execute(delete(AuditRecord).where(AuditRecord.seq == seq))


def test_deleted_record_is_detected(store: AuditStore, make_decision: DecisionFactory) -> None:
    _fill(store, make_decision, 5)
    _delete_record(store, 3)

    report = store.verify()

    assert not report.ok
    assert report.records_checked == 4
    assert report.problems[0].startswith("gap before seq 4")
    assert report.problems[1].startswith("broken link at seq 4")


def test_deleted_first_record_is_detected(store: AuditStore, make_decision: DecisionFactory) -> None:
    _fill(store, make_decision, 3)
    _delete_record(store, 1)
    problems = store.verify().problems
    assert problems[0].startswith("gap before seq 2") and "seq 1 missing" in problems[0]


def test_deleted_last_record_is_detected(store: AuditStore, make_decision: DecisionFactory) -> None:
    _fill(store, make_decision, 3)
    _delete_record(store, 3)
    assert store.verify().problems == [
        "chain head names seq 3 but the last record is seq 2 (records deleted at the end?)"
    ]


@pytest.mark.parametrize("count", [0, 1])
def test_short_chains_verify(store: AuditStore, make_decision: DecisionFactory, count: int) -> None:
    _fill(store, make_decision, count)
    assert store.verify() == type(store.verify())(ok=True, records_checked=count, problems=[])
