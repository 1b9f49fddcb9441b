"""Whatever an unauthenticated caller puts in a token, verification ends in a rejection.

The header and claims are read before any signature is checked, so they are the attack
surface: odd types for ``alg``, ``kid``, ``jku``, ``typ``; claims of any shape. Any
exception other than a rejection would be a 500 to an anonymous caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.security import JwtRejectedError, JwtVerifier
from service.settings import Settings
from tests.security.conftest import (
    BASE_URL,
    HOOK_PATH,
    ISSUER,
    REVIEW_KEY,
    SigningKey,
    b64url,
    claims_for,
    client_config,
)

JWKS_URL = "https://ehr.hospital.example/jwks.json"
junk: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["ES384", "RS384", "HS256", "none", "ES256", "PS384", "EdDSA"]) | junk,
        "kid": st.sampled_from(["ec-1", "rsa-1", ""]) | junk,
        "typ": st.sampled_from(["JWT", "jwt", "at+jwt"]) | junk,
        "jku": st.sampled_from([JWKS_URL, "https://evil.example/jwks.json"]) | junk,
        "crit": junk,
        "b64": junk,
        "jwk": junk,
    },
)
claims = st.builds(
    lambda overrides, extra: {**claims_for(HOOK_PATH), **overrides, **extra},
    st.fixed_dictionaries(
        {},
        optional={
            "iss": st.just(ISSUER) | junk,
            "aud": st.just(BASE_URL + HOOK_PATH) | junk,
            "exp": junk,
            "iat": junk,
            "jti": junk,
            "tenant": st.just("hospital-a") | junk,
        },
    ),
    st.dictionaries(st.text(max_size=5), junk, max_size=2),
)


def _token(header: Any, payload: Any, signature: bytes) -> str:
    import json

    return ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(payload).encode()), b64url(signature)]
    )


tokens = st.one_of(
    st.builds(_token, headers | junk, claims | junk, st.binary(max_size=96)),
    st.text(max_size=60),
    st.lists(st.text(alphabet="eyJhbGciOi0123456789_-", max_size=20), min_size=2, max_size=6).map(".".join),
)


@pytest.mark.parametrize("keys", ["static", "url"])
@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(token=tokens)
def test_any_token_is_rejected_never_an_error(
    keys: str, token: str, es384: SigningKey, rs384: SigningKey, tmp_path_factory: pytest.TempPathFactory
) -> None:
    jwks = {"keys": [es384.public_jwk(), rs384.public_jwk()]}
    client = client_config(jwks=jwks) if keys == "static" else client_config(jwks_url=JWKS_URL)
    configured = Settings(
        dev=False, public_base_url=BASE_URL, clients=[client], review_signing_key=REVIEW_KEY
    )
    fetched: list[httpx.Request] = []

    def publish(request: httpx.Request) -> httpx.Response:
        fetched.append(request)
        return httpx.Response(200, json=jwks)

    async def verify() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(publish)) as http:
            verifier = JwtVerifier(configured, http, lambda issuer, jti, expires: True)
            await verifier.verify(token, BASE_URL + HOOK_PATH)

    with pytest.raises(JwtRejectedError):
        asyncio.run(verify())
    assert all(str(r.url) == JWKS_URL for r in fetched)


@pytest.fixture(scope="module")
def accepted() -> Iterator[list[str]]:
    """Tokens the second fuzzer saw accepted: the check that its examples reach the end of verify."""
    tokens: list[str] = []
    yield tokens
    assert tokens, "no generated token was ever accepted: the fuzzer never reached the jti check"


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    payload=claims,
    extra_header=st.dictionaries(st.sampled_from(["typ", "cty"]), st.text(max_size=6), max_size=2),
)
def test_correctly_signed_tokens_with_odd_claims_are_accepted_or_rejected_never_an_error(
    payload: dict[str, Any], extra_header: dict[str, Any], es384: SigningKey, accepted: list[str]
) -> None:
    """What a client with a bug (or a stolen key) could send: claims of any type, validly signed."""
    from joserfc import jwt

    header = {**extra_header, "alg": "ES384", "kid": es384.kid}
    token = jwt.encode(header, payload, es384.key, algorithms=["ES384"])
    client = client_config(jwks={"keys": [es384.public_jwk()]}, tenant="hospital-a")
    configured = Settings(
        dev=False, public_base_url=BASE_URL, clients=[client], review_signing_key=REVIEW_KEY
    )

    async def verify() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(599))) as http:
            verifier = JwtVerifier(configured, http, lambda issuer, jti, expires: True)
            accepted = await verifier.verify(token, BASE_URL + HOOK_PATH)
            assert accepted.tenant == "hospital-a" and isinstance(accepted.jti, str)

    try:
        asyncio.run(verify())
    except JwtRejectedError:
        return
    accepted.append(token)
