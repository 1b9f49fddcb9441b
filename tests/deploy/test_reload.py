"""Criteria reload without a restart: a good change is served, a broken file is refused."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api.main import create_app
from service.reload import POLL_ENV, ReloadOutcome
from service.settings import Settings
from tests.api.conftest import started
from tests.conftest import REPO
from tests.deploy.conftest import SERVICE_PATH, start_service, wait_until

TRIAL_FILE = "NCT06538012.yaml"


def copy_clinical_data(target: Path) -> tuple[Path, Path]:
    criteria, mappings = target / "criteria", target / "mappings"
    shutil.copytree(REPO / "criteria", criteria)
    shutil.copytree(REPO / "mappings", mappings)
    return criteria, mappings


def raise_minimum_age(criteria: Path) -> None:
    """A real threshold change: the trial's minimum age goes up by a year."""
    path = criteria / TRIAL_FILE
    text, changed = re.subn(
        r"min_years: (\d+)", lambda m: f"min_years: {int(m.group(1)) + 1}", path.read_text(), count=1
    )
    assert changed == 1, "the test needs an age rule in " + TRIAL_FILE
    path.write_text(text)


def break_trial_file(criteria: Path) -> None:
    (criteria / TRIAL_FILE).write_text("id: [this is not closed\n")


def test_sighup_serves_a_good_change_and_refuses_a_broken_file(
    tmp_path: Path, hook_body: Callable[..., dict[str, Any]]
) -> None:
    criteria, mappings = copy_clinical_data(tmp_path)
    service = start_service(
        tmp_path,
        "reload",
        {
            "TIL_CDS_CRITERIA_DIR": str(criteria),
            "TIL_CDS_MAPPINGS_DIR": str(mappings),
            "TIL_CDS_AUDIT_DATABASE_URL": f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        },
    )
    try:

        def fingerprint() -> str:
            body = httpx.get(service.base_url + "/readyz", timeout=10).json()
            return str(body["criteria_fingerprint"])

        original = fingerprint()
        raise_minimum_age(criteria)
        service.send_signal(signal.SIGHUP)
        wait_until(lambda: fingerprint() != original, 20, "the changed criteria to be served")
        changed = fingerprint()

        break_trial_file(criteria)
        service.send_signal(signal.SIGHUP)
        wait_until(lambda: "refused" in service.log_text(), 20, "the broken file to be refused")
        assert fingerprint() == changed
        assert TRIAL_FILE in service.log_text(), "the log names the broken file"
        response = httpx.post(service.base_url + SERVICE_PATH, json=hook_body(), timeout=60)
        assert response.status_code == 200
        assert response.json()["cards"]
        assert service.process.poll() is None
    finally:
        service.stop()


@pytest.fixture
def app_on_copied_data(tmp_path: Path) -> tuple[FastAPI, Path]:
    criteria, mappings = copy_clinical_data(tmp_path)
    settings = Settings(
        dev=True,
        criteria_dir=criteria,
        mappings_dir=mappings,
        audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        public_base_url="http://testserver",
    )
    return create_app(settings), criteria


async def _fingerprint(client: httpx.AsyncClient) -> str:
    return str((await client.get("/readyz")).json()["criteria_fingerprint"])


async def test_a_reload_keeps_the_http_client_and_refuses_broken_files(
    app_on_copied_data: tuple[FastAPI, Path], hook_body: Callable[..., dict[str, Any]]
) -> None:
    app, criteria = app_on_copied_data
    async for client in started(app):
        reloader, before = app.state.reloader, app.state.runtime
        assert await reloader.reload() is ReloadOutcome.UNCHANGED
        raise_minimum_age(criteria)
        assert await reloader.reload() is ReloadOutcome.LOADED
        after = app.state.runtime
        assert after.criteria.fingerprint != before.criteria.fingerprint
        assert after.http is before.http and after.limits is before.limits
        break_trial_file(criteria)
        assert await reloader.reload() is ReloadOutcome.REFUSED
        assert app.state.runtime is after
        assert (await client.post(SERVICE_PATH, json=hook_body())).status_code == 200


async def test_file_polling_picks_up_a_change(
    app_on_copied_data: tuple[FastAPI, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POLL_ENV, "0.1")
    app, criteria = app_on_copied_data
    async for client in started(app):
        original = await _fingerprint(client)
        raise_minimum_age(criteria)
        for _ in range(100):
            if await _fingerprint(client) != original:
                break
            await asyncio.sleep(0.1)
        assert await _fingerprint(client) != original
