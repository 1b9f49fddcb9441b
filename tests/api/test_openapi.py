"""openapi.yaml at the top of the repository is the running app's own document."""

from __future__ import annotations

import yaml

from service.api.main import create_app
from service.settings import Settings
from tests.conftest import REPO


def test_openapi_yaml_matches_the_app() -> None:
    on_disk = yaml.safe_load((REPO / "openapi.yaml").read_text(encoding="utf-8"))
    assert on_disk == create_app(Settings(dev=True)).openapi(), "regenerate with: til-cds openapi"


def test_every_cds_endpoint_is_described_with_its_errors() -> None:
    document = yaml.safe_load((REPO / "openapi.yaml").read_text(encoding="utf-8"))
    paths = document["paths"]
    assert {
        "/cds-services",
        "/cds-services/{service_id}",
        "/cds-services/{service_id}/feedback",
        "/audit/export",
    } <= set(paths)
    hook_responses = paths["/cds-services/{service_id}"]["post"]["responses"]
    assert {"200", "400", "401", "404", "412", "413", "415", "503"} <= set(hook_responses)
    assert "OperationOutcome" in document["components"]["schemas"]
    assert "HookRequest" in document["components"]["schemas"]
