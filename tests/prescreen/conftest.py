"""One export of the synthetic patients and the real-data Synthea bundles, pre-screened once on local Spark.

The export is written the way a FHIR server's ``$export`` writes it (one NDJSON file per
resource type); the Synthea bundles are read from ``../shared/synthea`` beside the
repository, never copied into it.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from service.prescreen.samples import bundle_resources, write_ndjson
from service.sandbox.synthetic import generate_patients

REPO = Path(__file__).resolve().parents[2]
SYNTHEA = REPO.parent / "shared" / "synthea" / "data"
AT = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
BAD_LINES = (
    b'{"resourceType": "Observation", "id": "cut-off", "subject": {"refer\n'  # line 1: not JSON
    b'{"resourceType": "Claim", "id": "claim-1", "patient": {"reference": "Patient/til-no-data"}}\n'
    b"\n"
    b'{"resourceType": "Observation", "id": "no-subject", "status": "final"}\n'  # line 4
    b'{"resourceType": "Condition", "id": "orphan", "subject": {"reference": "Patient/not-exported"}}\n'
    b"[1, 2]\n"  # line 6: JSON, not a resource
)
"""One file with each kind of bad input (and a blank line, which is no problem)."""


def synthea_patients() -> list[list[dict[str, Any]]]:
    """Each real-data bundle's resources, references resolved as a server stores them."""
    return [
        bundle_resources(json.loads(gzip.decompress(path.read_bytes())))
        for path in sorted(SYNTHEA.glob("*.json.gz"))
    ]


def exported_patients() -> dict[str, list[dict[str, Any]]]:
    """Every patient of the test export by id, its resources in file order."""
    patients: dict[str, list[dict[str, Any]]] = {
        p.id: list(p.resources) for p in generate_patients(AT.date())
    }
    if SYNTHEA.is_dir():
        for resources in synthea_patients():
            patient = next(r for r in resources if r["resourceType"] == "Patient")
            patients[patient["id"]] = resources
    return patients


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export")
    resources = [r for rs in exported_patients().values() for r in rs]
    write_ndjson(sorted(resources, key=lambda r: str(r["resourceType"])), directory)
    (directory / "Mixed.ndjson").write_bytes(BAD_LINES)
    return directory


def run_cli(*args: str | Path, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``til-cds`` in a child process (Spark's JVM and its sockets end with it)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "SPARK_LOCAL_IP": "127.0.0.1"},
        check=False,
    )


def prescreen(source: Path, out: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    """``til-cds prescreen`` at the tests' evaluation time on two local cores; fails loudly."""
    done = run_cli(
        "prescreen",
        "--from",
        source,
        "--out",
        out,
        "--at",
        AT.isoformat(),
        "--no-progress",
        "--master",
        "local[2]",
        "--audit-url",
        f"sqlite:///{out.parent / (out.name + '-audit.sqlite3')}",
        *extra,
    )
    if done.returncode != 0:
        raise AssertionError(f"til-cds prescreen failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def worklist_rows(out: Path) -> list[dict[str, Any]]:
    return list(pq.read_table(out / "worklist.parquet").to_pylist())


@pytest.fixture(scope="session")
def prescreen_out(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prescreen") / "out"
    prescreen(export_dir, out)
    return out


@pytest.fixture(scope="session")
def prescreen_rows(prescreen_out: Path) -> list[dict[str, Any]]:
    return worklist_rows(prescreen_out)
