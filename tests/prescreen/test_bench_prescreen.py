"""``til-cds bench --parts prescreen`` in a tiny mode: it runs and reports every number (none asserted)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from service.prescreen.samples import population_resources

from .conftest import run_cli


def test_a_generated_population_has_the_issues_mix() -> None:
    resources = list(population_resources(400, date(2026, 11, 29)))
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    assert len(patients) == 400
    with_cancer = {
        r["subject"]["reference"] for r in resources if r["id"].startswith("pop-") and "-cond-" in r["id"]
    }
    observations: dict[str, int] = {}
    for resource in resources:
        if resource["resourceType"] == "Observation":
            reference = resource["subject"]["reference"]
            observations[reference] = observations.get(reference, 0) + 1
    assert all(50 <= n <= 2100 for n in observations.values())
    assert len(with_cancer) == 400  # every patient has a condition: hypertension or a cloned cancer


def test_quick_prescreen_bench_reports_rate_memory_and_scaling(tmp_path: Path) -> None:
    """In a child process, as a user runs it (Spark's JVM leaves sockets to the collector)."""
    done = run_cli(
        "bench", "--parts", "prescreen", "--quick", "--patients", "30", "--output", "bench.json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))["prescreen"]["runs"]
    assert [(run["patients"], run["cores"]) for run in runs] == [(30, 1), (30, 2)]
    for run in runs:
        assert run["patients_per_second_per_core"] > 0
        assert run["peak_worker_rss_mb"] > 0
    assert "Pre-screen" in done.stdout
