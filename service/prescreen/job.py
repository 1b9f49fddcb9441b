"""The Spark job: read ranges -> key by patient -> group -> evaluate each group in Python -> collect.

Spark runs embedded (``local[*]``) unless a master URL is given; the same job runs on
a standalone cluster or any master Spark accepts.  Executors get the loaded criteria
and mappings as one broadcast, and, off ``local``, the ``service`` package as a zip,
so nothing but PySpark and our dependencies must be installed on the workers.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from service.criteria import CriteriaSet
from service.mappings import Mappings
from service.prescreen.evaluate import evaluate_patient
from service.prescreen.read import PROBLEMS_KEY, InputFile, Problem, read_ranges, split_ranges

__all__ = ["MISSING_PATIENT_FILE", "JobOptions", "JobResult", "run_job"]

MISSING_PATIENT_FILE = "(every file)"
"""Where a patient's missing Patient resource is reported: it is missing from the whole export."""

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class JobOptions:
    master: str = "local[*]"
    range_bytes: int = 32 << 20
    partitions: int | None = None  # groups after the shuffle; default: 2 per core, at least 2
    progress: bool = True
    executor_memory: str | None = None
    spark_conf: tuple[tuple[str, str], ...] = ()


@dataclass
class JobResult:
    rows: list[dict[str, Any]]
    problems: list[Problem]
    patients: int
    resources: int
    problem_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    peak_executor_rss_mb: float | None = None
    cores: int = 0
    evaluation_cpu_seconds: float = 0.0  # in the evaluating tasks: the groups' parsing, facts and engine


def _package_zip(directory: Path) -> Path:
    """The ``service`` package's Python files as a zip, for executors that do not have it installed."""
    target = directory / "service.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(_PACKAGE_ROOT.rglob("*.py")):
            archive.write(path, str(path.relative_to(_PACKAGE_ROOT.parent)))
    return target


def _session(options: JobOptions) -> Any:
    from pyspark.sql import SparkSession

    if options.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName("til-cds prescreen")
        .master(options.master)
        .config("spark.ui.showConsoleProgress", str(options.progress).lower())
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.executorEnv.PYTHONHASHSEED", "0")
    )
    if os.environ.get("SPARK_LOCAL_IP"):
        builder = builder.config("spark.driver.host", os.environ["SPARK_LOCAL_IP"])
    if options.executor_memory:
        builder = builder.config("spark.executor.memory", options.executor_memory)
    for key, value in options.spark_conf:
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _stop(session: Any) -> None:
    """Stop Spark; the sockets py4j leaves to the collector are closed here, not warned about later."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        session.stop()
        gc.collect()


def _evaluate_partition(
    groups: Iterable[tuple[str, Iterable[tuple[int, int, int, bytes]]]],
    shared: Any,
    at: datetime,
) -> Iterator[tuple[str, Any]]:
    """Rows of every patient in the partition; problem tallies passed on; the worker's peak RSS last."""
    import resource
    import time

    started = time.process_time()
    criteria, mappings = shared.value
    for patient_id, records in groups:
        if patient_id == PROBLEMS_KEY:
            for record in records:
                yield "problems", orjson.loads(record[3])
            continue
        ordered = sorted(records, key=lambda r: r[:3])
        yield "resources", len(ordered)
        if ordered[0][0] != 0:  # the rank of Patient: a group without one has no Patient resource
            detail = f"Patient/{patient_id}: {len(ordered)} resources"
            yield (
                "problems",
                {
                    "counts": [[MISSING_PATIENT_FILE, "patient_missing", 1]],
                    "examples": [[MISSING_PATIENT_FILE, "patient_missing", 0, detail]],
                },
            )
            continue
        resources = [orjson.loads(r[3]) for r in ordered]
        for row in evaluate_patient(patient_id, resources, criteria, mappings, at):
            yield "row", row
    yield "cpu_seconds", time.process_time() - started
    yield "rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(
    files: list[InputFile],
    criteria: CriteriaSet,
    mappings: Mappings,
    evaluated_at: datetime,
    options: JobOptions,
) -> JobResult:
    """Evaluate every patient of ``files``; rows and problems come back to the driver, sorted."""
    session = _session(options)
    context = session.sparkContext
    try:
        with tempfile.TemporaryDirectory(prefix="til-cds-prescreen-") as scratch:
            if not options.master.startswith("local"):
                context.addPyFile(str(_package_zip(Path(scratch))))
            cores = context.defaultParallelism
            ranges = split_ranges(files, options.range_bytes)
            shared = context.broadcast((criteria, mappings))
            at = evaluated_at
            codes = frozenset(c for group in mappings.observation_codes_by_group.values() for c in group)
            partitions = options.partitions or max(2, 2 * cores)
            evaluated = (
                context.parallelize(ranges, len(ranges))
                .mapPartitions(lambda part: read_ranges(part, codes))
                .groupByKey(partitions)
                .mapPartitions(lambda groups: _evaluate_partition(groups, shared, at))
                .collect()
            )
    finally:
        _stop(session)
    rows = [item for kind, item in evaluated if kind == "row"]
    rows.sort(key=lambda row: (row["patient"], row["trial"]))
    counts: Counter[tuple[str, str]] = Counter()
    problems: list[Problem] = []
    for kind, item in evaluated:
        if kind == "problems":
            counts.update({(name, what): n for name, what, n in item["counts"]})
            problems += [(name, what, int(offset), detail) for name, what, offset, detail in item["examples"]]
    return JobResult(
        rows=rows,
        problems=sorted(problems),
        patients=len({row["patient"] for row in rows}),
        resources=sum(item for kind, item in evaluated if kind == "resources"),
        problem_counts=counts,
        peak_executor_rss_mb=max((float(i) for k, i in evaluated if k == "rss"), default=None),
        cores=cores,
        evaluation_cpu_seconds=sum(float(i) for k, i in evaluated if k == "cpu_seconds"),
    )
