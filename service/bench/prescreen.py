"""The ``prescreen`` bench part: generated populations through the Spark job, at 1 and 2 cores.

Reported per run: wall time end to end (JVM start, reading, shuffle, evaluation,
collect), and the CPU seconds the evaluating tasks spent (grouped resources parsed,
facts built, engine run), from which patients per second per core once the data is
read; the peak RSS of a Python worker (where the evaluation runs) stands for an
executor's memory.  Populations are generated once per size into ``directory``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["bench_prescreen"]


def _population(directory: Path, size: int, today: Any) -> Path:
    from service.prescreen.samples import write_population

    target = directory / f"population-{size}-{today.isoformat()}"
    done = target / ".complete"
    if not done.exists():
        write_population(target, size, today)
        done.touch()
    return target


def bench_prescreen(sizes: list[int], cores: list[int], directory: Path) -> dict[str, Any]:
    """One run per size at each core count; the scaling is the ratio of evaluation rates."""
    from service.criteria import load_criteria
    from service.mappings import load_mappings
    from service.prescreen.job import JobOptions, run_job
    from service.prescreen.read import input_files
    from service.settings import Settings

    settings = Settings(dev=True)
    mappings = load_mappings(settings.mappings_dir)
    criteria = load_criteria(settings.criteria_dir, mappings)
    at = datetime.now(UTC).replace(microsecond=0)
    runs = []
    for size in sizes:
        source = _population(directory, size, at.date())
        files = input_files(source)
        for core_count in cores:
            started = time.perf_counter()
            job = run_job(
                files, criteria, mappings, at, JobOptions(master=f"local[{core_count}]", progress=False)
            )
            wall = time.perf_counter() - started
            runs.append(
                {
                    "patients": job.patients,
                    "resources": job.resources,
                    "input_mb": round(sum(f.size for f in files) / 1e6, 1),
                    "cores": core_count,
                    "wall_seconds": round(wall, 1),
                    "patients_per_second": round(job.patients / wall, 1),
                    "evaluation_cpu_seconds": round(job.evaluation_cpu_seconds, 1),
                    "patients_per_second_per_core": round(job.patients / job.evaluation_cpu_seconds, 1)
                    if job.evaluation_cpu_seconds
                    else None,
                    "peak_worker_rss_mb": round(job.peak_executor_rss_mb or 0, 1),
                }
            )
    return {"runs": runs, "evaluated_at": at.isoformat()}
