"""FastAPI dependencies, as ``Annotated`` aliases the routes declare.

They are ``async`` though none awaits: FastAPI runs a plain ``def`` dependency in its thread
pool, and three hand-offs per hook call cost more than reading ``app.state``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.audit.store import AuditStore
from service.pipeline import Runtime
from service.security import AuthenticatedClient, authenticate_request
from service.settings import Settings

__all__ = ["AuditDep", "ClientDep", "RuntimeDep", "SettingsDep"]


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _audit(request: Request) -> AuditStore:
    store: AuditStore = request.app.state.audit_store
    return store


async def _client(request: Request) -> AuthenticatedClient | None:
    return await authenticate_request(request)


SettingsDep = Annotated[Settings, Depends(_settings)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
AuditDep = Annotated[AuditStore, Depends(_audit)]
ClientDep = Annotated["AuthenticatedClient | None", Depends(_client)]
