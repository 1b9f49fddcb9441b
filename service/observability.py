"""Structured JSON logs with a request id, and the Prometheus metrics every module counts into.

One log object per line, from python-json-logger.  The log record factory of
:mod:`service.redaction` has already scrubbed tokens from the message by the time a record
reaches the formatter, so the formatter only formats; it adds the request id of the request
being served (a context variable set by :class:`RequestObservabilityMiddleware`).

Metrics live in the default ``prometheus_client`` registry.  With several uvicorn workers,
set ``PROMETHEUS_MULTIPROC_DIR`` to an empty writable directory before the processes start:
each worker then writes its samples there and ``/metrics`` aggregates them (prometheus-client
multiprocess mode; ``til-cds serve`` empties the directory at start-up).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
import uuid
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "AUDIT_WRITE_FAILURES",
    "CARDS_SHOWN",
    "CRITERIA_RELOADS",
    "FACTS_MEMO",
    "FHIR_FETCH_ERRORS",
    "FHIR_FETCH_SECONDS",
    "HOOK_CALLS",
    "HOOK_SECONDS",
    "HTTP_REQUESTS",
    "HTTP_SECONDS",
    "INTERNAL_ERRORS",
    "METRICS_CONTENT_TYPE",
    "REQUEST_ID_HEADER",
    "JsonLogFormatter",
    "RequestObservabilityMiddleware",
    "current_request_id",
    "log_config",
    "metrics_exposition",
    "note_hook",
    "prepare_multiprocess_dir",
]

REQUEST_ID_HEADER = "X-Request-ID"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

access_logger = logging.getLogger("til_cds.access")

# A client's request id is echoed into logs and headers, so only a short, plain token is
# taken as given; anything else is replaced, never escaped.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _ensure_multiprocess_dir() -> None:
    """prometheus-client opens its sample file as soon as a metric is defined, so the folder must exist."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        Path(configured).mkdir(parents=True, exist_ok=True)


_ensure_multiprocess_dir()
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter(
    "til_cds_http_requests",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "til_cds_http_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
HOOK_CALLS = Counter("til_cds_hook_calls", "CDS Hooks calls by hook and HTTP status", ["hook", "status"])
HOOK_SECONDS = Histogram(
    "til_cds_hook_duration_seconds", "CDS Hooks call latency by hook", ["hook"], buckets=_LATENCY_BUCKETS
)
CARDS_SHOWN = Counter("til_cds_cards", "Trial cards returned, by trial and hook", ["trial", "hook"])
FHIR_FETCH_SECONDS = Histogram(
    "til_cds_fhir_fetch_duration_seconds",
    "Latency of one FHIR GET to an EHR, waiting for a concurrency slot included",
    buckets=_LATENCY_BUCKETS,
)
FHIR_FETCH_ERRORS = Counter("til_cds_fhir_fetch_errors", "Failed FHIR GETs by exception class", ["error"])
AUDIT_WRITE_FAILURES = Counter(
    "til_cds_audit_unavailable", "Calls refused (503) because the audit store was unavailable"
)
INTERNAL_ERRORS = Counter(
    "til_cds_internal_errors", "Requests answered 500 because of an unexpected exception, by route", ["route"]
)
FACTS_MEMO = Counter(
    "til_cds_facts_memo",
    "Hook calls whose facts were remembered (hit) or read from the resources (miss)",
    ["result"],
)
CRITERIA_RELOADS = Counter(
    "til_cds_criteria_reloads", "Criteria reload attempts by result (loaded, unchanged, refused)", ["result"]
)


@dataclass
class _RequestInfo:
    """What the middleware learns about the request it serves; routes fill ``hook``."""

    request_id: str
    hook: str | None = None


_current: contextvars.ContextVar[_RequestInfo | None] = contextvars.ContextVar(
    "til_cds_request", default=None
)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    info = _current.get()
    return info.request_id if info else None


def note_hook(hook: str) -> None:
    """Tell the middleware which hook this request called, for the per-hook metrics."""
    info = _current.get()
    if info is not None:
        info.hook = hook


class JsonLogFormatter(JsonFormatter):
    """One JSON object per record: timestamp, level, logger, message, request_id, extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", "timestamp")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        # uvicorn adds an unredacted, ANSI-coloured copy of its message as an extra.
        kwargs.setdefault("reserved_attrs", [*_RESERVED_ATTRS, "color_message", "taskName"])
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        request_id = current_request_id()
        if request_id is not None and "request_id" not in log_data:
            log_data["request_id"] = request_id


_RESERVED_ATTRS = (
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname",
    "levelno", "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process",
    "processName", "relativeCreated", "stack_info", "thread", "threadName",
)  # fmt: skip


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict (uvicorn's ``log_config``): JSON lines to stderr.

    uvicorn's own access log is silenced: the middleware writes one richer line per request,
    without the query string (which may carry references a path does not).
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLogFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _REQUEST_ID_PATTERN.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestObservabilityMiddleware:
    """Request id in, request id out, one access log line and the HTTP metrics per request.

    A plain ASGI middleware (not ``BaseHTTPMiddleware``), so the context variable it sets is
    the one the route's logging sees, and streamed responses are not buffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = _RequestInfo(request_id=_request_id(scope))
        token = _current.set(info)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", info.request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            self._observe(scope, info, status, elapsed)
            _current.reset(token)

    @staticmethod
    def _observe(scope: Scope, info: _RequestInfo, status: int, elapsed: float) -> None:
        method, route = str(scope.get("method", "")), _route_template(scope)
        HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
        HTTP_SECONDS.labels(method=method, route=route).observe(elapsed)
        if info.hook is not None:
            HOOK_CALLS.labels(hook=info.hook, status=str(status)).inc()
            HOOK_SECONDS.labels(hook=info.hook).observe(elapsed)
        extra: MutableMapping[str, Any] = {
            "method": method,
            "path": str(scope.get("path", "")),
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if info.hook is not None:
            extra["hook"] = info.hook
        access_logger.info("%s %s %d", method, extra["path"], status, extra=dict(extra))


def metrics_exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition: this process's registry, or all workers' in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), METRICS_CONTENT_TYPE
    return generate_latest(), METRICS_CONTENT_TYPE


def prepare_multiprocess_dir() -> Path | None:
    """Remove a previous run's samples from the multiprocess folder, before the workers start.

    Called by the supervising process only; its own (empty) files are kept.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if not configured:
        return None
    directory = Path(configured)
    directory.mkdir(parents=True, exist_ok=True)
    own = f"_{os.getpid()}.db"
    stale: Iterable[Path] = directory.glob("*.db")
    for path in stale:
        if not path.name.endswith(own):
            path.unlink(missing_ok=True)
    return directory
