"""``GET /cds-services``: the discovery document."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ClientDep, RuntimeDep
from service.cdshooks import DiscoveryResponse, ServiceDefinition
from service.facts.registry import reads_text
from service.pipeline import ORDER_SELECT_SERVICE_ID, SERVICE_ID

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["discovery"])


def _usage() -> str:
    """What the service reads, from the facts registry (so it cannot go stale)."""
    return (
        f"Reads {reads_text()}; through the prefetch templates, or fhirServer plus "
        "fhirAuthorization (patient/*.read) for what is not prefetched. Calls are authenticated "
        "with a signed JWT (ES384/RS384)."
    )


@router.get("", response_model=DiscoveryResponse, response_model_exclude_none=True, operation_id="discovery")
async def discovery(runtime: RuntimeDep, client: ClientDep) -> DiscoveryResponse:
    """The services: one per hook, each with its own id (CDS clients replace earlier cards of
    the same id, and the order composer's warning must not remove the chart's cards)."""
    usage = _usage()
    return DiscoveryResponse(
        services=[
            ServiceDefinition(
                hook="patient-view",
                id=SERVICE_ID,
                title="TIL therapy trial finder",
                description="Suggests tumor-infiltrating lymphocyte (TIL) therapy trials the patient may be eligible for, with what is met, unknown or blocking.",
                prefetch=runtime.templates,
                usageRequirements=usage,
            ),
            ServiceDefinition(
                hook="order-select",
                id=ORDER_SELECT_SERVICE_ID,
                title="TIL therapy trial finder (new therapy check)",
                description="Warns when a selected draft order starts a systemic anticancer therapy for a patient who may be eligible for a TIL trial, since it restarts the trial's washout; says nothing otherwise.",
                prefetch=runtime.templates,
                usageRequirements=usage,
            ),
        ]
    )
