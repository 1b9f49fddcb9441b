"""Fixtures for the audit tests: a real PostgreSQL server, stores on SQLite and PostgreSQL,
and builders of decision records shaped like the ones the hook route writes.

``PostgresServer`` and the ``postgres_server`` / ``postgres_url`` fixtures live in
``tests/conftest.py`` (shared with ``tests/deploy``); the helpers are re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.audit import AuditStore
from service.engine.decision import (
    CohortVerdict,
    CriterionVerdict,
    Decision,
    Evidence,
    InputReference,
    PatientSummary,
    State,
    TrialVerdict,
    decision_json,
)
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


def _criterion(criterion_id: str, state: State, reference: str, value: float) -> CriterionVerdict:
    return CriterionVerdict(
        id=criterion_id,
        label=criterion_id.upper(),
        type="inclusion",
        text=f"{criterion_id} adequate",
        source="S1",
        state=state,
        reason=f"{criterion_id} {value}",
        evidence=(Evidence(criterion_id, reference, value, date="2024-05-10"),),
    )


def _verdict(trial_id: str, is_suggested: bool) -> TrialVerdict:
    """A trial verdict with one cohort and two criteria; ``anc`` rules it out when not suggested."""
    anc = _criterion("anc", State.MET if is_suggested else State.NOT_MET, "Observation/anc-1/_history/1", 1.9)
    return TrialVerdict(
        trial_id=trial_id,
        title=f"Trial {trial_id}",
        short_title=trial_id,
        registry_url=None,
        status="may_be_eligible" if is_suggested else "ruled_out",
        reason="recorded for the audit tests",
        criteria=(_criterion("ecog", State.MET, "Observation/ecog-1/_history/2", 1.0), anc),
        cohorts=(CohortVerdict("arm-a", "Arm A", "the only arm", "fits" if is_suggested else "may_fit"),),
        blocking=() if is_suggested else ("anc",),
    )


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
        criteria_fingerprint = overrides.pop("criteria_fingerprint", "sha256:criteria-v1")
        data_problems = tuple(overrides.pop("errors", ()))
        try:
            evaluated_at = datetime.fromisoformat(recorded_at)
        except ValueError:  # a malformed recorded_at, for the refusal tests
            evaluated_at = datetime(2024, 5, 14, tzinfo=UTC)
        decision = Decision(
            evaluated_at=evaluated_at,
            data_problems=data_problems,
            criteria_fingerprint=criteria_fingerprint,
            input_fingerprint="sha256:inputs-1",
            patient=PatientSummary(reference=patient_ref, sex="female", age_years=63),
            trials=tuple(_verdict(trial_id, is_suggested) for trial_id, is_suggested in suggested.items()),
            inputs=(
                InputReference("Patient", patient_id, "3"),
                InputReference("Observation", "anc-1", "1"),
            ),
        )
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
            "decision": decision_json(decision),
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
            "cards": cards,
            "timing_ms": 41.5,
        }
        record.update(overrides)
        return record

    return build
