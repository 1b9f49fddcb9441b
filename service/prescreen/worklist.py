"""Worklist rows -> ``worklist.parquet`` and ``worklist.csv``, byte-identical for the same rows.

Spark's own Parquet writer names part files by task and stamps its version and the
job's schema into the footer, and writes a folder; the rows are few (one per patient
and trial), so the driver writes them with pyarrow instead, sorted, with fixed
settings, into single files.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from service.prescreen.evaluate import WORKLIST_COLUMNS

__all__ = ["SCHEMA", "file_sha256", "write_worklist"]

SCHEMA = pa.schema(
    [
        ("patient", pa.string()),
        ("trial", pa.string()),
        ("suggested", pa.bool_()),
        ("state", pa.string()),
        ("cohorts", pa.list_(pa.string())),
        ("not_before", pa.date32()),
        ("near_miss", pa.bool_()),
        ("near_miss_detail", pa.string()),
        ("unknowns", pa.list_(pa.string())),
        ("needs_review", pa.list_(pa.string())),
        ("reason", pa.string()),
    ]
)
_LIST_SEPARATOR = " | "


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return _LIST_SEPARATOR.join(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_worklist(rows: list[dict[str, Any]], directory: Path) -> tuple[Path, Path]:
    """Write both files (rows sorted by patient and trial); lists in the CSV are joined by ' | '."""
    directory.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda row: (row["patient"], row["trial"]))
    table = pa.Table.from_pylist(ordered, schema=SCHEMA)
    parquet_path = directory / "worklist.parquet"
    pq.write_table(
        table,
        parquet_path,
        compression="zstd",
        compression_level=3,
        version="2.6",
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1 << 20,
        store_schema=True,
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(WORKLIST_COLUMNS)
    for row in ordered:
        writer.writerow([_csv_value(row[column]) for column in WORKLIST_COLUMNS])
    csv_path = directory / "worklist.csv"
    csv_path.write_text(buffer.getvalue(), encoding="utf-8")
    return parquet_path, csv_path


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file, as the run record names its outputs."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
