"""Issue 16: an auditor runs every audit command right after ``til-cds serve --dev``, with nothing set.

Before, each exited 2 asking for the review-link signing key, then for client
authentication: settings an auditor reading the trail has no business with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Checkout, background, clone_checkout, wait_until_healthy
from tests.conftest import free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Checkout, Path, str]:
    """A clone whose default audit database holds one decision, made by ``serve --dev`` from another folder."""
    base = tmp_path_factory.mktemp("auditor")
    checkout = clone_checkout(base / "til-cds")
    elsewhere = base / "auditor-home"
    elsewhere.mkdir()
    port = free_port()
    log_path = base / "serve.log"
    with background(f"exec til-cds serve --dev --port {port}", checkout, log_path, cwd=elsewhere) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, process, log_path)
        response = httpx.post(
            url + "/cds-services/til-trials",
            content=(checkout.root / "samples" / "patient-view-prefetch.json").read_bytes(),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    links = [link["url"] for card in response.json()["cards"] for link in card.get("links", [])]
    [decision_id] = {m.group(1) for u in links if (m := re.search(r"/review/([^?]+)\?", u))}
    return checkout, elsewhere, decision_id


def test_every_audit_command_succeeds_with_no_settings(served: tuple[Checkout, Path, str]) -> None:
    checkout, elsewhere, decision_id = served
    outputs = {}
    for command in (
        ["audit", "export", "--format", "ndjson"],
        ["audit", "export", "--format", "csv"],
        ["audit", "export", "--format", "fhir"],
        ["audit", "verify"],
        ["audit", "counts"],
        ["audit", "replay", decision_id],
    ):
        result = checkout.run(command, cwd=elsewhere)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
        outputs[command[1] + (command[3] if len(command) > 3 else "")] = result.stdout

    [record] = [json.loads(line) for line in outputs["exportndjson"].splitlines()]
    assert record["decision_id"] == decision_id
    assert outputs["exportcsv"].splitlines()[0].startswith("seq,record_id,kind")
    assert json.loads(outputs["exportfhir"])["resourceType"] == "Bundle"
    assert "ok: 1 records checked" in outputs["verify"]
    assert json.loads(outputs["counts"])
    assert "today's engine agrees" in outputs["replay"]


def test_a_pseudonymised_export_without_a_key_names_the_key(served: tuple[Checkout, Path, str]) -> None:
    checkout, elsewhere, _ = served
    result = checkout.run(["audit", "export", "--pseudonymise"], cwd=elsewhere)
    assert result.returncode == 2
    assert "audit_pseudonym_key (TIL_CDS_AUDIT_PSEUDONYM_KEY)" in result.stderr
    assert result.stdout == ""


def test_audit_commands_ignore_settings_they_do_not_use(served: tuple[Checkout, Path, str]) -> None:
    """Broken service settings (clients, numbers, the dev flag) do not stop an auditor."""
    checkout, elsewhere, _ = served
    broken = {
        "TIL_CDS_CLIENTS": "not json",
        "TIL_CDS_DEV": "perhaps",
        "TIL_CDS_FHIR_TIMEOUT_SECONDS": "soon",
        "TIL_CDS_REVIEW_SIGNING_KEY": "dev-only-review-key-change-me",
    }
    with_broken = Checkout(checkout.root, {**checkout.env, **broken})
    for command in (["audit", "verify"], ["audit", "export", "--format", "csv"], ["audit", "counts"]):
        result = with_broken.run(command, cwd=elsewhere)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stderr}"

    pseudonymising = Checkout(checkout.root, {**checkout.env, "TIL_CDS_AUDIT_PSEUDONYMISE_EXPORTS": "true"})
    result = pseudonymising.run(["audit", "export"], cwd=elsewhere)
    assert result.returncode == 2 and "audit_pseudonym_key (TIL_CDS_AUDIT_PSEUDONYM_KEY)" in result.stderr
    keyed = Checkout(checkout.root, {**pseudonymising.env, "TIL_CDS_AUDIT_PSEUDONYM_KEY": "an auditor's key"})
    result = keyed.run(["audit", "export"], cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["patient_ref"].startswith("pseudo:") and record["user_ref"].startswith("pseudo:")
