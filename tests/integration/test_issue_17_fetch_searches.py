"""Issue 17: fetch mode asks a real HAPI server for Observations in at most two searches.

Every synthetic patient and two of the benchmark's (100 and 1,000 Observations, most of
them older than any look-back), with no prefetch and with every group but chemistry prefetched,
is evaluated by fetching from HAPI; the requests the service's own httpx client sends are
counted, and the verdicts compared with the full prefetch (which carries every result,
of any age).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from service.api.main import build_runtime
from service.bench.patients import sized_patient
from service.cdshooks import HookRequest
from service.mappings import Mappings
from service.pipeline import Runtime, run_hook
from service.sandbox.hapi import HapiServer
from service.sandbox.synthetic import SyntheticPatient, generate_patients, hook_request
from service.settings import Settings
from tests.benchmarks.verdicts import verdicts
from tests.integration.conftest import load_patients

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()
PATIENTS = [
    *generate_patients(TODAY),
    *(sized_patient(TODAY, n, patient_id=f"issue-17-sized-{n}") for n in (100, 1000)),
]


@pytest.fixture(scope="module")
def fhir_url(hapi_server: HapiServer) -> str:
    return load_patients(hapi_server, PATIENTS)


@pytest.fixture(scope="module")
async def counted() -> AsyncIterator[tuple[Runtime, list[httpx.Request]]]:
    """The app's runtime on an httpx client that records every request it sends."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        yield build_runtime(Settings(dev=True), http), sent


async def _decide(runtime: Runtime, body: dict[str, Any], may_fetch: bool) -> dict[str, Any]:
    outcome = await run_hook(
        HookRequest.model_validate(body), runtime, datetime.now(UTC), may_fetch=may_fetch
    )
    return verdicts(outcome.record)


def _observation_searches(sent: list[httpx.Request]) -> list[httpx.Request]:
    """First pages of Observation searches (HAPI's next pages go to the base URL, ``_getpages``)."""
    return [r for r in sent if r.url.path.endswith("/Observation")]


@pytest.mark.parametrize("patient", PATIENTS, ids=lambda p: p.id)
async def test_fetch_mode_issues_two_observation_searches_and_decides_as_prefetch(
    patient: SyntheticPatient,
    fhir_url: str,
    counted: tuple[Runtime, list[httpx.Request]],
    mappings: Mappings,
) -> None:
    runtime, sent = counted
    prefetched = await _decide(runtime, hook_request(patient, mappings, prefetch="full"), may_fetch=False)

    sent.clear()
    fetched = await _decide(
        runtime, hook_request(patient, mappings, prefetch="none", fhir_server=fhir_url), may_fetch=True
    )
    bounded, unbounded = sorted(_observation_searches(sent), key=lambda r: "date" not in r.url.params)
    assert bounded.url.params["date"].startswith("ge") and "date" not in unbounded.url.params
    assert fetched == prefetched

    sent.clear()
    body = hook_request(patient, mappings, prefetch="full", fhir_server=fhir_url)
    del body["prefetch"]["observations-chemistry"]
    partly = await _decide(runtime, body, may_fetch=True)
    (chemistry,) = _observation_searches(sent)
    assert "http://loinc.org|1742-6" in chemistry.url.params["code"]  # ALT
    assert "http://loinc.org|718-7" not in chemistry.url.params["code"]  # hemoglobin was prefetched
    assert partly == prefetched
