"""Render ``deploy/kubernetes/configmap-{criteria,mappings}.yaml`` from ``criteria/`` and ``mappings/``.

    python -m tests.deploy.configmaps      # rewrite both files

A test keeps them equal to the repository's files, so what a cluster deploys is what was reviewed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = REPO / "deploy" / "kubernetes"
SOURCES = {"criteria": REPO / "criteria", "mappings": REPO / "mappings"}


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so the YAML files read as themselves."""


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_LiteralDumper.add_representer(str, _literal)


def config_map(name: str, directory: Path) -> dict[str, Any]:
    """A ConfigMap named ``til-cds-<name>`` with every ``*.yaml`` file of ``directory``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"til-cds-{name}", "labels": {"app.kubernetes.io/name": "til-cds"}},
        "data": {path.name: path.read_text(encoding="utf-8") for path in sorted(directory.glob("*.yaml"))},
    }


def render(name: str) -> str:
    header = f"# Generated from {name}/ by `python -m tests.deploy.configmaps`; do not edit.\n"
    return header + yaml.dump(
        config_map(name, SOURCES[name]),
        Dumper=_LiteralDumper,
        sort_keys=False,
        width=1000,
        allow_unicode=True,
    )


def path_for(name: str) -> Path:
    return KUBERNETES_DIR / f"configmap-{name}.yaml"


if __name__ == "__main__":
    for name in SOURCES:
        path_for(name).write_text(render(name), encoding="utf-8")
        print(f"wrote {path_for(name)}")
