"""``til-cds bench``: latency, throughput and memory of the service, each next to its floor.

Parts (choose with ``parts``): ``prefetch`` (in process and over HTTP, per patient size,
next to the time orjson takes to parse the same body), ``fetch`` (no prefetch, against
a real HAPI FHIR server, next to the slowest single search the service issues),
``throughput`` (1, 8 and 32 concurrent clients against one uvicorn worker per core) and
``memory`` (a worker's RSS after start and after many calls) and ``audit`` (the audit
store on PostgreSQL: bytes per first and repeat chart open, decisions per second with 1, 2
and 4 writer processes, the chain lock's hold time, the store's size after many decisions);
when asked for, ``prescreen`` (generated populations through the Spark pre-screen at 1 and 2 cores).  Everything runs on
loopback, in loops bounded by a call count and a time budget.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.bench._stats import load_average, machine
from service.bench.report import format_report

__all__ = ["PARTS", "BenchOptions", "format_report", "run_benchmarks"]

PARTS = ("prefetch", "fetch", "throughput", "memory", "audit", "prescreen")
DEFAULT_PARTS = ("prefetch", "fetch", "throughput", "memory", "audit")


@dataclass(frozen=True)
class BenchOptions:
    """What to run and how much; ``quick()`` gives a run of a minute or so."""

    parts: tuple[str, ...] = DEFAULT_PARTS
    sizes: tuple[int, ...] = (10, 100, 1000, 5000)
    fetch_sizes: tuple[int, ...] = (10, 100, 1000, 5000)
    calls: int = 200
    fetch_calls: int = 20
    seconds_per_size: float = 30.0
    concurrency: tuple[int, ...] = (1, 8, 32)
    throughput_size: int = 100
    throughput_calls: int = 2000
    throughput_seconds: float = 20.0
    workers: int | None = None
    memory_calls: int = 10_000
    memory_size: int = 100
    memory_seconds: float = 600.0
    audit_size: int = 1000
    audit_writers: tuple[int, ...] = (1, 2, 4)
    audit_decisions_per_writer: int = 200
    audit_store_decisions: int = 10_000
    audit_store_patients: int = 100
    audit_first_opens: int = 50
    audit_repeat_opens: int = 1000
    audit_warm_up: int = 200
    audit_url: str | None = None
    fhir_url: str | None = None
    uvicorn_args: tuple[str, ...] = ()
    prescreen_sizes: tuple[int, ...] = (10_000, 100_000)
    prescreen_cores: tuple[int, ...] = (1, 2)
    prescreen_dir: str = "var/bench/prescreen"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        values: dict[str, Any] = {
            "sizes": (10, 100, 1000),
            "fetch_sizes": (10, 100),
            "calls": 20,
            "fetch_calls": 3,
            "seconds_per_size": 5.0,
            "throughput_calls": 100,
            "throughput_seconds": 5.0,
            "memory_calls": 500,
            "memory_seconds": 60.0,
            "audit_size": 100,
            "audit_decisions_per_writer": 20,
            "audit_store_decisions": 200,
            "audit_store_patients": 10,
            "audit_first_opens": 5,
            "audit_repeat_opens": 20,
            "audit_warm_up": 5,
            "prescreen_sizes": (200,),
        }
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown benchmark parts {sorted(unknown)}; choose from {', '.join(PARTS)}")


async def _run(options: BenchOptions) -> dict[str, Any]:
    from service.bench.audit import bench_audit
    from service.bench.fetch import bench_fetch
    from service.bench.inprocess import bench_in_process
    from service.bench.load import bench_http, bench_memory, bench_throughput
    from service.mappings import load_mappings
    from service.settings import Settings

    mappings = load_mappings(Settings(dev=True).mappings_dir)
    sizes, seconds = list(options.sizes), options.seconds_per_size
    result: dict[str, Any] = {"machine": machine(), "options": asdict(options)}
    if "prefetch" in options.parts:
        result["prefetch"] = {
            "in_process": await bench_in_process(sizes, options.calls, seconds, options.audit_url),
            "http": await bench_http(sizes, options.calls, seconds, mappings, options.audit_url),
        }
    if "fetch" in options.parts:
        result["fetch"] = await bench_fetch(
            list(options.fetch_sizes), options.fetch_calls, seconds, options.fhir_url
        )
    if "throughput" in options.parts:
        result["throughput"] = await bench_throughput(
            list(options.concurrency),
            options.throughput_size,
            options.throughput_calls,
            options.throughput_seconds,
            mappings,
            options.workers,
            options.audit_url,
            options.uvicorn_args,
        )
    if "memory" in options.parts:
        result["memory"] = await bench_memory(
            options.memory_calls, options.memory_size, options.memory_seconds, mappings, options.audit_url
        )
    if "audit" in options.parts:
        result["audit"] = await bench_audit(
            options.audit_url,
            size=options.audit_size,
            writers=options.audit_writers,
            decisions_per_writer=options.audit_decisions_per_writer,
            store_decisions=options.audit_store_decisions,
            store_patients=options.audit_store_patients,
            firsts=options.audit_first_opens,
            repeats=options.audit_repeat_opens,
            warm_up=options.audit_warm_up,
        )
    if "prescreen" in options.parts:
        from service.bench.prescreen import bench_prescreen

        result["prescreen"] = bench_prescreen(
            list(options.prescreen_sizes), list(options.prescreen_cores), Path(options.prescreen_dir)
        )
    result["machine"]["load_average_at_end"] = load_average()
    return result


def run_benchmarks(options: BenchOptions, output: Path | None = None) -> dict[str, Any]:
    """Run the chosen parts; write the result as JSON to ``output`` if given, and return it."""
    import json

    result = asyncio.run(_run(options))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
