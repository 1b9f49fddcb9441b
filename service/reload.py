"""Reload the criteria and mappings without a restart, refusing a broken file.

Triggered by SIGHUP and, when ``TIL_CDS_RELOAD_POLL_SECONDS`` is a positive number, by a
change of any file's name, size or modification time under the criteria or mappings folder
(a Kubernetes ConfigMap volume swaps a symlink, which this notices too).

A reload builds a complete new :class:`~service.pipeline.Runtime` off the event loop and
only then replaces ``app.state.runtime`` in one assignment: a request already running keeps
the runtime it started with, the next one gets the new one, and none sees a mixture.  The
HTTP client, fetch limits and anything else on the runtime are carried over.  A file that
does not load is logged (the error names the file and field) and the previous criteria stay.

With several uvicorn workers, SIGHUP to the supervisor restarts the workers (uvicorn's own
behaviour), and a worker that meets a broken file then fails to start: send SIGHUP to the
worker processes instead, or use polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from starlette.datastructures import State

from service.criteria import load_criteria
from service.errors import ConfigurationError
from service.gather import prefetch_templates
from service.mappings import load_mappings
from service.observability import CRITERIA_RELOADS
from service.pipeline import Runtime
from service.settings import Settings

__all__ = ["POLL_ENV", "CriteriaReloader", "ReloadOutcome", "poll_seconds_from_env"]

logger = logging.getLogger("til_cds.reload")

POLL_ENV = "TIL_CDS_RELOAD_POLL_SECONDS"
_FileSignature = tuple[tuple[str, int, int], ...]


class ReloadOutcome(enum.Enum):
    """What a reload did."""

    LOADED = "loaded"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


def poll_seconds_from_env() -> float:
    """The polling interval from ``TIL_CDS_RELOAD_POLL_SECONDS``; 0 (off) when unset or invalid."""
    text = os.environ.get(POLL_ENV, "").strip()
    try:
        seconds = float(text) if text else 0.0
    except ValueError:
        logger.warning("%s=%r is not a number; file polling is off", POLL_ENV, text)
        return 0.0
    return max(seconds, 0.0)


def _signature(directories: tuple[Path, ...]) -> _FileSignature:
    entries: list[tuple[str, int, int]] = []
    for directory in directories:
        for path in directory.rglob("*"):
            with suppress(OSError):
                stat = path.stat()
                entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


class CriteriaReloader:
    """Swaps ``state.runtime`` for one built from the files on disk now."""

    def __init__(self, state: State, settings: Settings, *, poll_seconds: float | None = None) -> None:
        self.state = state
        self.settings = settings
        self.poll_seconds = poll_seconds_from_env() if poll_seconds is None else poll_seconds
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ReloadOutcome]] = set()

    @property
    def _directories(self) -> tuple[Path, ...]:
        return (self.settings.criteria_dir, self.settings.mappings_dir)

    def _build(self, current: Runtime) -> Runtime:
        mappings = load_mappings(self.settings.mappings_dir)
        criteria = load_criteria(self.settings.criteria_dir, mappings)
        templates = prefetch_templates(mappings, self.settings.fhir_page_size)
        return dataclasses.replace(current, mappings=mappings, criteria=criteria, templates=templates)

    async def reload(self, reason: str = "request") -> ReloadOutcome:
        """Load the files again; serve them if they load, else keep the current criteria."""
        async with self._lock:
            current: Runtime = self.state.runtime
            old = current.criteria.fingerprint
            try:
                runtime = await asyncio.to_thread(self._build, current)
            except (ConfigurationError, OSError) as exc:
                outcome = ReloadOutcome.REFUSED
                logger.error("criteria reload (%s) refused, still serving %s: %s", reason, old, exc)
            else:
                new = runtime.criteria.fingerprint
                outcome = ReloadOutcome.UNCHANGED if new == old else ReloadOutcome.LOADED
                self.state.runtime = runtime
                logger.info("criteria reload (%s): %s, now serving %s", reason, outcome.value, new)
            CRITERIA_RELOADS.labels(result=outcome.value).inc()
            return outcome

    def _reload_in_background(self, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, seen: _FileSignature) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            now = await asyncio.to_thread(_signature, self._directories)
            if now != seen:
                seen = now
                await self.reload("files changed")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """While inside: reload on SIGHUP (main thread only) and poll files if configured."""
        loop = asyncio.get_running_loop()
        has_signal = False
        try:
            loop.add_signal_handler(signal.SIGHUP, self._reload_in_background, "SIGHUP")
            has_signal = True
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            logger.info("no SIGHUP handler here (not the main thread or not POSIX); reload by polling only")
        poller = None
        if self.poll_seconds > 0:
            baseline = await asyncio.to_thread(_signature, self._directories)
            poller = loop.create_task(self._poll(baseline))
        try:
            yield
        finally:
            if has_signal:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in [*self._tasks, *([poller] if poller else [])]:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
