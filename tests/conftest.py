"""Shared fixtures: the real criteria and mappings, a fixed evaluation time, resource builders,\nand a real PostgreSQL server (``postgres_server``, ``postgres_url``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.bench._postgres import POSTGRES_BIN_GLOB, PostgresServer, find_postgres_bin, free_port
from service.criteria import CriteriaSet, load_criteria
from service.mappings import Mappings, load_mappings

REPO = Path(__file__).resolve().parents[1]
EVALUATED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture(scope="session")
def criteria(mappings: Mappings) -> CriteriaSet:
    return load_criteria(REPO / "criteria", mappings)


@pytest.fixture
def evaluated_at() -> datetime:
    return EVALUATED_AT


def observation(
    code: str,
    value: float | None,
    unit: str | None,
    *,
    days_ago: float = 2,
    ref_high: float | None = None,
    ref_unit: str | None = None,
    status: str = "final",
    id: str = "obs-1",
    patient: str = "p1",
) -> dict[str, Any]:
    """An Observation with a LOINC code and a UCUM valueQuantity, dated relative to EVALUATED_AT."""
    from datetime import timedelta

    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (EVALUATED_AT - timedelta(days=days_ago)).isoformat(),
    }
    if value is not None:
        resource["valueQuantity"] = {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
    if ref_high is not None:
        resource["referenceRange"] = [
            {"high": {"value": ref_high, "code": ref_unit or unit, "system": "http://unitsofmeasure.org"}}
        ]
    return resource


def patient(birth_date: str = "1968-03-01", gender: str = "male", id: str = "p1") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id, "birthDate": birth_date, "gender": gender}


def condition(
    system: str,
    code: str,
    display: str = "",
    *,
    status: str = "active",
    onset: str = "2026-01-10",
    id: str = "cond-1",
    abatement: str | None = None,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": id,
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]
        },
        "code": {"coding": [{"system": system, "code": code, "display": display}]},
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": onset,
    }
    if abatement:
        resource["abatementDateTime"] = abatement
    return resource


def medication(
    text: str,
    *,
    status: str = "completed",
    start: str = "2026-06-01",
    end: str | None = "2026-08-01",
    id: str = "med-1",
    dose_mg: float | None = None,
    per_day: int = 1,
    route: str | None = None,
    rxnorm: str | None = None,
) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if rxnorm:
        concept["coding"] = [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm}]
    period = {"start": start, **({"end": end} if end else {})}
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": id,
        "status": status,
        "medicationCodeableConcept": concept,
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": period,
    }
    if dose_mg is not None:
        dosage: dict[str, Any] = {
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": dose_mg, "unit": "mg", "code": "mg"}}],
        }
        if route:
            dosage["route"] = {"text": route}
        resource["dosage"] = [dosage]
    return resource


LUNG_CANCER = condition("http://hl7.org/fhir/sid/icd-10-cm", "C34.90", "Lung cancer", id="cond-lung")


def closed_port_url() -> str:
    """A PostgreSQL URL where nothing listens, to stand for an unreachable audit database."""
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/audit"


def require_postgres_bin() -> Path:
    """The bin directory, or fail under CI (where PostgreSQL must be installed), else skip."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        message = (
            f"PostgreSQL server binaries not found in {POSTGRES_BIN_GLOB} or on PATH: "
            "install them with `apt-get install -y postgresql` (or set TIL_CDS_PG_BIN)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return bin_dir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session, stopped and removed at the end."""
    server = PostgresServer(require_postgres_bin())
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server, so tests never see each other's rows."""
    return postgres_server.create_database()
