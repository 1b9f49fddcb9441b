"""``GET /cds-services``: the discovery document."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ClientDep, RuntimeDep
from service.cdshooks import DiscoveryResponse, ServiceDefinition
from service.pipeline import SERVICE_ID

__all__ = ["router"]

router = APIRouter(prefix="/cds-services", tags=["discovery"])

USAGE = (
    "Needs read access to the patient's Patient, Condition, MedicationStatement and "
    "Observation resources, through the prefetch templates or fhirServer plus "
    "fhirAuthorization (patient/*.read). Observations are searched by LOINC code, "
    "whatever their category. Calls are authenticated with a signed JWT (ES384/RS384)."
)


@router.get("", response_model=DiscoveryResponse, response_model_exclude_none=True, operation_id="discovery")
async def discovery(runtime: RuntimeDep, client: ClientDep) -> DiscoveryResponse:
    """The services: one id, two hooks (later cards of the same id replace earlier ones)."""
    return DiscoveryResponse(
        services=[
            ServiceDefinition(
                hook="patient-view",
                id=SERVICE_ID,
                title="TIL therapy trial finder",
                description="Suggests tumor-infiltrating lymphocyte (TIL) therapy trials the patient may be eligible for, with what is met, unknown or blocking.",
                prefetch=runtime.templates,
                usageRequirements=USAGE,
            ),
            ServiceDefinition(
                hook="order-select",
                id=SERVICE_ID,
                title="TIL therapy trial finder (new therapy check)",
                description="Warns when a new systemic anticancer therapy is drafted for a patient who may be eligible for a TIL trial, since it restarts the trial's washout.",
                prefetch=runtime.templates,
                usageRequirements=USAGE,
            ),
        ]
    )
