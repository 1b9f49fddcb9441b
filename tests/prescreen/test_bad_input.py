"""Issue 18: bad lines are counted and shown per file, never stop the run, never vanish."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path
from typing import Any

from service.audit import AuditStore, ExportFilters
from service.prescreen.read import InputFile, read_range, split_ranges

from .conftest import exported_patients


def _cells(summary: str, file_name: str) -> str:
    row = re.search(rf"<tr><td>{re.escape(file_name)}</td>.*?</tr>", summary, re.S)
    assert row is not None, f"{file_name} is not in the summary"
    return html.unescape(row.group(0))


def test_each_kind_of_bad_line_is_counted_for_its_file(prescreen_out: Path) -> None:
    summary = (prescreen_out / "summary.html").read_text(encoding="utf-8")
    mixed = _cells(summary, "Mixed.ndjson")
    for label in (
        "1 × not JSON",
        "1 × a resource type the criteria do not read",
        "1 × no subject: the resource names no Patient",
        "1 × JSON but not a FHIR resource (no resourceType)",
    ):
        assert label in mixed
    assert "1 × resources of a patient with no Patient resource in the export" in _cells(
        summary, "(every file)"
    )
    assert '<tr><td>Mixed.ndjson</td><td class="n">1</td><td>not JSON</td>' in summary  # line 1
    assert '<tr><td>Mixed.ndjson</td><td class="n">4</td><td>no subject' in summary
    assert "none" in _cells(summary, "Patient.ndjson")


def test_the_run_is_one_audit_record_naming_its_inputs_and_outputs(
    prescreen_out: Path, export_dir: Path
) -> None:
    store = AuditStore.from_url(f"sqlite:///{prescreen_out.parent / 'out-audit.sqlite3'}")
    try:
        records = list(store.iter_records(ExportFilters()))
        assert store.verify().ok
    finally:
        store.close()
    assert [r["kind"] for r in records] == ["prescreen"]
    content: dict[str, Any] = records[0]["content"]
    manifest = {item["file"]: item for item in content["input_manifest"]}
    assert sorted(manifest) == sorted(p.name for p in export_dir.iterdir())
    mixed = export_dir / "Mixed.ndjson"
    assert manifest["Mixed.ndjson"]["sha256"] == "sha256:" + hashlib.sha256(mixed.read_bytes()).hexdigest()
    parquet = (prescreen_out / "worklist.parquet").read_bytes()
    assert content["outputs"]["worklist.parquet"] == "sha256:" + hashlib.sha256(parquet).hexdigest()
    assert content["counts"]["patients"] == len(exported_patients())
    assert content["counts"]["bad_input"]["Mixed.ndjson:not_json"] == 1
    assert content["evaluated_at"] == "2026-11-29T08:00:00+00:00"


def test_byte_ranges_read_every_line_exactly_once(export_dir: Path) -> None:
    path = export_dir / "Observation.ndjson"
    file = InputFile(0, str(path), path.name, path.stat().st_size, "")
    whole = [item for _, item in read_range(file, 0, file.size)]
    for size in (1000, 4096, 77_777):
        pieces = [item for r in split_ranges([file], size) for _, item in read_range(*r)]
        assert pieces == whole
    assert len(whole) == path.read_bytes().count(b"\n")
