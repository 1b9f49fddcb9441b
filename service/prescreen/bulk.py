"""The FHIR Bulk Data flow: kick off ``$export``, poll its status, download the NDJSON files.

https://hl7.org/fhir/uv/bulkdata/export.html: the kick-off answers 202 with a
``Content-Location`` to poll; polling answers 202 (with ``Retry-After``) until the
manifest (200) lists one or more files per resource type.  httpx failures and unusable
answers become ``FhirServerError`` subclasses here, once; a token never appears in them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from service.errors import FhirResponseError, FhirServerError, FhirTimeoutError, FhirUnavailableError
from service.gather.fhir_client import outcome_text
from service.prescreen.read import READ_TYPES

__all__ = ["BulkExport", "BulkLimits", "bulk_export"]

_FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class BulkLimits:
    request_timeout_seconds: float = 60.0
    total_seconds: float = 3600.0
    default_retry_seconds: float = 2.0
    max_retry_seconds: float = 60.0


@dataclass(frozen=True)
class BulkExport:
    """What the export wrote: the downloaded files, the server's transaction time and its error files."""

    files: list[Path]
    transaction_time: str | None
    errors: list[Path]
    status_url: str


def _shown(url: str) -> str:
    return url.split("?")[0]


async def _get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], limits: BulkLimits
) -> httpx.Response:
    try:
        return await client.get(url, headers=headers, timeout=limits.request_timeout_seconds)
    except httpx.TimeoutException as exc:
        raise FhirTimeoutError(
            f"{_shown(url)} did not answer within {limits.request_timeout_seconds:g} s"
        ) from exc
    except httpx.TransportError as exc:
        raise FhirUnavailableError(f"{_shown(url)} could not be reached ({type(exc).__name__})") from exc


def _outcome_detail(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return "no OperationOutcome"
    return outcome_text(body) if isinstance(body, dict) else "no OperationOutcome"


def _retry_after(response: httpx.Response, limits: BulkLimits) -> float:
    value = response.headers.get("retry-after", "")
    seconds = float(value) if value.replace(".", "", 1).isdigit() else limits.default_retry_seconds
    return min(max(seconds, 0.1), limits.max_retry_seconds)


async def _kick_off(
    client: httpx.AsyncClient, base_url: str, headers: dict[str, str], limits: BulkLimits
) -> str:
    url = urljoin(base_url.rstrip("/") + "/", "$export") + "?_type=" + ",".join(READ_TYPES)
    response = await _get(client, url, {**headers, "Prefer": "respond-async"}, limits)
    if response.status_code != 202:
        raise FhirResponseError(
            f"{_shown(url)} answered HTTP {response.status_code} to the bulk export kick-off, not 202: "
            f"{_outcome_detail(response)}"
        )
    location = response.headers.get("content-location")
    if not location:
        raise FhirResponseError(f"{_shown(url)} accepted the bulk export but named no Content-Location")
    return str(urljoin(base_url, location))


async def _poll(
    client: httpx.AsyncClient, status_url: str, headers: dict[str, str], limits: BulkLimits
) -> dict[str, Any]:
    deadline = time.monotonic() + limits.total_seconds
    while True:
        response = await _get(client, status_url, headers, limits)
        if response.status_code == 200:
            try:
                manifest = orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                raise FhirResponseError(f"{_shown(status_url)}: the export manifest is not JSON") from exc
            if not isinstance(manifest, dict) or not isinstance(manifest.get("output"), list):
                raise FhirResponseError(f"{_shown(status_url)}: the export manifest has no output list")
            return manifest
        if response.status_code != 202:
            raise FhirResponseError(
                f"{_shown(status_url)} answered HTTP {response.status_code} while the export ran: "
                f"{_outcome_detail(response)}"
            )
        if time.monotonic() > deadline:
            raise FhirTimeoutError(f"the bulk export did not finish within {limits.total_seconds:g} s")
        await asyncio.sleep(_retry_after(response, limits))


async def _download(
    client: httpx.AsyncClient,
    url: str,
    target: Path,
    headers: dict[str, str],
    limits: BulkLimits,
) -> Path:
    try:
        async with client.stream(
            "GET",
            url,
            headers={**headers, "Accept": "application/fhir+ndjson"},
            timeout=limits.request_timeout_seconds,
        ) as response:
            if response.status_code != 200:
                raise FhirResponseError(f"{_shown(url)} answered HTTP {response.status_code} to a download")
            with target.open("wb") as handle:
                async for chunk in response.aiter_bytes():
                    handle.write(chunk)
    except httpx.TimeoutException as exc:
        raise FhirTimeoutError(f"{_shown(url)} stalled while downloading") from exc
    except httpx.TransportError as exc:
        raise FhirUnavailableError(f"{_shown(url)} broke off a download ({type(exc).__name__})") from exc
    return target


def _checked_url(base_url: str, url: Any) -> str:
    if not isinstance(url, str):
        raise FhirResponseError("the export manifest lists a file without a url")
    if urlsplit(url).netloc != urlsplit(base_url).netloc:
        raise FhirResponseError(f"the export manifest points to another server ({urlsplit(url).netloc})")
    return url


async def bulk_export(
    base_url: str,
    directory: Path,
    *,
    token: str | None = None,
    limits: BulkLimits | None = None,
    client: httpx.AsyncClient | None = None,
) -> BulkExport:
    """Run a system-level ``$export`` of the types the criteria read and save its files in ``directory``."""
    limits = limits or BulkLimits()
    headers = {"Accept": _FHIR_JSON}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    directory.mkdir(parents=True, exist_ok=True)
    own_client = client is None
    http = client or httpx.AsyncClient(follow_redirects=False)
    try:
        try:
            status_url = await _kick_off(http, base_url, headers, limits)
            manifest = await _poll(http, status_url, headers, limits)
            files, errors = [], []
            for index, item in enumerate(manifest["output"]):
                kind = item.get("type") if isinstance(item, dict) else None
                if kind not in READ_TYPES:
                    raise FhirResponseError(f"the export manifest lists a file of type {kind!r}")
                url = _checked_url(base_url, item.get("url"))
                files.append(
                    await _download(http, url, directory / f"{kind}.{index:04d}.ndjson", headers, limits)
                )
            for index, item in enumerate(manifest.get("error") or []):
                url = _checked_url(base_url, item.get("url") if isinstance(item, dict) else None)
                errors.append(
                    await _download(http, url, directory / f"errors.{index:04d}.json", headers, limits)
                )
        except FhirServerError as exc:
            if token:
                raise type(exc)(str(exc).replace(token, "[redacted]")) from None
            raise
    finally:
        if own_client:
            await http.aclose()
    transaction_time = manifest.get("transactionTime")
    return BulkExport(
        files=files,
        transaction_time=transaction_time if isinstance(transaction_time, str) else None,
        errors=errors,
        status_url=status_url,
    )
