"""Client JWT authentication against the real app with a configured (non-dev) client.

Each rejection is a bare 401: no body, no reason. The operator's log line names the
reason and never contains the token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc.jwk import KeySet

from tests.api.conftest import started
from tests.security.conftest import (
    DISCOVERY_PATH,
    FEEDBACK_PATH,
    HOOK_PATH,
    CountingServer,
    SeenRequest,
    SigningKey,
    b64url,
    bearer,
    claims_for,
    client_config,
    ec_key,
    json_answer,
    sign,
    unsigned,
)

RequestFor = Callable[..., dict[str, Any]]
REJECTED = "client JWT rejected"


async def _post_hook(app: FastAPI, body: dict[str, Any], token: str | None) -> httpx.Response:
    async for client in started(app):
        return await client.post(HOOK_PATH, json=body, headers=bearer(token) if token else {})
    raise AssertionError("unreachable")


def assert_bare_401(response: httpx.Response) -> None:
    """401 with nothing an attacker could learn from: no body, only the challenge."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.content in (b"", b"null")


def assert_logged(caplog: pytest.LogCaptureFixture, reason: str, token: str, case: str = "") -> None:
    """The log names the reason; neither the token nor its signature appears anywhere in it."""
    lines = [r.getMessage() for r in caplog.records if r.name == "til_cds.security"]
    assert any(REJECTED in line and reason in line for line in lines), (case, lines)
    everything = caplog.text + "\n".join(lines)
    assert token not in everything, case
    signature = token.rsplit(".", 1)[-1]
    assert len(signature) < 8 or signature not in everything, case


