"""Load FHIR transaction Bundles into any FHIR server, with a progress bar and a failure report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

__all__ = ["LoadReport", "bundle_files", "load_bundles"]


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def bundle_files(path: Path) -> list[Path]:
    """A file, or every ``*.bundle.json`` (else ``*.json``) in a folder, sorted."""
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.bundle.json")) or sorted(path.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json bundles in {path}")
    return files


def _failure(response: httpx.Response) -> str:
    try:
        body = response.json()
        issues = body.get("issue") or []
        detail = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues) or response.text[:200]
    except ValueError:
        detail = response.text[:200]
    return f"HTTP {response.status_code}: {detail}"


def load_bundles(
    named_bundles: Iterable[tuple[str, dict[str, Any]]],
    fhir_base: str,
    *,
    total: int | None = None,
    token: str | None = None,
    show_progress: bool = True,
    timeout: float = 120,
) -> LoadReport:
    """POST each transaction Bundle to the server base; a failure is reported, not fatal."""
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    report = LoadReport()
    with httpx.Client(timeout=timeout, headers=headers) as client:
        for name, bundle in tqdm(
            named_bundles, total=total, unit="bundle", disable=not show_progress, desc="loading"
        ):
            try:
                response = client.post(fhir_base.rstrip("/"), content=json.dumps(bundle))
            except httpx.HTTPError as exc:
                report.failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code >= 300:
                report.failed[name] = _failure(response)
            else:
                report.loaded.append(name)
    return report
