"""The real service under uvicorn on a free loopback port, and headless Chromium driven by Playwright.

Debian's ``chromium`` package is used (``playwright install`` cannot download browsers
here).  Without it the tests skip, except on CI, where its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright

from service.api.main import create_app
from service.settings import Settings

CHROMIUM = os.environ.get("TIL_CDS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass(frozen=True)
class LiveService:
    base_url: str
    settings: Settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    message = f"headless Chromium not found at {CHROMIUM}: apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        dev=True,
        public_base_url=base_url,
        audit_database_url=f"sqlite:///{tmp_path_factory.mktemp('browser') / 'audit.sqlite3'}",
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="til-cds-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start under uvicorn")
        time.sleep(0.05)
    yield LiveService(base_url, settings)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def chromium_browser(chromium_path: str) -> Iterator[Browser]:
    """Playwright's sync API marks its own event loop as running in this thread until it
    stops, so it must stop before any later asyncio test runs: module scope, not session."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def tab(chromium_browser: Browser, live_service: LiveService) -> Iterator[Page]:
    """A fresh browser context at a laptop's width, on the live service."""
    context = chromium_browser.new_context(
        viewport={"width": 1366, "height": 900}, base_url=live_service.base_url
    )
    page = context.new_page()
    yield page
    context.close()
