"""Prefetch mode in one process: ``run_hook`` with a Runtime, next to the orjson floor.

Per call, in the same loop (so both see the same machine state): the floor is
``orjson.loads`` of the request body; the service time is what the route does apart
from HTTP and the audit write — parse the body (the floor again), validate the
``HookRequest``, run the pipeline, serialise the response — with each stage's p50.
Twice: as a first open of the chart (its facts read from the resources) and as a repeat
open (its facts remembered from the open before).

The audit write (criteria version and decision record into a temporary store) is
timed in a pass of its own, because it is I/O and the audit package's own work, and
because it leaves the next parse cold: measured after an audit write, the same
``orjson.loads`` took 3.4–4 ms at 1,000 Observations instead of 1.2–1.5 ms, which
would flatter the ratio.  Both loops run with the app's garbage-collector tuning.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from service.api.main import build_runtime, tune_garbage_collector
from service.audit.store import AuditStore
from service.bench._stats import Loop, percentiles
from service.bench.patients import sized_patient
from service.cdshooks import HookRequest
from service.pipeline import HookOutcome, Runtime, record_outcome, run_hook
from service.sandbox.synthetic import hook_request
from service.settings import Settings

__all__ = [
    "bench_in_process",
    "build_bench_runtime",
    "profile_in_process",
    "serve_body",
    "temporary_audit_store",
]


def build_bench_runtime(http: httpx.AsyncClient) -> Runtime:
    """The Runtime the app builds (``service.api.main.build_runtime``) with the default settings."""
    return build_runtime(Settings(dev=True), http)


@contextmanager
def temporary_audit_store(url: str | None = None) -> Iterator[AuditStore]:
    """A migrated audit store: ``url`` if given, else a SQLite file in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="til-cds-bench-") as folder:
        store = AuditStore.from_url(url or f"sqlite:///{Path(folder) / 'audit.sqlite3'}")
        store.migrate()
        try:
            yield store
        finally:
            store.close()


async def serve_body(body: bytes, runtime: Runtime, *, may_fetch: bool = False) -> tuple[bytes, HookOutcome]:
    """What the hook route does with a body, short of HTTP and the audit write."""
    request = HookRequest.model_validate(orjson.loads(body))
    outcome = await run_hook(request, runtime, datetime.now(UTC), may_fetch=may_fetch)
    return orjson.dumps(outcome.response.model_dump(mode="json", exclude_none=True)), outcome


def write_audit(store: AuditStore, runtime: Runtime, outcome: HookOutcome) -> None:
    """What the route records for one call."""
    outcome.record["recorded_at"] = datetime.now(UTC).isoformat()
    outcome.record["client"] = "dev (unauthenticated)"
    record_outcome(store, runtime, outcome)


_STAGES = ("floor", "parse", "validation", "pipeline", "response")


async def _timed_calls(
    body: bytes, runtime: Runtime, calls: int, max_seconds: float
) -> tuple[dict[str, list[float]], list[float]]:
    """Each stage's seconds per call, and the service's (parse to response), for one body."""
    stages: dict[str, list[float]] = {name: [] for name in _STAGES}
    service: list[float] = []
    loop = Loop(calls, max_seconds)
    while loop.more():
        started = time.perf_counter()
        orjson.loads(body)
        floor_done = time.perf_counter()
        parsed = orjson.loads(body)
        parse_done = time.perf_counter()
        request = HookRequest.model_validate(parsed)
        validated = time.perf_counter()
        outcome = await run_hook(request, runtime, datetime.now(UTC), may_fetch=False)
        evaluated = time.perf_counter()
        orjson.dumps(outcome.response.model_dump(mode="json", exclude_none=True))
        served = time.perf_counter()
        del parsed, request, outcome
        for name, seconds in zip(
            _STAGES,
            (
                floor_done - started,
                parse_done - floor_done,
                validated - parse_done,
                evaluated - validated,
                served - evaluated,
            ),
            strict=True,
        ):
            stages[name].append(seconds)
        service.append(served - floor_done)
    return stages, service


async def bench_in_process(
    sizes: list[int], calls: int, max_seconds: float, audit_url: str | None = None
) -> list[dict[str, Any]]:
    """One row per patient size: floor, service time, ratio, and the audit write.

    A first open is timed with the facts memo off, so that every call reads its resources
    into facts, as the first open of a chart does; a repeat open is the same chart again
    with the memo on, as the app runs.
    """
    rows = []
    async with httpx.AsyncClient() as http:
        runtime = build_bench_runtime(http)
        first_open = replace(runtime, facts_memo_resources=0)
        with temporary_audit_store(audit_url) as store:
            for size in sizes:
                body = orjson.dumps(hook_request(sized_patient(date.today(), size), runtime.mappings))
                for _ in range(3):  # warm caches (UCUM parses, compiled patterns)
                    _, outcome = await serve_body(body, runtime)
                    write_audit(store, runtime, outcome)
                tune_garbage_collector()  # as the app does after start-up
                stages, service = await _timed_calls(body, first_open, calls, max_seconds / 3)
                repeat_stages, repeat_service = await _timed_calls(body, runtime, calls, max_seconds / 3)
                audit: list[float] = []
                loop = Loop(calls, max_seconds / 3)
                while loop.more():
                    _, outcome = await serve_body(body, runtime)
                    started = time.perf_counter()
                    write_audit(store, runtime, outcome)
                    audit.append(time.perf_counter() - started)
                floor_ms, service_ms = percentiles(stages["floor"]), percentiles(service)
                repeat_floor_ms = percentiles(repeat_stages["floor"])
                repeat_service_ms = percentiles(repeat_service)
                gc.unfreeze()  # this size's objects are not the next size's start-up state
                rows.append(
                    {
                        "observations": size,
                        "body_bytes": len(body),
                        "floor_ms": floor_ms,
                        "service_ms": service_ms,
                        "ratio_p50": round(service_ms["p50"] / floor_ms["p50"], 2),
                        "stages_p50_ms": {
                            name: percentiles(values)["p50"] for name, values in stages.items()
                        },
                        "repeat_open_service_ms": repeat_service_ms,
                        "repeat_open_ratio_p50": round(repeat_service_ms["p50"] / repeat_floor_ms["p50"], 2),
                        "repeat_open_pipeline_p50_ms": percentiles(repeat_stages["pipeline"])["p50"],
                        "audit_write_ms": percentiles(audit),
                    }
                )
    return rows


async def profile_in_process(size: int, calls: int, *, with_audit: bool = True) -> str:
    """A pyinstrument profile (text) of ``calls`` in-process calls for one patient size."""
    try:
        from pyinstrument import Profiler
    except ImportError as exc:  # a test extra, not a runtime dependency
        raise RuntimeError("profiling needs pyinstrument: pip install -e '.[test]'") from exc
    async with httpx.AsyncClient() as http:
        runtime = build_bench_runtime(http)
        body = orjson.dumps(hook_request(sized_patient(date.today(), size), runtime.mappings))
        with temporary_audit_store() as store:
            for _ in range(3):
                await serve_body(body, runtime)
            profiler = Profiler(interval=0.0005, async_mode="disabled")
            profiler.start()
            for _ in range(calls):
                _, outcome = await serve_body(body, runtime)
                if with_audit:
                    write_audit(store, runtime, outcome)
            profiler.stop()
    text: str = profiler.output_text(unicode=True, color=False)
    return text
