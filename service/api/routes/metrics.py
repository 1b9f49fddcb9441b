"""``GET /metrics``: Prometheus text exposition (not in the OpenAPI document: it is for scrapers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from service.observability import metrics_exposition

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/metrics", operation_id="metrics", include_in_schema=False)
async def metrics() -> Response:
    """Counters and latency histograms; in multiprocess mode, summed over every worker."""
    body, content_type = await run_in_threadpool(metrics_exposition)
    return Response(content=body, media_type=content_type)
