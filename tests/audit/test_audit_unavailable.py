"""A store that cannot be reached raises AuditUnavailableError; nothing is silently dropped."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.audit import AuditStore, AuditUnavailableError

from .conftest import PostgresServer, closed_port_url, require_postgres_bin

DecisionFactory = Callable[..., dict[str, Any]]


def test_closed_port_raises_unavailable(make_decision: DecisionFactory) -> None:
    store = AuditStore.from_url(closed_port_url())
    try:
        with pytest.raises(AuditUnavailableError, match="audit store unavailable") as raised:
            store.append_decision(make_decision())
        with pytest.raises(AuditUnavailableError):
            store.append_feedback(
                "til-trials",
                {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2024-05-14T09:40:00Z"},
            )
        with pytest.raises(AuditUnavailableError):
            store.remember_jti("iss", str(uuid.uuid4()), datetime.now(UTC))
    finally:
        store.close()
    assert raised.value.__cause__ is not None


def test_unmigrated_sqlite_raises_unavailable(tmp_path: Path, make_decision: DecisionFactory) -> None:
    store = AuditStore.from_url(f"sqlite:///{tmp_path / 'new' / 'audit.sqlite3'}")
    try:
        with pytest.raises(AuditUnavailableError):
            store.append_decision(make_decision())
    finally:
        store.close()


@pytest.mark.postgres
def test_stopped_server_raises_unavailable_then_recovers(make_decision: DecisionFactory) -> None:
    server = PostgresServer(require_postgres_bin())
    try:
        server.start()
        store = AuditStore.from_url(server.create_database())
        store.migrate()
        store.append_decision(make_decision())

        server.stop()
        with pytest.raises(AuditUnavailableError):
            store.append_decision(make_decision())

        server.start()
        store.append_decision(make_decision())
        report = store.verify()
        store.close()
    finally:
        server.remove()
    assert report.ok and report.records_checked == 2