@pytest.mark.parametrize("key_name", ["es384", "rs384"])
async def test_a_valid_token_is_accepted(
    key_name: str, request: pytest.FixtureRequest, make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    signing: SigningKey = request.getfixturevalue(key_name)
    response = await _post_hook(make_app(), request_for(), sign(signing, HOOK_PATH))
    assert response.status_code == 200, response.text
    assert response.json()["cards"]


def _hs256_with_public_key(signing: SigningKey, secret: bytes) -> str:
    """The classic key-confusion forgery: HMAC keyed with the verifier's public key."""
    header = {"alg": "HS256", "kid": signing.kid, "typ": "JWT"}
    signing_input = unsigned(header, claims_for(HOOK_PATH)).rsplit(".", 1)[0]
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _forgeries(es384: SigningKey, rs384: SigningKey) -> list[tuple[str, str, str]]:
    """(case, token, the reason the log must name)."""
    impostor = SigningKey(ec_key(es384.kid).key, "ES384")  # same kid, another key
    now = int(time.time())
    rsa_pem = rs384.key.as_pem(private=False)
    return [
        ("wrong signature", sign(impostor, HOOK_PATH), "signature check failed"),
        (
            "alg none",
            unsigned({"alg": "none", "kid": es384.kid, "typ": "JWT"}, claims_for(HOOK_PATH)),
            "alg 'none' is not allowed",
        ),
        (
            "alg None with a signature",
            unsigned({"alg": "None", "typ": "JWT"}, claims_for(HOOK_PATH), b"x"),
            "is not allowed",
        ),
        ("HS256 keyed with the PEM public key", _hs256_with_public_key(rs384, rsa_pem), "alg 'HS256'"),
        (
            "HS256 keyed with the JWK JSON",
            _hs256_with_public_key(es384, json.dumps(es384.public_jwk()).encode()),
            "alg 'HS256'",
        ),
        ("expired", sign(es384, HOOK_PATH, exp=now - 120, iat=now - 400), "expired"),
        ("iat in the future", sign(es384, HOOK_PATH, iat=now + 600, exp=now + 900), "iat"),
        ("no exp", sign(es384, HOOK_PATH, exp=None), "expired or no exp"),
        ("lifetime over an hour", sign(es384, HOOK_PATH, exp=now + 7200), "lifetime"),
        (
            "aud of the discovery endpoint",
            sign(es384, HOOK_PATH, aud=f"https://cds.hospital.example{DISCOVERY_PATH}"),
            "is not this endpoint",
        ),
        ("aud of another host", sign(es384, HOOK_PATH, aud=f"https://evil.example{HOOK_PATH}"), "aud"),
        ("aud not a string", sign(es384, HOOK_PATH, aud=42), "aud"),
        ("unknown iss", sign(es384, HOOK_PATH, iss="https://evil.example"), "is not an allowed client"),
        ("no jti", sign(es384, HOOK_PATH, jti=None), "no jti"),
        ("typ not JWT", sign(es384, HOOK_PATH, header={"typ": "at+jwt"}), "typ"),
        ("garbage", "not.a.jwt", "not a compact JWS"),
        ("two parts", "eyJhbGciOiJFUzM4NCJ9.e30", "not a compact JWS"),
    ]


async def test_forged_expired_and_misaddressed_tokens_are_a_bare_401(
    es384: SigningKey,
    rs384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app()
    async for client in started(app):
        for case, token, reason in _forgeries(es384, rs384):
            caplog.clear()
            response = await client.post(HOOK_PATH, json=request_for(), headers=bearer(token))
            assert_bare_401(response)
            assert_logged(caplog, reason, token, case)


async def test_a_non_finite_exp_is_rejected_not_a_500(
    es384: SigningKey, make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    """Regression (issue 6): Python's JSON reader accepts NaN, and NaN passes every comparison."""
    token = sign(es384, HOOK_PATH, exp=float("nan"))
    assert_bare_401(await _post_hook(make_app(), request_for(), token))


async def test_a_token_signed_by_a_configured_but_non_asymmetric_algorithm_is_refused(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
) -> None:
    """Even if an operator lists HS256 for a client, it is never accepted."""
    secret = json.dumps(es384.public_jwk()).encode()
    app = make_app(
        clients=[client_config(jwks={"keys": [es384.public_jwk()]}, algorithms=["ES384", "HS256", "none"])]
    )
    assert_bare_401(await _post_hook(app, request_for(), _hs256_with_public_key(es384, secret)))


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", DISCOVERY_PATH, None),
        ("POST", HOOK_PATH, "hook"),
        ("POST", FEEDBACK_PATH, {"feedback": [{"card": "x", "outcome": "accepted"}]}),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "eyJ.x.y"])
async def test_every_client_endpoint_needs_a_token(
    method: str,
    path: str,
    body: Any,
    authorization: str | None,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    payload = request_for() if body == "hook" else body
    async for client in started(make_app()):
        response = await client.request(method, path, json=payload, headers=headers)
    assert_bare_401(response)
    assert any(REJECTED in r.getMessage() for r in caplog.records)


async def test_discovery_and_feedback_accept_a_token_for_their_own_url(
    es384: SigningKey, make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    async for client in started(make_app()):
        discovery = await client.get(DISCOVERY_PATH, headers=bearer(sign(es384, DISCOVERY_PATH)))
        assert discovery.status_code == 200
        hook = await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH)))
        card = hook.json()["cards"][0]["uuid"]
        feedback = {
            "feedback": [{"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]
        }
        wrong_aud = await client.post(FEEDBACK_PATH, json=feedback, headers=bearer(sign(es384, HOOK_PATH)))
        assert_bare_401(wrong_aud)
        accepted = await client.post(FEEDBACK_PATH, json=feedback, headers=bearer(sign(es384, FEEDBACK_PATH)))
        assert accepted.status_code == 200, accepted.text


async def test_a_replayed_jti_is_refused(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = sign(es384, HOOK_PATH)
    async for client in started(make_app()):
        first = await client.post(HOOK_PATH, json=request_for(), headers=bearer(token))
        assert first.status_code == 200
        replay = await client.post(HOOK_PATH, json=request_for(), headers=bearer(token))
    assert_bare_401(replay)
    assert_logged(caplog, "already used (replay)", token)


async def test_a_jti_replayed_on_another_instance_sharing_the_audit_database_is_refused(
    es384: SigningKey, make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    token = sign(es384, HOOK_PATH)
    first_instance, second_instance = make_app(), make_app()
    async for first_client in started(first_instance):
        async for second_client in started(second_instance):
            first = await first_client.post(HOOK_PATH, json=request_for(), headers=bearer(token))
            assert first.status_code == 200
            assert_bare_401(await second_client.post(HOOK_PATH, json=request_for(), headers=bearer(token)))
            fresh = await second_client.post(
                HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH))
            )
            assert fresh.status_code == 200


async def test_a_tenant_is_enforced_when_configured(
    es384: SigningKey, make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    app = make_app(clients=[client_config(jwks={"keys": [es384.public_jwk()]}, tenant="hospital-a")])
    async for client in started(app):
        other = await client.post(
            HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH, tenant="hospital-b"))
        )
        assert_bare_401(other)
        none = await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH)))
        assert_bare_401(none)
        ours = await client.post(
            HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH, tenant="hospital-a"))
        )
        assert ours.status_code == 200


