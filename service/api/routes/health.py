"""``/healthz`` (the process is alive), ``/readyz`` (criteria loaded, audit store reachable),
and ``/favicon.ico``, which every browser asks for."""

from __future__ import annotations

import asyncio
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.deps import AuditDep, RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["health"])

# Below a probe's usual timeout, so a hanging database reads as "not ready", not as no answer.
PING_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """Alive: answers without touching anything else."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", responses={503: {"description": "Not ready"}})
async def readyz(runtime: RuntimeDep, audit: AuditDep) -> JSONResponse:
    """Ready: criteria are loaded and the audit store answers (503 while it does not)."""
    try:
        reachable = await asyncio.wait_for(asyncio.to_thread(audit.ping), PING_TIMEOUT_SECONDS)
    except TimeoutError:
        reachable = False
    body = {
        "status": "ready" if reachable else "not ready",
        "criteria_fingerprint": runtime.criteria.fingerprint,
        "trials": [t.id for t in runtime.criteria.trials],
        "audit_store": "reachable" if reachable else "unreachable",
    }
    return JSONResponse(body, status_code=200 if reachable else 503)


_FAVICON = files("service.api").joinpath("static/favicon.svg").read_bytes()


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """The icon a browser requests for every page; without it each console shows a 404."""
    return Response(_FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})
