"""Regression (issue 6, found by the fuzzer): NaN and Infinity are not JSON.

Python's JSON reader accepts them, so they reached the audit store, which refused to
write the record: a 500. They are now a 400 in a request body, and invalid JSON (so
unusable data) from a FHIR server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.sandbox.synthetic import SyntheticPatient
from tests.api.conftest import started
from tests.security.conftest import (
    FEEDBACK_PATH,
    HOOK_PATH,
    CountingServer,
    SeenRequest,
    fhir_responder,
    with_fhir_server,
)

RequestFor = Callable[..., dict[str, Any]]
NAN_BODY = '{"hook": "patient-view", "hookInstance": "x", "context": {"userId": "u", "patientId": "p"}, "prefetch": {"conditions": {"resourceType": "Bundle", "entry": [], "total": NaN}}}'


async def test_nan_or_infinity_in_a_request_body_is_a_400(
    make_app: Callable[..., FastAPI], request_for: RequestFor
) -> None:
    complete = json.dumps(request_for()).replace('"value": ', '"value": NaN, "was": ', 1)
    async for client in started(make_app(dev=True, clients=[])):
        for path, body in (
            (HOOK_PATH, complete),  # was a 500: the audit store refused the record
            (HOOK_PATH, NAN_BODY),
            (HOOK_PATH, NAN_BODY.replace("NaN", "-Infinity")),
            (
                FEEDBACK_PATH,
                '{"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z", "score": Infinity}]}',
            ),
        ):
            response = await client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, response.text
            assert "not valid JSON" in response.text and "NaN and Infinity" in response.text


async def test_nan_from_a_fhir_server_is_unusable_data_not_a_500(
    make_app: Callable[..., FastAPI],
    request_for: RequestFor,
    serve: Callable[..., CountingServer],
    patients: dict[str, SyntheticPatient],
) -> None:
    normal = fhir_responder(patients["til-lung-eligible"])

    def nan_observations(request: SeenRequest) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = normal(request)
        if "/Observation" in request.path:
            body = body.replace(b'"value": ', b'"value": NaN, "was": ')
        return status, headers, body

    fhir = serve(nan_observations)
    body = with_fhir_server(request_for(), f"{fhir.url}/fhir")
    del body["prefetch"]["observations-blood-counts"]
    async for client in started(make_app(dev=True, clients=[])):
        response = await client.post(HOOK_PATH, json=body)
    assert response.status_code == 200, response.text
    assert "answered with invalid JSON" in response.text
    assert any("/Observation" in r.path for r in fhir.requests)
