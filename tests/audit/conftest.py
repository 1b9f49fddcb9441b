"""Fixtures for the audit tests: a real PostgreSQL server, stores on SQLite and PostgreSQL,
and builders of decision records shaped like the ones the hook route writes.

``PostgresServer`` and the ``postgres_server`` / ``postgres_url`` fixtures live in
``tests/conftest.py`` (shared with ``tests/deploy``); the helpers are re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.audit import AuditStore
from tests.conftest import (  # noqa: F401 (re-exported: the audit tests import them from here)
    PostgresServer,
    closed_port_url,
    free_port,
    require_postgres_bin,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The audit database URL, once for a SQLite file and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[AuditStore]:
    """A migrated store on each backend."""
    audit_store = AuditStore.from_url(database_url)
    audit_store.migrate()
    yield audit_store
    audit_store.close()


DecisionFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_decision() -> DecisionFactory:
    """Build a decision record as the hook route would, overridable per field."""

    def build(
        *,
        patient_ref: str = "Patient/pat-1",
        user_ref: str = "Practitioner/doc-7",
        suggested: dict[str, bool] | None = None,
        recorded_at: str = "2024-05-14T09:30:00.250Z",
        **overrides: Any,
    ) -> dict[str, Any]:
        suggested = suggested if suggested is not None else {"NCT05727904": True}
        patient_id = patient_ref.split("/")[-1]
        verdicts = [
            {
                "trial_id": trial_id,
                "suggested": is_suggested,
                "status": "eligible" if is_suggested else "not_eligible",
                "arms": [{"id": "arm-a", "suggested": is_suggested}],
                "criteria": [
                    {
                        "id": "ecog",
                        "state": "met",
                        "evidence": [{"resource": "Observation/ecog-1/_history/2", "value": 1}],
                    },
                    {
                        "id": "anc",
                        "state": "met" if is_suggested else "not_met",
                        "evidence": [{"resource": "Observation/anc-1/_history/1", "value": 1.9}],
                    },
                ],
            }
            for trial_id, is_suggested in suggested.items()
        ]
        cards = [
            {
                "uuid": str(uuid.uuid4()),
                "summary": f"Consider TIL trial {trial_id}",
                "indicator": "info",
                "source": {"label": "til-cds"},
                "extension": {"trial_id": trial_id},
            }
            for trial_id, is_suggested in suggested.items()
            if is_suggested
        ]
        record: dict[str, Any] = {
            "decision_id": str(uuid.uuid4()),
            "recorded_at": recorded_at,
            "hook": "patient-view",
            "hook_instance": str(uuid.uuid4()),
            "service_id": "til-trials",
            "user_ref": user_ref,
            "patient_ref": patient_ref,
            "fhir_server": "https://ehr.example.org/fhir",
            "criteria_fingerprint": "sha256:criteria-v1",
            "input_fingerprint": "sha256:inputs-1",
            "evaluated_at": recorded_at,
            "inputs": [
                {"resourceType": "Patient", "id": patient_id, "versionId": "3"},
                {"resourceType": "Observation", "id": "anc-1", "versionId": "1"},
            ],
            "input_resources": [
                {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "meta": {"versionId": "3"},
                    "name": [{"family": "Realname", "given": ["Jo"]}],
                    "birthDate": "1961-02-03",
                },
                {
                    "resourceType": "Observation",
                    "id": "anc-1",
                    "meta": {"versionId": "1"},
                    "status": "final",
                    "subject": {"reference": patient_ref},
                    "valueQuantity": {"value": 1.9, "unit": "10*9/L"},
                },
            ],
            "verdicts": verdicts,
            "cards": cards,
            "timing_ms": 41.5,
            "errors": [],
        }
        record.update(overrides)
        return record

    return build
