"""The FastAPI application: routers joined, errors mapped, state built in the lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from service.api.errors import InternalErrorMiddleware, register_exception_handlers
from service.api.limits import BodySizeLimitMiddleware
from service.api.routes import audit, console, discovery, feedback, health, hooks, metrics, review
from service.audit.store import AuditStore
from service.criteria import load_criteria
from service.gather import FetchLimits, prefetch_templates
from service.mappings import load_mappings
from service.observability import RequestObservabilityMiddleware
from service.pipeline import Runtime
from service.redaction import install_redaction
from service.reload import CriteriaReloader
from service.review import review_url_builder
from service.security import JwtVerifier
from service.settings import Settings, get_settings

__all__ = ["build_runtime", "create_app", "tune_garbage_collector"]

logger = logging.getLogger("til_cds")


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids, so openapi.yaml does not churn."""
    return route.name


def build_runtime(settings: Settings, http: httpx.AsyncClient) -> Runtime:
    """Load mappings and criteria (refusing broken files) into a runtime."""
    mappings = load_mappings(settings.mappings_dir)
    criteria = load_criteria(settings.criteria_dir, mappings)
    return Runtime(
        mappings=mappings,
        criteria=criteria,
        templates=prefetch_templates(mappings, settings.fhir_page_size),
        http=http,
        limits=FetchLimits(
            timeout_seconds=settings.fhir_timeout_seconds,
            max_pages=settings.fhir_max_pages,
            max_concurrency=settings.fhir_max_concurrency,
            max_resources=settings.max_prefetch_resources,
            page_size=settings.fhir_page_size,
        ),
        facts_memo_resources=settings.facts_memo_resources,
    )


def tune_garbage_collector() -> None:
    """Fewer, cheaper collections while a large prefetch body is parsed and evaluated.

    A 1,000-Observation request allocates some hundred thousand containers; with the
    default generation-0 threshold (700) the collector runs dozens of times per call
    and, at 5,000 Observations, tripled the JSON parse (158 ms against 51 ms, measured
    with `til-cds bench`).  Freezing what start-up allocated (criteria, mappings, the
    UCUM registry) keeps those long-lived objects out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def create_app(
    settings: Settings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the app; criteria and mappings load (and fail loudly) before it serves.

    ``transport`` replaces the network for outbound HTTP (tests of FHIR error paths).
    """
    settings = settings or get_settings()
    install_redaction()
    if settings.dev:
        logger.warning(
            "DEV MODE: no client authentication unless clients are configured; "
            "plain http to loopback FHIR servers allowed. Never expose this service."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            follow_redirects=False,
            transport=transport,
        ) as http:
            app.state.runtime = build_runtime(settings, http)
            app.state.runtime.review_url = review_url_builder(settings)
            store = AuditStore.from_url(settings.audit_database_url)
            store.migrate()
            app.state.audit_store = store
            app.state.jwt_verifier = JwtVerifier(settings, http, store.remember_jti)
            app.state.reloader = CriteriaReloader(app.state, settings)
            tune_garbage_collector()
            try:
                async with app.state.reloader.running():
                    yield
            finally:
                store.close()

    app = FastAPI(
        title="til-cds",
        version="0.1.0",
        summary="CDS Hooks 2.0 service suggesting TIL therapy trials",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    register_exception_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(InternalErrorMiddleware)
    app.add_middleware(RequestObservabilityMiddleware)
    for module in (discovery, hooks, feedback, audit, health, metrics, review, console):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(packages=[("service.api", "static")]), name="static")
    _add_operation_outcome_schema(app)
    return app


def _add_operation_outcome_schema(app: FastAPI) -> None:
    """Declare the OperationOutcome schema our error responses reference."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("schemas", {})["OperationOutcome"] = {
            "type": "object",
            "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                "issue": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["severity", "code"],
                        "properties": {
                            "severity": {"type": "string"},
                            "code": {"type": "string"},
                            "diagnostics": {"type": "string"},
                            "expression": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
