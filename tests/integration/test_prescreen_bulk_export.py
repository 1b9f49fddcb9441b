"""Issue 18: ``til-cds prescreen --fhir URL`` runs the Bulk Data kick-off, poll and download against real HAPI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from service.sandbox.hapi import HapiServer
from service.sandbox.synthetic import generate_patients
from tests.integration.conftest import load_patients
from tests.prescreen.conftest import run_cli


def test_prescreen_from_a_bulk_export_of_hapi(hapi_server: HapiServer, tmp_path: Path) -> None:
    at = datetime.now(UTC).replace(microsecond=0)
    patients = generate_patients(at.date())
    load_patients(hapi_server, patients)
    out = tmp_path / "out"
    done = run_cli(
        "prescreen",
        "--fhir",
        hapi_server.base_url,
        "--out",
        out,
        "--at",
        at.isoformat(),
        "--no-progress",
        "--master",
        "local[2]",
        "--audit-url",
        f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stdout
    exported = {p.name.split(".")[0] for p in (out / "export").glob("*.ndjson")}
    assert {"Patient", "Condition", "Observation", "MedicationStatement"} <= exported
    suggested: dict[str, set[str]] = {}
    for row in pq.read_table(out / "worklist.parquet").to_pylist():
        suggested.setdefault(row["patient"], set())
        if row["suggested"]:
            suggested[row["patient"]].add(row["trial"])
    for patient in patients:
        assert suggested[f"Patient/{patient.id}"] == patient.expected_cards, patient.id
