"""An unexpected exception inside a hook call: 500 with an OperationOutcome and the request id,
logged once with its traceback, counted, and the kept-alive connection still usable.

A real uvicorn server on loopback and one httpx connection reused for every call, as EHRs
do: Starlette's last-resort handler re-raised after answering, and the server then reset
the connection, so the next call on it failed with "connection reset by peer".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from service.criteria import AgeRule
from service.engine import rules
from service.mappings import Mappings
from service.sandbox.synthetic import SyntheticPatient, hook_request
from tests.api.conftest import SERVICE_URL
from tests.conftest import free_port


@pytest.fixture
def served(app_factory: Callable[..., Any]) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app_factory(), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _failing_age_rule(rule: AgeRule, context: Any) -> Any:
    raise KeyError("systemic_corticosteroid")  # the shape of a data-defined name gone missing


def test_an_internal_error_answers_500_with_the_request_id_and_keeps_the_connection(
    served: str,
    patients: dict[str, SyntheticPatient],
    mappings: Mappings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = hook_request(patients["til-lung-eligible"], mappings)
    monkeypatch.setitem(rules._EVALUATORS, AgeRule, _failing_age_rule)
    caplog.set_level(logging.ERROR)
    connections: list[Any] = []
    with httpx.Client(
        base_url=served, timeout=20, event_hooks={"request": [lambda r: connections.append(r.extensions)]}
    ) as client:
        statuses, request_ids = [], []
        for _ in range(3):
            response = client.post(SERVICE_URL, json=body)
            statuses.append(response.status_code)
            request_ids.append(response.headers["x-request-id"])
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "exception"
            assert request_ids[-1] in outcome["issue"][0]["diagnostics"]
            assert "systemic_corticosteroid" not in outcome["issue"][0]["diagnostics"], "no internals out"
        assert statuses == [500, 500, 500]
        assert client.get("/cds-services").status_code == 200, "the connection is still usable"
        metrics = client.get("/metrics").text
    errors = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(errors) == 3, "each failure is logged exactly once"
    # The redaction factory turns exc_info into redacted text: the traceback is there.
    assert all("Traceback" in (r.exc_text or "") and "KeyError" in (r.exc_text or "") for r in errors)
    assert 'til_cds_internal_errors_total{route="/cds-services/{service_id}"} 3.0' in metrics


def test_one_connection_serves_every_call_after_an_internal_error(
    served: str, patients: dict[str, SyntheticPatient], mappings: Mappings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same socket carries the 500 and the next 200: nothing resets it in between."""
    body = hook_request(patients["til-lung-eligible"], mappings)
    peers: set[Any] = set()

    def remember_socket(response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        peers.add(stream.get_extra_info("client_addr") if stream is not None else None)

    with httpx.Client(base_url=served, timeout=20, event_hooks={"response": [remember_socket]}) as client:
        with monkeypatch.context() as patch:
            patch.setitem(rules._EVALUATORS, AgeRule, _failing_age_rule)
            assert client.post(SERVICE_URL, json=body).status_code == 500
        assert client.post(SERVICE_URL, json=body).status_code == 200
    assert len(peers) == 1 and None not in peers, f"one kept-alive connection, saw {peers}"
