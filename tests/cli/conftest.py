"""A fresh clone of the repository, and ``til-cds`` run in it as a newcomer would run it.

The clone is this checkout's ``HEAD`` with the uncommitted changes to tracked (and new,
not ignored) files laid over it, so a README edit is tested before it is committed. The
built HAPI jar is copied in, so ``til-cds sandbox up`` starts it without Maven.

``til-cds`` is a two-line shim running ``python -m service.cli`` with the clone first on
``PYTHONPATH``, not an install into a fresh virtualenv: the README installs from
``requirements.lock``, which means downloading about 60 packages (a minute, and the network,
on every run), and ``scripts/check`` has already installed exactly those pins in this
interpreter. What the shim leaves untested is only ``pip`` itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.sandbox.hapi import build_server
from tests.conftest import REPO

START_TIMEOUT_SECONDS = 90.0


def newcomer_environment() -> dict[str, str]:
    """This process's environment without any ``TIL_CDS_*`` setting (nor a metrics dir)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TIL_CDS_") and name not in ("PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH")
    }


@dataclass(frozen=True)
class Checkout:
    """A clone, and the environment in which ``til-cds`` means this clone's code."""

    root: Path
    env: dict[str, str]

    def run(
        self, arguments: list[str], *, cwd: Path | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["til-cds", *arguments],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *arguments], capture_output=True, text=True, check=True
    ).stdout


def clone_checkout(destination: Path) -> Checkout:
    """Clone this checkout's HEAD into ``destination``, with its uncommitted changes."""
    head = _git("rev-parse", "HEAD").strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(destination)], check=True)
    subprocess.run(["git", "-C", str(destination), "checkout", "--quiet", head], check=True)
    for name in _git("ls-files", "--modified", "--others", "--exclude-standard", "-z").split("\0"):
        if not name:
            continue
        source, target = REPO / name, destination / name
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:
            target.unlink(missing_ok=True)
    jar = build_server()
    target_jar = destination / jar.relative_to(REPO)
    target_jar.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(jar, target_jar)  # a new mtime: newer than the clone's sources, so not rebuilt

    bin_dir = destination.parent / f"{destination.name}-bin"
    bin_dir.mkdir()
    shim = bin_dir / "til-cds"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m service.cli "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = newcomer_environment()
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(destination))
    return Checkout(destination, env)


@contextmanager
def background(
    command: str, checkout: Checkout, log_path: Path, *, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a shell command in its own process group until the block ends, then SIGTERM the group."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd or checkout.root,
            env=checkout.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def wait_until_healthy(
    base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = START_TIMEOUT_SECONDS
) -> None:
    """Wait for ``/healthz``; fail with the log's tail if the service exits or does not come up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(base_url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    log = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise AssertionError(
        f"the service at {base_url} did not answer /healthz (exit status {process.poll()}):\n{log}"
    )
