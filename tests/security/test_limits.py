"""Oversized bodies are refused with 413 before anything reads them, whether announced or streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import started
from tests.security.conftest import FEEDBACK_PATH, HOOK_PATH, SigningKey, bearer, sign

LIMIT = 20_000
RequestFor = Callable[..., dict[str, Any]]


def _oversized(request_for: RequestFor) -> bytes:
    body = request_for()
    body["extension"] = {"padding": "x" * (LIMIT * 2)}
    return json.dumps(body).encode()


async def _chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert f"{LIMIT} bytes" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", [HOOK_PATH, FEEDBACK_PATH])
@pytest.mark.parametrize("authenticated", [False, True])
async def test_a_body_over_the_limit_is_413_by_content_length_and_by_stream(
    path: str,
    authenticated: bool,
    es384: SigningKey,
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
) -> None:
    data = _oversized(request_for)
    async for client in started(make_app(max_body_bytes=LIMIT)):
        headers = {"Content-Type": "application/json"}
        if authenticated:
            headers |= bearer(sign(es384, path))
        announced = await client.post(path, content=data, headers=headers)
        _assert_413(announced)

        if authenticated:
            headers |= bearer(sign(es384, path))
        streamed = client.build_request("POST", path, content=_chunks(data), headers=headers)
        assert "content-length" not in streamed.headers
        assert streamed.headers["transfer-encoding"] == "chunked"
        _assert_413(await client.send(streamed))


async def test_a_lying_content_length_does_not_get_a_large_body_through(
    make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    """Content-Length says small, the stream is large: the stream is counted."""
    data = _oversized(request_for)
    app = make_app(max_body_bytes=LIMIT)
    responses: list[dict[str, Any]] = []
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]

    async def receive() -> dict[str, Any]:
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        responses.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": HOOK_PATH,
        "raw_path": HOOK_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert responses[0]["status"] == 413


async def test_a_body_under_the_limit_passes_the_size_check(
    es384: SigningKey, make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    body = request_for()
    data = json.dumps(body).encode()
    async for client in started(make_app(max_body_bytes=len(data))):
        response = await client.post(
            HOOK_PATH,
            content=_chunks(data),
            headers={"Content-Type": "application/json"} | bearer(sign(es384, HOOK_PATH)),
        )
    assert response.status_code == 200, response.text
