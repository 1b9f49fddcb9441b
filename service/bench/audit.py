"""The audit store under load: writers per second, chain-lock hold time and bytes stored.

Runs against PostgreSQL with its default durability (fsync and synchronous commit on), a
throwaway cluster unless ``audit_url`` names a server (each measurement gets a database of
its own there, so the sizes are not mixed). Decision records come from the real pipeline
(``service.bench.inprocess.serve_body``). A repeat of a chart open copies the record with what
the hook route would write anew (decision id, hook instance, time of evaluation, card uuids);
a *first* open is a new patient: its reference and every input resource renamed, so none of
them is stored yet.

Measured:

- bytes stored per decision for a first and a repeat open of one patient (growth of every
  table, index and TOAST relation of the database, averaged over many decisions after a
  warm-up, so whole-page growth does not swing the figure: see ``_bytes_per_decision``);
- decisions per second with 1, 2 and 4 writer processes, each appending repeat opens, the
  time each append held the chain lock (``AuditStore.last_chain_lock_seconds``: from the
  moment the head row is locked to the end of the commit that releases it), and how busy the
  lock was (decisions per second × mean hold: near 1 the one chain is the bottleneck);
- the database's size after ``store_decisions`` decisions over ``store_patients`` patients.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from multiprocessing.synchronize import Barrier
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, make_url, text

from service.audit.store import AuditStore
from service.bench._postgres import PostgresServer, find_postgres_bin
from service.bench._stats import percentiles
from service.bench.inprocess import build_bench_runtime, serve_body
from service.bench.patients import sized_patient
from service.sandbox.synthetic import hook_request

__all__ = ["bench_audit"]

_SIZE_QUERY = text(
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'"
)


@contextmanager
def _databases(audit_url: str | None) -> Iterator[Any]:
    """A factory of fresh, migrated PostgreSQL databases (URLs) for one benchmark run."""
    if audit_url is not None:
        url = make_url(audit_url)
        if url.get_backend_name() != "postgresql":
            raise ValueError("the audit benchmark needs PostgreSQL: pass a postgresql:// --audit-url")
        admin = create_engine(url.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")

        def create() -> str:
            name = f"bench_audit_{uuid.uuid4().hex[:12]}"
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            return url.set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False
            )

        try:
            yield create
        finally:
            admin.dispose()
        return
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(
            "the audit benchmark needs PostgreSQL: install it (apt-get install -y postgresql) "
            "or pass --audit-url postgresql://..."
        )
    server = PostgresServer(bin_dir, durable=True)
    try:
        server.start()
        yield server.create_database
    finally:
        server.remove()


def _migrated(url: str) -> AuditStore:
    store = AuditStore.from_url(url)
    store.migrate()
    return store


def _database_bytes(store: AuditStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(_SIZE_QUERY).scalar_one())


def _new_uuids(card: dict[str, Any]) -> dict[str, Any]:
    suggestions = [{**item, "uuid": str(uuid.uuid4())} for item in card.get("suggestions", [])]
    return {**card, "uuid": str(uuid.uuid4()), **({"suggestions": suggestions} if suggestions else {})}


def repeat_open(record: dict[str, Any]) -> dict[str, Any]:
    """The same chart opened again: same inputs and verdicts; new ids, times and card uuids."""
    now = datetime.now(UTC)
    return {
        **record,
        "decision_id": str(uuid.uuid4()),
        "hook_instance": str(uuid.uuid4()),
        "recorded_at": now.isoformat(),
        "decision": {**record["decision"], "evaluated_at": now.isoformat().replace("+00:00", "Z")},
        "cards": [_new_uuids(card) for card in record["cards"]],
    }


def first_open(record: dict[str, Any], tag: str) -> dict[str, Any]:
    """A new patient's chart, none of whose resources is stored yet: reference and ids renamed."""
    renamed = [{**resource, "id": f"{resource.get('id')}-{tag}"} for resource in record["input_resources"]]
    return {
        **repeat_open(record),
        "patient_ref": f"{record['patient_ref']}-{tag}",
        "input_resources": renamed,
    }


async def _records(sizes_and_ids: list[tuple[int, str]]) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """Decision records from the real pipeline, and the criteria version they used."""
    records = []
    async with httpx.AsyncClient() as http:
        runtime = build_bench_runtime(http)
        for size, patient_id in sizes_and_ids:
            patient = sized_patient(date.today(), size, patient_id=patient_id)
            body = orjson.dumps(hook_request(patient, runtime.mappings))
            _, outcome = await serve_body(body, runtime)
            records.append(
                {**outcome.record, "client": "bench", "recorded_at": datetime.now(UTC).isoformat()}
            )
    return records, runtime.criteria.fingerprint, dict(runtime.criteria.snapshot)


