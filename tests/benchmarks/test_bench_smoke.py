"""``til-cds bench`` in a tiny quick mode: it runs and its JSON has every expected key (no timing asserted)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.bench import BenchOptions, format_report, run_benchmarks
from service.bench.patients import sized_patient
from service.cli import app

STATS = {"n", "p50", "p95", "p99", "mean"}


def test_sized_patient_has_the_requested_observations() -> None:
    for size in (10, 100):
        kinds = [r["resourceType"] for r in sized_patient(date(2026, 1, 15), size).resources]
        assert kinds.count("Observation") == size
        assert kinds.count("Patient") == 1


def test_quick_bench_writes_every_key(tmp_path: Path) -> None:
    options = BenchOptions.quick(
        parts=("prefetch", "throughput", "memory"),
        sizes=(10,),
        calls=2,
        seconds_per_size=2.0,
        concurrency=(1, 2),
        throughput_size=10,
        throughput_calls=4,
        throughput_seconds=2.0,
        workers=1,
        memory_calls=4,
        memory_size=10,
    )
    output = tmp_path / "bench.json"
    result = run_benchmarks(options, output)
    assert json.loads(output.read_text(encoding="utf-8")) == json.loads(json.dumps(result))
    assert {"date", "cores", "cpu_model", "python"} <= set(result["machine"])
    (in_process,) = result["prefetch"]["in_process"]
    assert {
        "observations",
        "body_bytes",
        "floor_ms",
        "service_ms",
        "ratio_p50",
        "repeat_open_service_ms",
        "repeat_open_ratio_p50",
        "audit_write_ms",
    } <= set(in_process)
    assert set(in_process["service_ms"]) == set(in_process["repeat_open_service_ms"]) == STATS
    (over_http,) = result["prefetch"]["http"]
    assert {"floor_ms", "latency_ms", "ratio_p50"} <= set(over_http)
    runs = result["throughput"]["runs"]
    assert [run["clients"] for run in runs] == [1, 2]
    assert {"requests_per_second", "latency_ms"} <= set(runs[0])
    memory = result["memory"]
    assert {"rss_after_start_kib", "rss_after_calls_kib", "growth_after_warm_up_kib", "calls"} <= set(memory)
    assert memory["new_chart_calls"] == 1 and memory["rss_after_new_charts_kib"] > 0
    assert "fetch" not in result
    assert "Prefetch mode" in format_report(result)


def test_unknown_part_is_refused() -> None:
    outcome = CliRunner().invoke(app, ["bench", "--parts", "prefetch,speed"])
    assert outcome.exit_code != 0
    assert "speed" in outcome.output


@pytest.mark.integration
def test_quick_fetch_against_hapi(tmp_path: Path) -> None:
    options = BenchOptions.quick(parts=("fetch",), fetch_sizes=(10,), fetch_calls=1, seconds_per_size=5.0)
    result = run_benchmarks(options, tmp_path / "bench.json")
    (row,) = result["fetch"]["sizes"]
    assert {"service_ms", "slowest_query_ms", "slowest_query", "ratio_p50", "resources_read"} <= set(row)


@pytest.mark.postgres
def test_quick_audit_bench_writes_every_key(tmp_path: Path, postgres_url: str) -> None:
    options = BenchOptions.quick(
        parts=("audit",),
        audit_size=10,
        audit_writers=(1, 2),
        audit_decisions_per_writer=3,
        audit_store_decisions=6,
        audit_store_patients=2,
        audit_url=postgres_url,
    )
    result = run_benchmarks(options, tmp_path / "bench.json")
    audit = result["audit"]
    assert {"first_open_bytes", "repeat_open_bytes", "repeat_to_first"} <= set(audit["per_decision"])
    assert [run["processes"] for run in audit["writers"]] == [1, 2]
    assert set(audit["writers"][0]["chain_lock_hold_ms"]) == STATS
    assert audit["store"]["decisions"] == 6 and audit["store"]["bytes"] > 0
    assert "Audit store" in format_report(result)