# --- keys published at a URL -----------------------------------------------------------


class JwksPublisher:
    """What the EHR publishes at its JWKS URL; swap ``keys`` to rotate."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)

    def __call__(self, request: SeenRequest) -> tuple[int, dict[str, str], bytes]:
        return json_answer(KeySet.import_key_set({"keys": [k.public_jwk() for k in self.keys]}).as_dict())


def _jwks_app(make_app: Callable[..., FastAPI], jwks_url: str, **settings: Any) -> FastAPI:
    return make_app(clients=[client_config(jwks_url=jwks_url)], **settings)


async def test_jwks_url_keys_are_fetched_once_and_cached(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
) -> None:
    jwks = serve(JwksPublisher(es384))
    jwks_url = f"{jwks.url}/.well-known/jwks.json"
    async for client in started(_jwks_app(make_app, jwks_url)):
        for _ in range(3):
            response = await client.post(
                HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH))
            )
            assert response.status_code == 200, response.text
        with_jku = await client.post(
            HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH, header={"jku": jwks_url}))
        )
        assert with_jku.status_code == 200
    assert [r.path for r in jwks.requests] == ["/.well-known/jwks.json"]


async def test_an_unknown_kid_refreshes_the_jwks_after_a_rotation(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
) -> None:
    publisher = JwksPublisher(es384)
    jwks = serve(publisher)
    rotated = ec_key("ec-2")
    app = _jwks_app(make_app, f"{jwks.url}/jwks.json", jwks_refresh_cooldown_seconds=0)
    async for client in started(app):
        before = await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH)))
        assert before.status_code == 200
        assert len(jwks.requests) == 1
        publisher.keys = [rotated]
        after = await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(rotated, HOOK_PATH)))
        assert after.status_code == 200, after.text
        assert len(jwks.requests) == 2
        retired = await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH)))
        assert_bare_401(retired)


async def test_unknown_kids_within_the_cooldown_do_not_hammer_the_jwks_url(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
) -> None:
    jwks = serve(JwksPublisher(es384))
    async for client in started(_jwks_app(make_app, f"{jwks.url}/jwks.json")):
        assert (
            await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(es384, HOOK_PATH)))
        ).status_code == 200
        for n in range(5):
            stranger = ec_key(f"unknown-{n}")
            assert_bare_401(
                await client.post(HOOK_PATH, json=request_for(), headers=bearer(sign(stranger, HOOK_PATH)))
            )
    assert len(jwks.requests) == 1


async def test_a_jku_off_the_allowlist_is_never_fetched(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    attacker = serve(JwksPublisher(es384))
    allowed = serve(JwksPublisher(es384))
    evil_jku = f"{attacker.url}/jwks.json"
    token = sign(es384, HOOK_PATH, header={"jku": evil_jku})
    for app in (
        _jwks_app(make_app, f"{allowed.url}/jwks.json"),
        make_app(),  # static JWKS: any jku is refused
    ):
        caplog.clear()
        assert_bare_401(await _post_hook(app, request_for(), token))
        assert_logged(caplog, "jku", token)
    assert attacker.connections == 0 and attacker.requests == []


async def test_a_jwks_url_that_redirects_is_not_followed(
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
) -> None:
    elsewhere = serve(JwksPublisher(es384))
    redirecting = serve(lambda r: (302, {"Location": f"{elsewhere.url}/jwks.json"}, b""))
    app = _jwks_app(make_app, f"{redirecting.url}/jwks.json")
    assert_bare_401(await _post_hook(app, request_for(), sign(es384, HOOK_PATH)))
    assert len(redirecting.requests) == 1
    assert elsewhere.connections == 0


def test_a_plain_http_jwks_url_is_refused_outside_loopback() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="jwks_url"):
        Settings(
            dev=False,
            review_signing_key="k",
            clients=[client_config(jwks_url="http://ehr.hospital.example/jwks.json")],
        )
    Settings(
        dev=False,
        review_signing_key="k",
        clients=[client_config(jwks_url="https://ehr.hospital.example/jwks.json")],
    )
    Settings(
        dev=False, review_signing_key="k", clients=[client_config(jwks_url="http://127.0.0.1:9/jwks.json")]
    )
