"""An app on the real criteria, a temporary SQLite audit store, and an httpx client over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api.main import create_app
from service.audit import AuditStore, stored_decision
from service.engine.decision import CriterionVerdict, Decision
from service.mappings import Mappings
from service.sandbox.synthetic import SyntheticPatient, generate_patients, hook_request
from service.settings import Settings

SERVICE_URL = "/cds-services/til-trials"
ORDER_SELECT_URL = "/cds-services/til-trials-order-select"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        dev=True,
        audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        public_base_url="http://testserver",
    )


@pytest.fixture
def app_factory(settings: Settings) -> Callable[..., Any]:
    def make(transport: httpx.AsyncBaseTransport | None = None, **overrides: Any) -> FastAPI:
        return create_app(settings.model_copy(update=overrides), transport=transport)

    return make


async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            yield client


@pytest.fixture
async def client(app_factory: Callable[..., FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    async for c in started(app_factory()):
        yield c


@pytest.fixture(scope="session")
def patients() -> dict[str, SyntheticPatient]:
    """Generated relative to today, since the service evaluates at the time of the call."""
    return {p.id: p for p in generate_patients(datetime.now(UTC).date())}


@pytest.fixture
def request_for(patients: dict[str, SyntheticPatient], mappings: Mappings) -> Callable[..., dict[str, Any]]:
    def make(patient_id: str, **kwargs: Any) -> dict[str, Any]:
        return hook_request(patients[patient_id], mappings, **kwargs)

    return make


def recorded_decision(settings: Settings, card_uuid: str) -> Decision:
    """The decision behind a card, as the audit trail holds it."""
    store = AuditStore.from_url(settings.audit_database_url)
    try:
        record = store.find_decision_by_card(card_uuid)
        assert record is not None, f"no decision recorded for card {card_uuid}"
        return stored_decision(record["content"])
    finally:
        store.close()


def criterion(decision: Decision, trial_id: str, criterion_id: str) -> CriterionVerdict:
    trial = decision.trial(trial_id)
    assert trial is not None, trial_id
    return next(c for c in trial.every_criterion() if c.id == criterion_id)
