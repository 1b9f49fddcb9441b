"""``til-cds prescreen``: export files -> Spark job -> worklist, summary and one audit record."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from service.criteria import CriteriaSet
from service.mappings import Mappings
from service.prescreen.job import JobOptions, run_job
from service.prescreen.read import input_files
from service.prescreen.record import run_record
from service.prescreen.summary import write_summary
from service.prescreen.worklist import file_sha256, write_worklist

__all__ = ["PrescreenResult", "run_prescreen"]


@dataclass
class PrescreenResult:
    worklist_parquet: Path
    worklist_csv: Path
    summary_html: Path
    record: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    problem_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    peak_executor_rss_mb: float | None = None
    seconds_evaluating: float = 0.0
    cores: int = 0


def run_prescreen(
    source_dir: Path,
    out_dir: Path,
    criteria: CriteriaSet,
    mappings: Mappings,
    evaluated_at: datetime,
    options: JobOptions,
    *,
    source: str | None = None,
) -> PrescreenResult:
    """Evaluate every patient in ``source_dir``'s NDJSON files and write the run's outputs."""
    import time

    if evaluated_at.tzinfo is None:
        raise ValueError("the evaluation time must carry a time zone (e.g. 2026-11-29T00:00:00Z)")
    files = input_files(source_dir)
    started = time.perf_counter()
    job = run_job(files, criteria, mappings, evaluated_at, options)
    elapsed = time.perf_counter() - started
    parquet_path, csv_path = write_worklist(job.rows, out_dir)
    summary_path = out_dir / "summary.html"
    write_summary(
        summary_path,
        job.rows,
        files,
        job.problem_counts,
        job.problems,
        criteria,
        evaluated_at,
        job.resources,
    )
    states = Counter(f"{row['trial']}:{row['state']}" for row in job.rows)
    counts = {
        "patients": job.patients,
        "resources": job.resources,
        "rows": len(job.rows),
        "suggested": sum(row["suggested"] for row in job.rows),
        "near_misses": sum(row["near_miss"] for row in job.rows),
        "per_trial_state": dict(sorted(states.items())),
        "bad_input": {f"{name}:{kind}": n for (name, kind), n in sorted(job.problem_counts.items())},
    }
    record = run_record(
        criteria=criteria,
        evaluated_at=evaluated_at,
        files=files,
        counts=counts,
        outputs={
            "worklist.parquet": file_sha256(parquet_path),
            "worklist.csv": file_sha256(csv_path),
            "summary.html": file_sha256(summary_path),
        },
        source=source or str(source_dir),
        master=options.master,
    )
    return PrescreenResult(
        worklist_parquet=parquet_path,
        worklist_csv=csv_path,
        summary_html=summary_path,
        record=record,
        rows=job.rows,
        problem_counts=job.problem_counts,
        peak_executor_rss_mb=job.peak_executor_rss_mb,
        seconds_evaluating=elapsed,
        cores=job.cores,
    )
