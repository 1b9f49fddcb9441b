"""``/healthz`` (the process is alive) and ``/readyz`` (criteria loaded, audit store reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service.api.deps import AuditDep, RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """Alive: answers without touching anything else."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="readyz", responses={503: {"description": "Not ready"}})
async def readyz(runtime: RuntimeDep, audit: AuditDep) -> JSONResponse:
    """Ready: criteria are loaded and the audit store answers."""
    reachable = await run_in_threadpool(audit.ping) if hasattr(audit, "ping") else True
    body = {
        "status": "ready" if reachable else "not ready",
        "criteria_fingerprint": runtime.criteria.fingerprint,
        "trials": [t.id for t in runtime.criteria.trials],
        "audit_store": "reachable" if reachable else "unreachable",
    }
    return JSONResponse(body, status_code=200 if reachable else 503)
