"""``POST /cds-services/{service_id}/feedback``: what the clinician did with our cards."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from service.api.deps import AuditDep, ClientDep
from service.api.json_route import OrjsonRoute
from service.api.responses import FEEDBACK_ERRORS
from service.cdshooks import FeedbackRequest
from service.pipeline import SERVICES

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["feedback"], route_class=OrjsonRoute)


class FeedbackReceipt(BaseModel):
    recorded: int
    duplicates: int


@router.post(
    "/{service_id}/feedback",
    response_model=FeedbackReceipt,
    responses=FEEDBACK_ERRORS,
    operation_id="feedback",
)
async def feedback(
    service_id: str, body: FeedbackRequest, audit: AuditDep, client: ClientDep
) -> FeedbackReceipt:
    """Record each feedback item against its card; repeating an item changes nothing."""
    if service_id not in SERVICES:
        raise HTTPException(
            404, f"no CDS service '{service_id}'; discovery at /cds-services lists {', '.join(SERVICES)}"
        )
    recorded = duplicates = 0
    for item in body.feedback:
        _, created = await run_in_threadpool(
            audit.append_feedback, service_id, item.model_dump(mode="json", exclude_none=True)
        )
        recorded += created
        duplicates += not created
    return FeedbackReceipt(recorded=recorded, duplicates=duplicates)
