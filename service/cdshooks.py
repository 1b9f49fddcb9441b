"""Pydantic models of the CDS Hooks 2.0 objects we receive and send.

Lenient on input (unknown fields are kept, clients differ), strict on output:
serialised with ``exclude_none`` so no ``null`` or empty optional reaches the EHR,
as the specification's JSON rules require.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

__all__ = [
    "Card",
    "CdsResponse",
    "Coding",
    "DiscoveryResponse",
    "FeedbackItem",
    "FeedbackRequest",
    "FhirAuthorization",
    "HookRequest",
    "Link",
    "OrderSelectContext",
    "OverrideReason",
    "PatientViewContext",
    "ServiceDefinition",
    "Source",
]

SUPPORTED_HOOKS = ("patient-view", "order-select")


class _Input(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FhirAuthorization(_Input):
    """The EHR's access token for its FHIR server; transient, never logged or stored."""

    access_token: SecretStr
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


class PatientViewContext(_Input):
    userId: str = Field(min_length=1)
    patientId: str = Field(min_length=1, pattern=r"^[A-Za-z0-9\-\.]{1,64}$")
    encounterId: str | None = None


class OrderSelectContext(PatientViewContext):
    selections: list[str]
    draftOrders: dict[str, Any]

    @field_validator("draftOrders")
    @classmethod
    def _is_bundle(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("resourceType") != "Bundle":
            raise ValueError("draftOrders must be a FHIR Bundle")
        return value


class HookRequest(_Input):
    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1)
    fhirServer: AnyHttpUrl | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _authorization_needs_server(self) -> HookRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("fhirServer is required when fhirAuthorization is given (cds-r-1)")
        return self


class Coding(_Output):
    code: str
    system: str
    display: str | None = None


class Link(_Output):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Source(_Output):
    label: str
    url: str | None = None
    topic: Coding | None = None


class Action(_Output):
    """A change the client may make if the clinician accepts the suggestion (cds-resp-5:
    every action has a description)."""

    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: list[str] | None = None


class Suggestion(_Output):
    label: str
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Card(_Output):
    uuid: str = Field(default_factory=lambda: str(uuid.uuid4()))
    summary: str = Field(max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None

    @model_validator(mode="after")
    def _suggestions_need_selection_behavior(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present (cds-resp-6)")
        return self


class CdsResponse(_Output):
    cards: list[Card]


class ServiceDefinition(_Output):
    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]
    usageRequirements: str


class DiscoveryResponse(_Output):
    services: list[ServiceDefinition]


class OverrideReason(_Input):
    reason: dict[str, Any] | None = None
    userComment: str | None = None


class FeedbackItem(_Input):
    card: str = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: datetime
    overrideReason: OverrideReason | None = None
    acceptedSuggestions: list[dict[str, Any]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_coding_override(cls, data: Any) -> Any:
        """Early clients sent ``overrideReason`` as a bare Coding; nest it under ``reason``."""
        if isinstance(data, dict):
            reason = data.get("overrideReason")
            if isinstance(reason, dict) and "code" in reason and "reason" not in reason:
                data = {**data, "overrideReason": {"reason": reason}}
        return data

    @field_validator("outcomeTimestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("outcomeTimestamp must carry a time zone (UTC)")
        return value


class FeedbackRequest(_Input):
    feedback: list[FeedbackItem] = Field(min_length=1)
