"""The benchmark result as Markdown tables (what README quotes)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_report"]


def _ms(stats: dict[str, Any]) -> str:
    return f"{stats['p50']:.1f} / {stats['p95']:.1f} / {stats['p99']:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def format_report(result: dict[str, Any]) -> str:
    """Markdown: the machine, then one table per part that ran (times in ms, p50 / p95 / p99)."""
    m = result["machine"]
    lines = [
        f"Run {m['date']} on {m['cores']} cores ({m['cpu_model']}), {m['memory_mib']} MiB, "
        f"{m['implementation']} {m['python']}, {m['platform']}; load average "
        f"{m.get('load_average_at_start')} at start, {m.get('load_average_at_end')} at end.",
    ]
    prefetch = result.get("prefetch")
    if prefetch:
        lines += [
            "",
            "**Prefetch mode** (ms, p50 / p95 / p99; floor = `orjson.loads` of the same body; in process = parse, validate, pipeline, response; ratio = in process / floor at p50; a repeat open finds the chart's facts remembered)",
            "",
        ]
        http = {row["observations"]: row for row in prefetch["http"]}
        rows = []
        for row in prefetch["in_process"]:
            over_http = http.get(row["observations"])
            rows.append(
                [
                    f"{row['observations']:,}",
                    f"{row['body_bytes'] / 1e6:.2f} MB",
                    _ms(row["floor_ms"]),
                    _ms(row["service_ms"]),
                    " / ".join(
                        f"{row['stages_p50_ms'][stage]:.1f}"
                        for stage in ("parse", "validation", "pipeline", "response")
                    ),
                    f"{row['ratio_p50']:.1f}",
                    _ms(row["repeat_open_service_ms"]),
                    f"{row['repeat_open_ratio_p50']:.1f}",
                    _ms(row["audit_write_ms"]),
                    _ms(over_http["latency_ms"]) if over_http else "-",
                    f"{over_http['ratio_p50']:.1f}" if over_http else "-",
                    _ms(over_http["first_open_latency_ms"]) if over_http else "-",
                    f"{over_http['first_open_ratio_p50']:.1f}" if over_http else "-",
                ]
            )
        lines += _table(
            [
                "Observations",
                "body",
                "floor",
                "in process, first open",
                "of which parse / validation / pipeline / response (p50)",
                "ratio",
                "in process, repeat open",
                "repeat ratio",
                "audit write",
                "HTTP, repeat open (incl. audit)",
                "HTTP ratio",
                "HTTP, first open (incl. audit)",
                "first-open ratio",
            ],
            rows,
        )
    fetch = result.get("fetch")
    if fetch:
        lines += ["", f"**Fetch mode** against {fetch['fhir_server']} (ms, p50 / p95 / p99)", ""]
        lines += _table(
            [
                "Observations",
                "resources",
                "service (no prefetch)",
                "slowest single search",
                "ratio",
                "all searches at once, directly",
                "service / all at once",
                "all searches one by one",
            ],
            [
                [
                    f"{row['observations']:,}",
                    f"{row['resources_read']:,}",
                    _ms(row["service_ms"]),
                    f"{_ms(row['slowest_query_ms'])} ({row['slowest_query']})",
                    f"{row['ratio_p50']:.2f}",
                    _ms(row["all_searches_in_parallel_ms"]),
                    f"{row['ratio_to_parallel_p50']:.2f}",
                    f"{_ms(row['all_searches_in_sequence_ms'])} ({row['searches']} searches)",
                ]
                for row in fetch["sizes"]
            ],
        )
    throughput = result.get("throughput")
    if throughput:
        lines += [
            "",
            f"**Throughput**: {throughput['workers']} uvicorn workers, patient with "
            f"{throughput['observations']:,} Observations, audit write included",
            "",
        ]
        lines += _table(
            ["clients", "requests", "requests/s", "latency p50 / p95 / p99 (ms)"],
            [
                [
                    str(run["clients"]),
                    str(run["requests"]),
                    f"{run['requests_per_second']:.1f}",
                    _ms(run["latency_ms"]),
                ]
                for run in throughput["runs"]
            ],
        )
    memory = result.get("memory")
    if memory:

        def mib(kib: int | None) -> str:
            return "-" if kib is None else f"{kib / 1024:.1f} MiB"

        lines += [
            "",
            f"**Memory** of one worker (RSS): {mib(memory['rss_after_start_kib'])} after start, "
            f"{mib(memory['rss_after_warm_up_kib'])} after {memory['warm_up_calls']} calls, "
            f"{mib(memory['rss_after_calls_kib'])} after {memory['calls']:,} more calls "
            f"({memory['observations']} Observations each, the same chart); growth after warm-up "
            f"{mib(memory['growth_after_warm_up_kib'])}. Then {memory.get('new_chart_calls', 0):,} charts "
            "opened once each (every tenth: "
            + ", ".join(mib(point["rss_kib"]) for point in memory.get("new_chart_checkpoints", []))
            + ").",
        ]
    audit = result.get("audit")
    if audit:
        lines += _audit_lines(audit)
    prescreen = result.get("prescreen")
    if prescreen:
        lines += [
            "",
            "**Pre-screen** (Spark local[cores]; wall = end to end incl. JVM start and reading; per core = patients / CPU seconds of the evaluating tasks)",
            "",
        ]
        lines += _table(
            [
                "patients",
                "resources",
                "input",
                "cores",
                "wall s",
                "patients/s",
                "patients/s/core (evaluation)",
                "peak worker RSS",
            ],
            [
                [
                    f"{run['patients']:,}",
                    f"{run['resources']:,}",
                    f"{run['input_mb']:,} MB",
                    str(run["cores"]),
                    f"{run['wall_seconds']}",
                    f"{run['patients_per_second']}",
                    f"{run['patients_per_second_per_core']}",
                    f"{run['peak_worker_rss_mb']} MB",
                ]
                for run in prescreen["runs"]
            ],
        )
    return "\n".join(lines)


def _audit_lines(audit: dict[str, Any]) -> list[str]:
    stored, store = audit["per_decision"], audit["store"]
    lines = [
        "",
        f"**Audit store** on PostgreSQL (fsync on): a {audit['observations']:,}-Observation chart "
        f"({audit['input_resources']:,} input resources) stores {stored['first_open_bytes'] / 1e3:,.1f} kB "
        f"on a first open and {stored['repeat_open_bytes'] / 1e3:,.1f} kB on a repeat open "
        f"({stored['repeat_to_first']:.1%} of a first); {store['decisions']:,} decisions over "
        f"{store['patients']} patients of {store['observations_per_patient']} Observations take "
        f"{store['bytes'] / 1e6:,.1f} MB.",
        "",
    ]
    lines += _table(
        ["writer processes", "decisions", "decisions/s", "append (ms)", "chain lock held (ms)", "lock busy"],
        [
            [
                str(run["processes"]),
                str(run["decisions"]),
                f"{run['decisions_per_second']:.1f}",
                _ms(run["append_ms"]),
                _ms(run["chain_lock_hold_ms"]) if run["chain_lock_hold_ms"] else "-",
                f"{run['chain_lock_busy']:.0%}" if run.get("chain_lock_busy") is not None else "-",
            ]
            for run in audit["writers"]
        ],
    )
    return lines
