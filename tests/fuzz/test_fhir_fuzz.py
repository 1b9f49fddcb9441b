"""Hypothesis-generated FHIR resources and hook bodies posted to the running service: never a 5xx.

A refusal (400 bad input, 412 data missing, 413 too large, 415 not JSON) or cards (200)
are both fine; a 500, a dropped connection or a hang is a bug. Example counts are
bounded and the runs derandomized, so CI is repeatable and quick.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.gather import prefetch_templates
from service.mappings import load_mappings
from tests.conftest import REPO
from tests.fuzz import strategies as fhir

SERVICE_URL = "/cds-services/til-trials"
FINE = {200, 400, 412, 413, 415}
MAPPINGS = load_mappings(REPO / "mappings")
KEYS = list(prefetch_templates(MAPPINGS))
OBSERVATION_KEYS = [k for k in KEYS if k.startswith("observations-")]
VALID_PATIENT = {
    "resourceType": "Patient",
    "id": fhir.PATIENT_ID,
    "birthDate": "1968-03-01",
    "gender": "female",
}
LUNG_CANCER = {
    "resourceType": "Condition",
    "id": "lung",
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C34.90"}]},
    "subject": {"reference": f"Patient/{fhir.PATIENT_ID}"},
    "onsetDateTime": "2025-01-10",
}

EXAMPLES = int(os.environ.get("TIL_CDS_FUZZ_EXAMPLES", "60"))  # raise it for a long local run
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _post(http: httpx.Client, body: Any) -> httpx.Response:
    # json.dumps writes NaN and Infinity as Python's reader (and so FastAPI's) accepts them.
    response = http.post(SERVICE_URL, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert response.status_code in FINE, (response.status_code, response.text[:2000], body)
    if response.status_code == 200:
        assert isinstance(response.json()["cards"], list)
    else:
        assert response.json()["resourceType"] == "OperationOutcome"
    return response


def _mostly_ours(draw: st.DrawFn, resources: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Give most resources a valid id and our patient as subject, so most calls get past the gate."""
    for n, resource in enumerate(resources):
        if draw(st.integers(0, 19)):
            resource["id"] = f"{prefix}-{n}"
            resource["subject"] = {"reference": f"Patient/{fhir.PATIENT_ID}"}
    return resources


@st.composite
def full_prefetch(draw: st.DrawFn) -> dict[str, Any]:
    """Well-formed Bundles of fuzzed resources, so the facts and engine code paths see them."""
    observations = _mostly_ours(draw, draw(st.lists(fhir.observations(MAPPINGS), max_size=8)), "obs")
    conditions = _mostly_ours(draw, draw(st.lists(fhir.conditions(MAPPINGS), max_size=4)), "cond")
    medications = _mostly_ours(draw, draw(st.lists(fhir.medications(MAPPINGS), max_size=4)), "med")
    prefetch: dict[str, Any] = {
        "patient": VALID_PATIENT if draw(st.integers(0, 9)) else draw(fhir.patients()),
        "conditions": _bundle([LUNG_CANCER, *conditions]),
        "medications": _bundle(medications),
        "medication-requests": None,
    }
    for key in OBSERVATION_KEYS:
        prefetch[key] = None
    groups = draw(
        st.lists(st.sampled_from(OBSERVATION_KEYS), min_size=len(observations), max_size=len(observations))
    )
    for key, observation in zip(groups, observations, strict=True):
        prefetch[key] = prefetch[key] or _bundle([])
        prefetch[key]["entry"].append({"resource": observation})
    return prefetch


def _hook(prefetch: Any, hook: str = "patient-view", context: Any = None) -> dict[str, Any]:
    return {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": context
        if context is not None
        else {"userId": "Practitioner/1", "patientId": fhir.PATIENT_ID},
        "prefetch": prefetch,
    }


@FUZZ_SETTINGS
@given(prefetch=full_prefetch())
def test_fuzzed_resources_in_prefetch_never_cause_a_server_error(
    http: httpx.Client, prefetch: dict[str, Any]
) -> None:
    _post(http, _hook(prefetch))


@FUZZ_SETTINGS
@given(
    prefetch=full_prefetch(),
    orders=st.lists(st.fixed_dictionaries({"resource": fhir.medications(MAPPINGS)}) | fhir.junk, max_size=3),
    selections=st.lists(st.text(max_size=20), max_size=2) | fhir.junk,
)
def test_fuzzed_order_select_never_causes_a_server_error(
    http: httpx.Client, prefetch: dict[str, Any], orders: list[Any], selections: Any
) -> None:
    context = {
        "userId": "Practitioner/1",
        "patientId": fhir.PATIENT_ID,
        "selections": selections,
        "draftOrders": {"resourceType": "Bundle", "entry": orders},
    }
    _post(http, _hook(prefetch, "order-select", context))


contexts = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "userId": st.text(max_size=12) | fhir.junk,
            "patientId": st.just(fhir.PATIENT_ID) | st.text(max_size=70) | fhir.junk,
            "encounterId": fhir.junk,
            "selections": fhir.junk,
            "draftOrders": fhir.junk | st.just({"resourceType": "Bundle"}),
        },
    ),
    fhir.junk,
)
prefetch_values = st.one_of(
    st.dictionaries(
        st.sampled_from(KEYS) | st.text(max_size=8),
        fhir.searchset(fhir.observations(MAPPINGS) | fhir.conditions(MAPPINGS) | fhir.patients()),
        max_size=6,
    ),
    fhir.junk,
)


@FUZZ_SETTINGS
@given(
    hook=st.sampled_from(["patient-view", "order-select"]) | st.text(max_size=12) | fhir.junk,
    context=contexts,
    prefetch=prefetch_values,
    fhir_server=st.none()
    | st.sampled_from(["https://fhir.example/r4", "http://127.0.0.1:9/fhir", "ftp://x"])
    | fhir.junk,
    authorization=st.none() | fhir.junk,
    extra=st.dictionaries(st.text(max_size=6), fhir.junk, max_size=2),
)
def test_fuzzed_hook_bodies_never_cause_a_server_error(
    http: httpx.Client,
    hook: Any,
    context: Any,
    prefetch: Any,
    fhir_server: Any,
    authorization: Any,
    extra: Any,
) -> None:
    body: dict[str, Any] = {
        **extra,
        "hook": hook,
        "hookInstance": "x",
        "context": context,
        "prefetch": prefetch,
    }
    if fhir_server is not None:
        body["fhirServer"] = fhir_server
    if authorization is not None:
        body["fhirAuthorization"] = authorization
    _post(http, body)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=fhir.junk | st.binary(max_size=200))
def test_any_json_or_bytes_never_cause_a_server_error(http: httpx.Client, body: Any) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(SERVICE_URL, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code in FINE, response.text
