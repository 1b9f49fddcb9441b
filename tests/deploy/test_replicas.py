"""Two service instances side by side on one PostgreSQL audit store, as replicas run.

Instance A is one process; instance B runs two uvicorn workers in Prometheus multiprocess
mode.  Both require signed client JWTs (a static JWKS generated here) and share a public
URL, as replicas behind one load balancer do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.audit import AuditStore
from service.audit.store import ExportFilters
from tests.conftest import PostgresServer
from tests.deploy.conftest import SERVICE_PATH, ServiceProcess, Signer, start_service

pytestmark = pytest.mark.postgres

CALLS_PER_INSTANCE = 12


@pytest.fixture(scope="module")
def shared_audit_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.fixture(scope="module")
def replicas(
    shared_audit_url: str, signer: Signer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    log_dir = tmp_path_factory.mktemp("replica-logs")
    common = {"TIL_CDS_AUDIT_DATABASE_URL": shared_audit_url, "TIL_CDS_CLIENTS": signer.client_settings()}
    first = start_service(log_dir, "a", common)
    try:
        multiprocess = {**common, "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics-b")}
        second = start_service(log_dir, "b", multiprocess, workers=2)
    except BaseException:
        first.stop()
        raise
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _hook_calls(metrics_text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        if family.name == "til_cds_hook_calls"
        for sample in family.samples
        if sample.name == "til_cds_hook_calls_total" and sample.labels["status"] == "200"
    )


async def test_concurrent_calls_on_both_replicas_extend_one_unbroken_chain(
    replicas: tuple[ServiceProcess, ServiceProcess],
    shared_audit_url: str,
    signer: Signer,
    hook_body: Callable[..., dict[str, Any]],
) -> None:
    async def call(client: httpx.AsyncClient, base_url: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {signer.token()}"}
        return await client.post(base_url + SERVICE_PATH, json=hook_body(), headers=headers)

    async with httpx.AsyncClient(timeout=60) as client:
        before_b = _hook_calls((await client.get(replicas[1].base_url + "/metrics")).text)
        responses = await asyncio.gather(
            *(call(client, replica.base_url) for _ in range(CALLS_PER_INSTANCE) for replica in replicas)
        )
        metrics_b = (await client.get(replicas[1].base_url + "/metrics")).text

    assert [r.status_code for r in responses] == [200] * (2 * CALLS_PER_INSTANCE)
    assert all(r.json()["cards"] for r in responses)
    store = AuditStore.from_url(shared_audit_url)
    try:
        report = store.verify()
        decisions = list(store.iter_records(ExportFilters(kind="decision")))
    finally:
        store.close()
    assert report.ok, report.problems
    assert len(decisions) == 2 * CALLS_PER_INSTANCE
    assert [d["seq"] for d in decisions] == sorted(d["seq"] for d in decisions)
    assert report.records_checked >= 2 * CALLS_PER_INSTANCE
    # Both workers of B count into one exposition (multiprocess mode).
    assert _hook_calls(metrics_b) - before_b == CALLS_PER_INSTANCE


def test_a_jti_accepted_by_one_replica_is_refused_by_the_other(
    replicas: tuple[ServiceProcess, ServiceProcess],
    signer: Signer,
    hook_body: Callable[..., dict[str, Any]],
) -> None:
    first, second = replicas
    token = signer.token()
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        httpx.post(first.base_url + SERVICE_PATH, json=hook_body(), headers=headers, timeout=60).status_code
        == 200
    )
    replay = httpx.post(second.base_url + SERVICE_PATH, json=hook_body(), headers=headers, timeout=60)
    assert replay.status_code == 401
    assert token not in first.log_text() + second.log_text()


def test_logs_are_json_lines_with_the_request_id_and_no_secrets(
    replicas: tuple[ServiceProcess, ServiceProcess],
    signer: Signer,
    hook_body: Callable[..., dict[str, Any]],
) -> None:
    first, _ = replicas
    token, fhir_token = signer.token(), "fhir-access-token-that-must-not-be-logged"
    body = hook_body(fhir_server="https://fhir.not-allowlisted.test/r4")
    body["fhirAuthorization"] = {
        "access_token": fhir_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "til-cds",
    }
    response = httpx.post(
        first.base_url + SERVICE_PATH,
        json=body,
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-deploy-42"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == "req-deploy-42"
    generated = httpx.get(first.base_url + "/healthz", headers={"X-Request-ID": 'bad id {"forged": 1}'})
    assert generated.headers["X-Request-ID"] not in ("", 'bad id {"forged": 1}')

    records = first.log_records()
    access = [
        r for r in records if r.get("request_id") == "req-deploy-42" and r["logger"] == "til_cds.access"
    ]
    assert len(access) == 1
    assert access[0] | {"duration_ms": 0} == access[0] | {
        "method": "POST",
        "path": SERVICE_PATH,
        "status": 200,
        "hook": "patient-view",
        "level": "INFO",
        "duration_ms": 0,
    }
    assert all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records)
    text = first.log_text()
    assert token not in text and fhir_token not in text


def test_readiness_follows_the_audit_database(
    tmp_path: Path, signer: Signer, hook_body: Callable[..., dict[str, Any]]
) -> None:
    """A replica whose database goes away is taken out of the Service, and comes back by itself."""
    from tests.conftest import require_postgres_bin
    from tests.deploy.conftest import wait_until

    database = PostgresServer(require_postgres_bin())
    service: ServiceProcess | None = None
    try:
        database.start()
        env = {
            "TIL_CDS_AUDIT_DATABASE_URL": database.create_database(),
            "TIL_CDS_CLIENTS": signer.client_settings(),
        }
        service = start_service(tmp_path, "readiness", env)
        ready = service.base_url + "/readyz"

        def status() -> int:
            return httpx.get(ready, timeout=10).status_code

        assert status() == 200
        database.stop()
        wait_until(lambda: status() == 503, 20, "/readyz to report 503")
        refused = httpx.post(
            service.base_url + SERVICE_PATH,
            json=hook_body(),
            headers={"Authorization": f"Bearer {signer.token()}"},
            timeout=30,
        )
        assert refused.status_code == 503  # the replay cache is in the same database: no call passes
        assert httpx.get(service.base_url + "/healthz").status_code == 200, "alive, only not ready"
        database.start()
        wait_until(lambda: status() == 200, 30, "/readyz to report 200 again")
        again = httpx.post(
            service.base_url + SERVICE_PATH,
            json=hook_body(),
            headers={"Authorization": f"Bearer {signer.token()}"},
            timeout=60,
        )
        assert again.status_code == 200
    finally:
        if service is not None:
            service.stop()
        database.remove()
