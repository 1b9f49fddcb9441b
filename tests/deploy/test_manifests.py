"""The deployment files validate against real schemas and say what the service needs.

Kubernetes manifests: ``kubernetes-validate`` (the API's own OpenAPI schemas, strict, so an
unknown or misspelt field fails).  Compose: the Compose Specification schema that
``check-jsonschema`` vendors, run with jsonschema.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.criteria import load_criteria
from service.mappings import load_mappings
from tests.deploy.configmaps import SOURCES, path_for, render

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.31.0"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _all_resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for path in MANIFESTS for doc in _documents(path)}


def _compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text(encoding="utf-8"))
    return schema


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifest_validates_strictly(path: Path) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_kubernetes_field_is_caught() -> None:
    deployment = _all_resources()[("Deployment", "til-cds")]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_deployment_probes_limits_and_runs_locked_down() -> None:
    found = _all_resources()
    pod = found[("Deployment", "til-cds")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {item["name"]: item for item in container["env"]}
    for name in ("TIL_CDS_AUDIT_DATABASE_URL", "TIL_CDS_CLIENTS", "TIL_CDS_AUDIT_EXPORT_TOKEN"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "til-cds", name
    secret_keys = set(found[("Secret", "til-cds")]["stringData"])
    referenced = {item["valueFrom"]["secretKeyRef"]["key"] for item in env.values() if "valueFrom" in item}
    assert referenced - {"audit-pseudonym-key"} <= secret_keys
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["TIL_CDS_CRITERIA_DIR"]["value"] == mounts["criteria"]
    assert env["TIL_CDS_MAPPINGS_DIR"]["value"] == mounts["mappings"]
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith(mounts["tmp"])
    config_maps = {v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert config_maps == {"til-cds-criteria", "til-cds-mappings"}
    assert all(("ConfigMap", name) in found for name in config_maps)
    assert pod["terminationGracePeriodSeconds"] > 20, "longer than uvicorn's graceful shutdown"


def test_service_hpa_and_pdb_point_at_the_deployment() -> None:
    found = _all_resources()
    labels = found[("Deployment", "til-cds")]["spec"]["template"]["metadata"]["labels"]
    service = found[("Service", "til-cds")]["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "http"
    pdb = found[("PodDisruptionBudget", "til-cds")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = found[("HorizontalPodAutoscaler", "til-cds")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "til-cds"}
    assert hpa["spec"]["minReplicas"] > pdb["minAvailable"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_config_maps_hold_the_repository_files(name: str) -> None:
    assert path_for(name).read_text(encoding="utf-8") == render(name), (
        "regenerate with: python -m tests.deploy.configmaps"
    )


def test_config_maps_load_as_criteria(tmp_path: Path) -> None:
    for config_map in SOURCES:
        folder = tmp_path / config_map
        folder.mkdir()
        for file_name, content in _documents(path_for(config_map))[0]["data"].items():
            (folder / file_name).write_text(content, encoding="utf-8")
    load_criteria(tmp_path / "criteria", load_mappings(tmp_path / "mappings"))


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = _compose_schema()
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [error.message for error in validator.iter_errors(document)] == []
    broken = {**document, "services": {**document["services"], "til-cds": {"imgae": "til-cds"}}}
    assert not validator.is_valid(broken), "the schema must refuse unknown service keys"


def test_compose_wires_the_service_to_postgres_and_loads_the_sandbox() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))["services"]
    assert {"til-cds", "postgres", "hapi", "sandbox-loader"} <= set(services)
    til = services["til-cds"]
    assert til["environment"]["TIL_CDS_AUDIT_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in til["environment"]["TIL_CDS_AUDIT_DATABASE_URL"]
    assert til["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all(port.startswith("127.0.0.1:") for port in til["ports"]), "dev mode stays on loopback"
    assert services["hapi"]["image"].startswith("hapiproject/hapi:")
    loader = " ".join(services["sandbox-loader"]["command"])
    assert "til-cds sandbox generate" in loader and "til-cds sandbox load" in loader
    assert services["sandbox-loader"]["restart"] == "no"


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and any("python:3.11-slim" in line for line in lines)
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert any("/healthz" in line for line in lines)
    for setting in ("TIL_CDS_CRITERIA_DIR", "TIL_CDS_MAPPINGS_DIR"):
        assert any(setting in line for line in lines), setting
    assert "COPY deploy/sandbox /opt/til-cds/deploy/sandbox" in lines, "the loader job and console read it"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!deploy/sandbox/" in ignore, "the build context holds the synthetic patients"
    command = next(line for line in reversed(lines) if line.startswith("CMD "))
    assert json.loads(command.removeprefix("CMD ")), "exec form, so signals reach the server"
    assert "exec til-cds serve" in command and "--workers" in command