def _bytes_per_decision(
    url: str, record: dict[str, Any], firsts: int, repeats: int, warm_up: int
) -> dict[str, Any]:
    """Growth of the database per first and per repeat open, after ``warm_up`` repeat opens.

    Relations grow by whole 8 kB pages, and a B-tree grows by two at its first split: measured
    on near-empty tables over a few decisions, first opens fill free space for nothing and
    repeat opens pay for the new pages. The warm-up takes the tables past their first pages
    and the counts keep each relation's last, part-filled page to a few bytes per decision.
    """
    store = _migrated(url)
    try:
        for _ in range(warm_up):
            store.append_decision(repeat_open(record))
        before = _database_bytes(store)
        for n in range(firsts):
            store.append_decision(first_open(record, f"first{n}"))
        after_firsts = _database_bytes(store)
        for _ in range(repeats):
            store.append_decision(repeat_open(record))
        after_repeats = _database_bytes(store)
    finally:
        store.close()
    first = (after_firsts - before) / firsts
    repeat = (after_repeats - after_firsts) / repeats
    return {
        "first_open_bytes": round(first),
        "repeat_open_bytes": round(repeat),
        "repeat_to_first": round(repeat / first, 4) if first else None,
        "first_opens": firsts,
        "repeat_opens": repeats,
        "warm_up_opens": warm_up,
    }


def _writer(url: str, record: dict[str, Any], count: int, barrier: Barrier, results: Any) -> None:
    """One writer process: warm up, wait for the others, append ``count`` repeat opens."""
    store = AuditStore.from_url(url)
    store.append_decision(repeat_open(record))
    barrier.wait()
    started = time.perf_counter()
    appends, holds = [], []
    for _ in range(count):
        one = repeat_open(record)
        began = time.perf_counter()
        store.append_decision(one)
        appends.append(time.perf_counter() - began)
        hold = getattr(store, "last_chain_lock_seconds", None)
        if hold is not None:
            holds.append(hold)
    results.put({"started": started, "ended": time.perf_counter(), "appends": appends, "holds": holds})
    store.close()


def _writers(url: str, record: dict[str, Any], processes: int, per_writer: int) -> dict[str, Any]:
    _migrated(url).close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_writer, args=(url, record, per_writer, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    runs = [results.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = max(run["ended"] for run in runs) - min(run["started"] for run in runs)
    holds = [hold for run in runs for hold in run["holds"]]
    per_second = processes * per_writer / elapsed
    return {
        "processes": processes,
        "decisions": processes * per_writer,
        "decisions_per_second": round(per_second, 1),
        "append_ms": percentiles([a for run in runs for a in run["appends"]]),
        "chain_lock_hold_ms": percentiles(holds) if holds else None,
        "chain_lock_busy": round(per_second * sum(holds) / len(holds), 3) if holds else None,
    }


def _store_size(url: str, records: list[dict[str, Any]], decisions: int) -> dict[str, Any]:
    store = _migrated(url)
    try:
        for n in range(decisions):
            store.append_decision(repeat_open(records[n % len(records)]))
        size = _database_bytes(store)
    finally:
        store.close()
    return {"decisions": decisions, "patients": len(records), "bytes": size}


async def bench_audit(
    audit_url: str | None,
    *,
    size: int = 1000,
    writers: tuple[int, ...] = (1, 2, 4),
    decisions_per_writer: int = 100,
    firsts: int = 50,
    repeats: int = 1000,
    warm_up: int = 200,
    store_decisions: int = 10_000,
    store_patients: int = 100,
    store_size: int = 100,
) -> dict[str, Any]:
    """Bytes per first and repeat open, writers per second and lock hold, store size."""
    (record,), _, _ = await _records([(size, f"bench-audit-{size}")])
    store_records, _, _ = await _records([(store_size, f"bench-store-{n}") for n in range(store_patients)])
    with _databases(audit_url) as create_database:
        stored = _bytes_per_decision(create_database(), record, firsts, repeats, warm_up)
        runs = [_writers(create_database(), record, count, decisions_per_writer) for count in writers]
        store = _store_size(create_database(), store_records, store_decisions)
    return {
        "observations": size,
        "input_resources": len(record["input_resources"]),
        "per_decision": stored,
        "writers": runs,
        "store": {**store, "observations_per_patient": store_size},
    }
