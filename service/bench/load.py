"""Over HTTP against a uvicorn subprocess: latency per patient size, throughput, worker memory."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
import orjson

from service.bench._stats import Loop, percentiles, rss_kib
from service.bench.patients import sized_patient
from service.bench.server import start_service
from service.mappings import Mappings
from service.sandbox.synthetic import hook_request

__all__ = ["bench_http", "bench_memory", "bench_throughput", "first_open_body", "request_body"]

_HEADERS = {"Content-Type": "application/json"}


def request_body(size: int, mappings: Mappings) -> bytes:
    """The full-prefetch request body of the sized patient."""
    return orjson.dumps(hook_request(sized_patient(date.today(), size), mappings))


def first_open_body(body: bytes, size: int, call: int) -> bytes:
    """The same chart as another patient: the patient id, and with it every resource id and
    reference, renamed, so the audit store has stored none of its resources yet."""
    patient_id = f"bench-{size}".encode()
    return body.replace(patient_id, patient_id + b"x" + str(call).encode())


async def _post(client: httpx.AsyncClient, url: str, body: bytes) -> None:
    response = await client.post(url, content=body, headers=_HEADERS)
    if response.status_code != 200:
        raise RuntimeError(f"the service answered HTTP {response.status_code}: {response.text[:300]}")


async def bench_http(
    sizes: list[int], calls: int, max_seconds: float, mappings: Mappings, audit_url: str | None = None
) -> list[dict[str, Any]]:
    """Sequential calls to one worker: client-side latency per size, next to the orjson floor.

    The timed calls repeat one chart open (as an oncologist reopening a chart, whose
    resources the audit store already holds); a second loop opens a new chart each call.
    """
    rows = []
    with start_service(audit_url=audit_url) as service:
        async with httpx.AsyncClient(timeout=120) as client:
            for size in sizes:
                body = request_body(size, mappings)
                for _ in range(3):
                    await _post(client, service.hook_url, body)
                floor: list[float] = []
                latency: list[float] = []
                loop = Loop(calls, max_seconds)
                while loop.more():
                    started = time.perf_counter()
                    orjson.loads(body)
                    parsed = time.perf_counter()
                    await _post(client, service.hook_url, body)
                    floor.append(parsed - started)
                    latency.append(time.perf_counter() - parsed)
                first_open: list[float] = []
                loop = Loop(calls, max_seconds)
                while loop.more():
                    new_chart = first_open_body(body, size, len(first_open))
                    started = time.perf_counter()
                    await _post(client, service.hook_url, new_chart)
                    first_open.append(time.perf_counter() - started)
                floor_ms, latency_ms = percentiles(floor), percentiles(latency)
                first_open_ms = percentiles(first_open)
                rows.append(
                    {
                        "observations": size,
                        "body_bytes": len(body),
                        "floor_ms": floor_ms,
                        "latency_ms": latency_ms,
                        "ratio_p50": round(latency_ms["p50"] / floor_ms["p50"], 2),
                        "first_open_latency_ms": first_open_ms,
                        "first_open_ratio_p50": round(first_open_ms["p50"] / floor_ms["p50"], 2),
                    }
                )
    return rows


async def _client_loop(
    client: httpx.AsyncClient, url: str, body: bytes, loop: Loop, samples: list[float]
) -> None:
    while loop.more():
        started = time.perf_counter()
        await _post(client, url, body)
        samples.append(time.perf_counter() - started)


async def bench_throughput(
    concurrency: list[int],
    size: int,
    calls: int,
    max_seconds: float,
    mappings: Mappings,
    workers: int | None = None,
    audit_url: str | None = None,
    uvicorn_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Requests/s and latency with 1, 8, 32 concurrent clients against one worker per core."""
    workers = workers or os.cpu_count() or 1
    body = request_body(size, mappings)
    rows = []
    with start_service(workers=workers, audit_url=audit_url, uvicorn_args=uvicorn_args) as service:
        for clients in concurrency:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                await asyncio.gather(*(_post(client, service.hook_url, body) for _ in range(clients * 2)))
                samples: list[float] = []
                loop = Loop(calls, max_seconds)
                started = time.perf_counter()
                await asyncio.gather(
                    *(_client_loop(client, service.hook_url, body, loop, samples) for _ in range(clients))
                )
                elapsed = time.perf_counter() - started
            rows.append(
                {
                    "clients": clients,
                    "requests": len(samples),
                    "seconds": round(elapsed, 2),
                    "requests_per_second": round(len(samples) / elapsed, 1),
                    "latency_ms": percentiles(samples),
                }
            )
    return {
        "workers": workers,
        "uvicorn_args": list(uvicorn_args),
        "observations": size,
        "body_bytes": len(body),
        "runs": rows,
    }


async def _rss_every_tenth(
    client: httpx.AsyncClient,
    url: str,
    pid: int,
    body_of: Callable[[int], bytes],
    calls: int,
    deadline: float,
) -> list[dict[str, Any]]:
    """``calls`` calls (the n-th sends ``body_of(n)``) until ``deadline``, with the worker's
    RSS after every tenth of them."""
    checkpoints: list[dict[str, Any]] = []
    done = 0
    step = max(1, calls // 10)
    while done < calls and time.perf_counter() < deadline:
        for _ in range(min(step, calls - done)):
            await _post(client, url, body_of(done))
            done += 1
        checkpoints.append({"calls": done, "rss_kib": rss_kib(pid)})
    return checkpoints


async def bench_memory(
    calls: int, size: int, max_seconds: float, mappings: Mappings, audit_url: str | None = None
) -> dict[str, Any]:
    """RSS of one worker after start, after a warm-up, and every tenth of ``calls`` calls;
    then every tenth of ``calls // 10`` opens of charts not seen before (each another
    patient), which fill the facts memo past its bound: what it holds must plateau too."""
    body = request_body(size, mappings)
    with start_service(audit_url=audit_url) as service:
        pid = service.worker_pids()[0]
        after_start = rss_kib(pid)
        warm_up = min(200, max(1, calls // 10))
        deadline = time.perf_counter() + max_seconds
        async with httpx.AsyncClient(timeout=120) as client:
            for _ in range(warm_up):
                await _post(client, service.hook_url, body)
            after_warm_up = rss_kib(pid)
            checkpoints = await _rss_every_tenth(
                client, service.hook_url, pid, lambda _: body, calls, deadline
            )
            new_charts = await _rss_every_tenth(
                client,
                service.hook_url,
                pid,
                lambda opened: first_open_body(body, size, opened),
                max(1, calls // 10),
                deadline + max_seconds / 2,
            )
    done = checkpoints[-1]["calls"] if checkpoints else 0
    opened = new_charts[-1]["calls"] if new_charts else 0
    after_calls = checkpoints[-1]["rss_kib"] if checkpoints else after_warm_up
    growth = None
    if after_calls is not None and after_warm_up is not None:
        growth = after_calls - after_warm_up
    return {
        "observations": size,
        "calls": done,
        "warm_up_calls": warm_up,
        "rss_after_start_kib": after_start,
        "rss_after_warm_up_kib": after_warm_up,
        "rss_after_calls_kib": after_calls,
        "growth_after_warm_up_kib": growth,
        "checkpoints": checkpoints,
        "new_chart_calls": opened,
        "new_chart_checkpoints": new_charts,
        "rss_after_new_charts_kib": new_charts[-1]["rss_kib"] if new_charts else None,
    }
