"""CDS client authentication (CDS Hooks 2.0 signed JWTs) and the FHIR-server allowlist.

Verification uses joserfc (a maintained JOSE library), never hand-written crypto.
Order, after the CDS Hooks best-practice checklist: the ``alg`` is an asymmetric one
the client is configured for; ``iss`` is a configured client; the key comes from the
client's static JWKS or its allowlisted JWKS URL (refreshed once on an unknown
``kid``); then signature, ``aud`` (this endpoint's public URL), ``exp``/``iat``
with a small skew, ``tenant`` if configured, and a ``jti`` never seen before by any
instance (the replay cache is in the shared audit database).  Every failure is a
bare 401; the operator's log line names the reason, never the token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import httpx
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from service.cdshooks import HookRequest
from service.settings import ClientConfig, Settings

__all__ = ["AuthenticatedClient", "JwtVerifier", "authenticate_request", "may_fetch_from", "is_loopback_url"]

logger = logging.getLogger("til_cds.security")
ASYMMETRIC_ALGORITHMS = {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
JWKS_CACHE_SECONDS = 3600
MAX_JTI_LENGTH = 500  # the replay table's column width


class JwtRejectedError(Exception):
    """A client JWT failed a check; the message is for the operator's log only."""


@dataclass(frozen=True)
class AuthenticatedClient:
    issuer: str
    tenant: str | None
    jti: str
    config: ClientConfig


@dataclass
class _CachedKeys:
    keys: KeySet
    fetched_at: float


@dataclass
class JwtVerifier:
    """Verifies client JWTs; holds the JWKS cache for URL-published key sets."""

    settings: Settings
    http: httpx.AsyncClient
    remember_jti: Any  # Callable[[str, str, datetime], bool]: False when the jti was seen
    _cache: dict[str, _CachedKeys] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _client(self, issuer: str) -> ClientConfig:
        for client in self.settings.clients:
            if client.issuer == issuer:
                return client
        raise JwtRejectedError(f"issuer '{issuer}' is not an allowed client")

    async def _fetch_jwks(self, url: str) -> KeySet:
        try:
            response = await self.http.get(url, timeout=5, follow_redirects=False)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as exc:
            raise JwtRejectedError(f"JWKS at {url} could not be loaded ({type(exc).__name__})") from exc

    async def _keys(self, client: ClientConfig, jku: str | None, kid: str | None) -> KeySet:
        if client.jwks is not None:
            if jku is not None:
                raise JwtRejectedError("jku given but the client's keys are configured statically")
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]  # a JWKS dict, checked by joserfc
        allowed = str(client.jwks_url) if client.jwks_url else None
        if allowed is None:
            raise JwtRejectedError("client has no JWKS configured")
        if jku is not None and jku != allowed:
            raise JwtRejectedError(f"jku '{jku}' is not allowlisted for this issuer")
        async with self._lock:
            cached = self._cache.get(allowed)
            now = time.monotonic()
            stale = cached is None or now - cached.fetched_at > JWKS_CACHE_SECONDS
            unknown_kid = (
                cached is not None and kid is not None and not any(k.kid == kid for k in cached.keys.keys)
            )
            cooldown = self.settings.jwks_refresh_cooldown_seconds
            if stale or (unknown_kid and cached is not None and now - cached.fetched_at >= cooldown):
                cached = _CachedKeys(await self._fetch_jwks(allowed), now)
                self._cache[allowed] = cached
            assert cached is not None  # set above when missing
            return cached.keys

    async def verify(self, token: str, audience: str) -> AuthenticatedClient:
        try:
            compact = jws.extract_compact(token.encode())
            header = compact.protected
            claims = json.loads(compact.payload)
        except (JoseError, ValueError) as exc:
            raise JwtRejectedError("not a compact JWS") from exc
        if not isinstance(claims, dict):
            raise JwtRejectedError("payload is not a JSON object")
        algorithm = header.get("alg")
        client = self._client(str(claims.get("iss")))
        allowed_algorithms = [a for a in client.algorithms if a in ASYMMETRIC_ALGORITHMS]
        if algorithm not in allowed_algorithms:
            raise JwtRejectedError(f"alg '{algorithm}' is not allowed (allowed: {allowed_algorithms})")
        if header.get("typ") not in (None, "JWT"):
            raise JwtRejectedError(f"typ '{header.get('typ')}' is not JWT")
        kid = header.get("kid")
        keys = await self._keys(client, header.get("jku"), kid)
        try:
            token_object = jwt.decode(token, keys, algorithms=[str(algorithm)])
        except JoseError as exc:
            raise JwtRejectedError(f"signature check failed ({type(exc).__name__})") from exc
        verified = token_object.claims
        skew = self.settings.jwt_clock_skew_seconds
        now = time.time()
        audiences = verified.get("aud")
        audiences = [audiences] if isinstance(audiences, str) else audiences
        if not isinstance(audiences, list) or audience not in audiences:
            raise JwtRejectedError(f"aud {audiences!r} is not this endpoint ({audience})")
        exp, iat = verified.get("exp"), verified.get("iat")
        if not _is_timestamp(exp) or exp < now - skew:
            raise JwtRejectedError("expired or no exp")
        if not _is_timestamp(iat) or iat > now + skew:
            raise JwtRejectedError("iat missing or in the future")
        if exp - iat > 3600 + skew:
            raise JwtRejectedError("lifetime longer than an hour")
        if client.tenant is not None and verified.get("tenant") != client.tenant:
            raise JwtRejectedError("tenant does not match the client's")
        jti = verified.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise JwtRejectedError("no jti, or one longer than 500 characters")
        fresh = await run_in_threadpool(
            self.remember_jti, client.issuer, jti, datetime.fromtimestamp(exp + skew, UTC)
        )
        if not fresh:
            raise JwtRejectedError(f"jti '{jti}' was already used (replay)")
        return AuthenticatedClient(
            issuer=client.issuer, tenant=verified.get("tenant"), jti=jti, config=client
        )


def _is_timestamp(value: Any) -> TypeGuard[float]:
    """A finite number of seconds: JSON parsers accept NaN, which passes every comparison."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def authenticate_request(request: Request) -> AuthenticatedClient | None:
    """The authenticated client, None in --dev without clients, or a bare 401."""
    settings: Settings = request.app.state.settings
    if not settings.clients and settings.dev:
        return None
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        logger.warning("client JWT rejected: no bearer token (path=%s)", request.url.path)
        raise HTTPException(401)
    audience = settings.public_base_url.rstrip("/") + request.url.path
    verifier: JwtVerifier = request.app.state.jwt_verifier
    try:
        return await verifier.verify(token.strip(), audience)
    except JwtRejectedError as exc:
        logger.warning("client JWT rejected: %s (path=%s)", exc, request.url.path)
        raise HTTPException(401) from None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normalise(url: str) -> str:
    return url.rstrip("/").lower()


def may_fetch_from(request: HookRequest, settings: Settings, client: AuthenticatedClient | None) -> bool:
    """Whether we may call the request's fhirServer: on the client's allowlist, https outside --dev."""
    if request.fhirServer is None:
        return False
    url = str(request.fhirServer)
    scheme = urlsplit(url).scheme
    if client is not None:
        if scheme != "https" and not (settings.dev and is_loopback_url(url)):
            logger.warning("fhirServer %s refused: https is required", url)
            return False
        allowed = {_normalise(u) for u in client.config.fhir_servers}
        if _normalise(url) not in allowed:
            logger.warning("fhirServer %s is not on the allowlist of %s; not contacted", url, client.issuer)
            return False
        return True
    return settings.dev and (is_loopback_url(url) or scheme == "https")
