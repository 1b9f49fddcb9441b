"""Fetch mode against a real HAPI FHIR server: the service's latency versus its slowest query.

For each sized patient (loaded into HAPI with the sandbox loader), rounds alternate:
the service answering a request with no prefetch (in process, fetching everything from
HAPI with a real httpx client, as the app does), and the service's own searches — the
non-Observation prefetch templates rendered and the combined Observation searches that
fetch mode issues instead of one per group, ``next`` links followed — issued one by one
with httpx.
The slowest of those searches is the floor: a service that runs its searches in
parallel cannot answer faster than its slowest one.  A third timing issues the same
searches all at once, directly, under the service's own concurrency limit: what
parallel fetching costs on this machine before the service does anything, since the
searches compete for the FHIR server's cores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson

from service.bench._stats import Loop, percentiles
from service.bench.inprocess import build_bench_runtime, serve_body
from service.bench.patients import sized_patient
from service.gather.fhir_client import next_link
from service.gather.prefetch import render_template
from service.pipeline import Runtime
from service.sandbox.hapi import HapiServer, build_server, free_port, start_server
from service.sandbox.loader import load_bundles
from service.sandbox.synthetic import hook_request, transaction_bundle

__all__ = ["bench_fetch", "hapi_sandbox", "service_searches"]

_ACCEPT = {"Accept": "application/fhir+json"}


@contextmanager
def hapi_sandbox(base_url: str | None = None) -> Iterator[HapiServer]:
    """``base_url``'s server if given (left running), else our HAPI sandbox on a free port."""
    if base_url:
        yield HapiServer(base_url=base_url.rstrip("/"))
        return
    server = start_server(free_port(), jar=build_server())
    try:
        yield server
    finally:
        server.stop()


async def _search(client: httpx.AsyncClient, base: str, query: str) -> int:
    """One search with all its pages, as the service issues it; returns the resources read."""
    url: str | None = urljoin(base, query)
    count = 0
    while url is not None:
        response = await client.get(url, headers=_ACCEPT)
        response.raise_for_status()
        bundle = orjson.loads(response.content)
        count += len(bundle.get("entry") or [])
        url = next_link(bundle)
    return count


def service_searches(runtime: Runtime, patient_id: str, at: datetime) -> dict[str, str]:
    """The searches the service issues in fetch mode, by name: every non-Observation template,
    and the combined Observation searches that stand for the per-group templates."""
    plan = runtime.observation_searches
    queries = {
        key: render_template(template, {"patientId": patient_id})
        for key, template in runtime.templates.items()
        if key not in plan.keys
    }
    for combined in plan.for_keys(plan.keys, patient_id, at):
        dated = "date-bounded" if "date=ge" in combined.search.query else "any date"
        queries[f"Observation search, {len(combined.keys)} groups, {dated}"] = combined.search.query
    return queries


async def bench_fetch(
    sizes: list[int], calls: int, max_seconds: float, base_url: str | None = None
) -> dict[str, Any]:
    """Per size: service latency without prefetch, slowest single search, and their ratio."""
    rows = []
    started = time.perf_counter()
    with hapi_sandbox(base_url) as server:
        server_start_s = round(time.perf_counter() - started, 1)
        base = server.base_url.rstrip("/") + "/"
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        async with httpx.AsyncClient(limits=limits, follow_redirects=False, timeout=60) as http:
            runtime = build_bench_runtime(http)
            for size in sizes:
                patient = sized_patient(date.today(), size, patient_id=f"bench-fetch-{size}")
                loaded_at = time.perf_counter()
                report = load_bundles(
                    [(patient.id, transaction_bundle(patient))], server.base_url, show_progress=False
                )
                if report.failed:
                    raise RuntimeError(f"loading {patient.id} into HAPI failed: {report.failed}")
                load_s = time.perf_counter() - loaded_at
                body = orjson.dumps(
                    hook_request(patient, runtime.mappings, prefetch="none", fhir_server=server.base_url)
                )
                queries = service_searches(runtime, patient.id, datetime.now(UTC))
                service: list[float] = []
                slowest: list[float] = []
                in_sequence: list[float] = []
                in_parallel: list[float] = []
                slowest_key: dict[str, int] = {}
                resources = 0
                gate = asyncio.Semaphore(runtime.limits.max_concurrency)  # the service's own limit

                async def limited(query: str, gate: asyncio.Semaphore = gate) -> int:
                    async with gate:
                        return await _search(http, base, query)

                for _ in range(2):  # warm HAPI's caches and JIT for this patient
                    await serve_body(body, runtime, may_fetch=True)
                    for query in queries.values():
                        await _search(http, base, query)
                loop = Loop(calls, max_seconds)
                while loop.more():
                    began = time.perf_counter()
                    _, outcome = await serve_body(body, runtime, may_fetch=True)
                    service.append(time.perf_counter() - began)
                    resources = len(outcome.decision.inputs)
                    per_query: dict[str, float] = {}
                    for key, query in queries.items():
                        began = time.perf_counter()
                        await _search(http, base, query)
                        per_query[key] = time.perf_counter() - began
                    key = max(per_query, key=lambda k: per_query[k])
                    slowest.append(per_query[key])
                    in_sequence.append(sum(per_query.values()))
                    slowest_key[key] = slowest_key.get(key, 0) + 1
                    began = time.perf_counter()
                    await asyncio.gather(*(limited(query) for query in queries.values()))
                    in_parallel.append(time.perf_counter() - began)
                service_ms, slowest_ms = percentiles(service), percentiles(slowest)
                parallel_ms = percentiles(in_parallel)
                rows.append(
                    {
                        "observations": size,
                        "resources_read": resources,
                        "load_seconds": round(load_s, 1),
                        "service_ms": service_ms,
                        "slowest_query_ms": slowest_ms,
                        "slowest_query": max(slowest_key, key=lambda k: slowest_key[k]),
                        "all_searches_in_sequence_ms": percentiles(in_sequence),
                        "all_searches_in_parallel_ms": parallel_ms,
                        "searches": len(queries),
                        "ratio_p50": round(service_ms["p50"] / slowest_ms["p50"], 2),
                        "ratio_to_parallel_p50": round(service_ms["p50"] / parallel_ms["p50"], 2),
                    }
                )
    return {
        "fhir_server": "external" if base_url else "HAPI sandbox",
        "server_start_seconds": server_start_s,
        "sizes": rows,
    }
