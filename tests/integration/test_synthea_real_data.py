"""Issue 14: every public Synthea record in ``../shared/synthea`` through the service and a real HAPI.

Each bundle is loaded into the session's HAPI server. For every patient, patient-view is
called over HTTP with no prefetch (the service fetches everything) and in process with a
prefetch built from the service's own templates, run as searches against the same server:
no call may fail, every data problem must name a resource of the record (whose content
explains it), and both modes must give the same cards. A copy of each lung-cancer record,
cut a few days after its last chemotherapy and shifted so that the cut is now, must date the
washout from the newest chemotherapy evidence.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from service.api.main import build_runtime, create_app
from service.cdshooks import HookRequest
from service.engine.decision import decision_json
from service.mappings import Mappings
from service.pipeline import Runtime, run_hook
from service.sandbox.hapi import HapiServer
from service.settings import Settings
from tests.api.conftest import SERVICE_URL, started
from tests.integration.synthea import (
    CUT_DAYS_AFTER_LAST_CHEMOTHERAPY,
    MANIFEST,
    SyntheaRecord,
    chemotherapy_evidence,
    cut_and_shift,
    records,
)
from tests.integration.test_service_against_hapi import comparable

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not MANIFEST.is_file(),
        reason=f"no Synthea sample data at {MANIFEST.parent} (the shared folder beside the checkout)",
    ),
]

WASHOUT = ("NCT06538012", "prior-therapy-washout", 28)
_BILLING = ("Claim", "ExplanationOfBenefit")
_FHIR_JSON = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
# A data problem explains itself when it names a resource of the record: "Observation/12 has no
# numeric value; ignored".  A problem about a search (a lost key, a page limit) never does.
_NAMED_RESOURCE = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]+)")


@dataclass(frozen=True)
class Loaded:
    name: str
    patient_id: str
    evaluated_at: datetime | None = None
    last_chemotherapy: datetime | None = None


def _post(client: httpx.Client, base_url: str, bundle: dict[str, Any], name: str) -> str:
    """POST a transaction Bundle, without its billing records; the server's id of its Patient.

    Claims and ExplanationOfBenefits are a third of Synthea's resources and most of its bytes;
    the service never searches them and no clinical resource refers to them, so leaving them
    out halves the loading time and changes nothing the service sees.
    """
    clinical = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in _BILLING]
    response = client.post(base_url, json={**bundle, "entry": clinical}, headers=_FHIR_JSON)
    assert response.status_code < 300, f"{name}: HTTP {response.status_code} {response.text[:500]}"
    for entry in response.json()["entry"]:
        location = entry["response"]["location"]
        if location.startswith("Patient/"):
            return str(location.split("/")[1])
    raise AssertionError(f"{name}: the transaction created no Patient")


@pytest.fixture(scope="module")
def synthea() -> list[SyntheaRecord]:
    return records()


@pytest.fixture(scope="module")
def loaded(hapi_server: HapiServer, synthea: list[SyntheaRecord], mappings: Mappings) -> list[Loaded]:
    """Every record as it is, then a cut and shifted copy of each lung-cancer record."""
    now = datetime.now(UTC)
    bundles: list[tuple[str, dict[str, Any], datetime | None, datetime | None]] = [
        (record.file, record.bundle, None, None) for record in synthea
    ]
    for record in synthea:
        evidence = chemotherapy_evidence(record.resources, mappings)
        if record.group != "lung" or not evidence:
            continue
        last = max(evidence)
        cut = last + timedelta(days=CUT_DAYS_AFTER_LAST_CHEMOTHERAPY)
        bundle, days = cut_and_shift(record, cut, now.date())
        name = f"{record.file} cut {cut.date()} shifted {days} days"
        bundles.append((name, bundle, cut + timedelta(days=days), last + timedelta(days=days)))
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(max_workers=2) as pool:
        ids = pool.map(lambda item: _post(client, hapi_server.base_url, item[1], item[0]), bundles)
        patients = [
            Loaded(name, patient_id, at, last)
            for (name, _, at, last), patient_id in zip(bundles, ids, strict=True)
        ]
    return patients


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with httpx.AsyncClient() as http:
        yield build_runtime(Settings(dev=True), http)


async def _search_all(http: httpx.AsyncClient, base_url: str, query: str) -> dict[str, Any]:
    """A template run as a search, every page followed, as one searchset Bundle."""
    entries: list[dict[str, Any]] = []
    url: str | None = urljoin(base_url + "/", query)
    while url is not None:
        response = await http.get(url, headers=_FHIR_JSON, timeout=120)
        response.raise_for_status()
        page = response.json()
        if page["resourceType"] != "Bundle":
            return dict(page)
        entries.extend(page.get("entry") or [])
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


async def _prefetch(runtime: Runtime, base_url: str, patient_id: str) -> dict[str, Any]:
    queries = {
        key: template.replace("{{context.patientId}}", patient_id)
        for key, template in runtime.templates.items()
    }
    bundles = await asyncio.gather(*(_search_all(runtime.http, base_url, q) for q in queries.values()))
    return dict(zip(queries, bundles, strict=True))


def _request(patient_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "00000000-0000-4000-8000-000000000014",
        "context": {"userId": "Practitioner/oncologist-1", "patientId": patient_id},
        **fields,
    }


def _unexplained(problems: list[str], resources: list[dict[str, Any]]) -> list[str]:
    present = {(r["resourceType"], str(r.get("id"))) for r in resources}
    unexplained = []
    for problem in problems:
        named = _NAMED_RESOURCE.match(problem)
        if named is None or (named["type"], named["id"]) not in present:
            unexplained.append(problem)
    return unexplained


async def test_every_synthea_patient_gives_the_same_cards_fetched_and_prefetched(
    hapi_server: HapiServer,
    synthea: list[SyntheaRecord],
    loaded: list[Loaded],
    runtime: Runtime,
    tmp_path: Path,
) -> None:
    settings = Settings(dev=True, audit_database_url=f"sqlite:///{tmp_path / 'audit.sqlite3'}")
    failures: list[str] = []
    async for service in started(create_app(settings)):
        for patient in loaded:
            fetched = await service.post(
                SERVICE_URL, json=_request(patient.patient_id, fhirServer=hapi_server.base_url)
            )
            if fetched.status_code != 200:
                failures.append(
                    f"{patient.name}: fetch mode answered HTTP {fetched.status_code}: {fetched.text}"
                )
                continue
            prefetch = await _prefetch(runtime, hapi_server.base_url, patient.patient_id)
            outcome = await run_hook(
                HookRequest.model_validate(_request(patient.patient_id, prefetch=prefetch)),
                runtime,
                datetime.now(UTC),
                may_fetch=False,
            )
            unexplained = _unexplained(
                list(outcome.decision.data_problems), outcome.record["input_resources"]
            )
            if unexplained:
                failures.append(f"{patient.name}: data problems the record does not explain: {unexplained}")
            if comparable(fetched.json()["cards"]) != comparable(outcome.record["cards"]):
                failures.append(f"{patient.name}: fetched and prefetched cards differ")
    assert not failures, "\n".join(failures)
    assert len([p for p in loaded if p.evaluated_at is None]) == len(synthea)


async def test_a_lung_record_cut_after_its_last_chemotherapy_dates_the_washout_from_it(
    hapi_server: HapiServer, loaded: list[Loaded], runtime: Runtime
) -> None:
    shifted = [p for p in loaded if p.evaluated_at is not None]
    assert shifted, "the manifest lists lung-cancer records with chemotherapy"
    trial_id, criterion_id, days = WASHOUT
    for patient in shifted:
        assert patient.evaluated_at is not None and patient.last_chemotherapy is not None
        outcome = await run_hook(
            HookRequest.model_validate(_request(patient.patient_id, fhirServer=hapi_server.base_url)),
            runtime,
            patient.evaluated_at,
            may_fetch=True,
        )
        verdict = next(v for v in decision_json(outcome.decision)["trials"] if v["trial_id"] == trial_id)
        washout = next(c for c in verdict["criteria"] if c["id"] == criterion_id)
        expected = (patient.last_chemotherapy + timedelta(days=days)).date().isoformat()
        assert (washout["state"], washout["until"]) == ("not_yet", expected), (patient.name, washout)
