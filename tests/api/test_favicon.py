"""Issue 16: /favicon.ico was a 404 in every browser console."""

from __future__ import annotations

import httpx


async def test_favicon_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")
    assert "/favicon.ico" not in (await client.get("/openapi.json")).text
