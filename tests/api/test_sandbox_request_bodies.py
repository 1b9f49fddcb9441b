"""Issue 16: `til-cds sandbox request` writes bodies a real client would send, each its own call."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service.cli import app
from tests.api.conftest import ORDER_SELECT_URL

runner = CliRunner()


def _generated(*arguments: str) -> dict[str, Any]:
    result = runner.invoke(app, ["sandbox", "request", *arguments])
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


async def test_order_select_body_is_answered_with_a_washout_warning(client: httpx.AsyncClient) -> None:
    body = _generated("til-lung-eligible", "--hook", "order-select")
    [order] = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    assert body["context"]["selections"] == [f"MedicationRequest/{order['id']}"]
    assert order["status"] == "draft" and order["subject"]["reference"] == "Patient/til-lung-eligible"

    response = await client.post(ORDER_SELECT_URL, json=body)
    assert response.status_code == 200, response.text
    warning = response.json()["cards"][0]
    assert warning["indicator"] == "warning"
    assert "docetaxel" in warning["summary"] and "washout" in warning["summary"]


async def test_order_select_drafts_the_chosen_drug(client: httpx.AsyncClient) -> None:
    body = _generated("til-lung-eligible", "--hook", "order-select", "--drug", "pemetrexed")
    response = await client.post(ORDER_SELECT_URL, json=body)
    assert "pemetrexed" in response.json()["cards"][0]["summary"]


def test_an_unknown_drug_names_the_choices() -> None:
    result = runner.invoke(
        app, ["sandbox", "request", "til-lung-eligible", "--hook", "order-select", "--drug", "aspirin"]
    )
    assert result.exit_code == 2
    assert "unknown drug 'aspirin'" in result.output and "docetaxel" in result.output


@pytest.mark.parametrize("hook", ["patient-view", "order-select"])
def test_every_generated_body_has_its_own_hook_instance(hook: str) -> None:
    instances = {_generated("til-lung-eligible", "--hook", hook)["hookInstance"] for _ in range(3)}
    assert len(instances) == 3


def test_the_shipped_samples_have_distinct_hook_instances() -> None:
    from service.settings import REPO_ROOT

    samples = sorted((REPO_ROOT / "samples").glob("*.json"))
    instances = {json.loads(path.read_text(encoding="utf-8"))["hookInstance"] for path in samples}
    assert len(samples) >= 2 and len(instances) == len(samples)
    assert "00000000-0000-4000-8000-000000000000" not in instances
