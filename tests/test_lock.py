"""Issue 16: the lock files agree with pyproject.toml, so what is installed is what was tested.

``requirements-test.lock`` (service and test extras; ``scripts/check``) and
``requirements.lock`` (service only; the README and the container image) are written by
``scripts/lock``. A dependency added to or tightened in ``pyproject.toml`` without
re-running it fails here, naming the package.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

Pins = dict[str, list[tuple[Version, str]]]
"""Package -> (version, marker) for each ``name==version ; marker`` line (one per marker)."""

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def read_lock(path: Path) -> tuple[Pins, set[str]]:
    """The pins of a lock file, and the packages pinned without a hash."""
    pins: Pins = {}
    unhashed: set[str] = set()
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            if current is not None:
                unhashed.add(current)
            current = canonicalize_name(match["name"])
            pins.setdefault(current, []).append((Version(match["version"]), (match["marker"] or "").strip()))
        elif line.strip().startswith("--hash=sha256:"):
            current = None
    if current is not None:
        unhashed.add(current)
    return pins, unhashed


def disagreements(requirements: list[str], pins: Pins) -> list[str]:
    """Each requirement that the lock does not pin at a version it allows, on Python 3.11 Linux."""
    environment = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7"}
    environment.update(sys_platform="linux", platform_system="Linux", implementation_name="cpython")
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement.name} is not in the lock")
            continue
        for version, marker in pins[name]:
            if marker and not Requirement(f"x; {marker}").marker.evaluate(environment):  # type: ignore[union-attr]
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{requirement.name} is locked at {version}, outside {requirement.specifier}")
    return problems


def _project() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {"service": project["dependencies"], "test": project["optional-dependencies"]["test"]}


def test_the_test_lock_pins_every_dependency_and_test_extra() -> None:
    pins, unhashed = read_lock(REPO / "requirements-test.lock")
    project = _project()
    assert disagreements(project["service"] + project["test"], pins) == [], "run scripts/lock"
    assert unhashed == set(), "every pin needs its hashes (pip install --require-hashes)"


def test_the_service_lock_pins_the_service_dependencies_at_the_tested_versions() -> None:
    pins, unhashed = read_lock(REPO / "requirements.lock")
    test_pins, _ = read_lock(REPO / "requirements-test.lock")
    project = _project()
    assert disagreements(project["service"], pins) == [], "run scripts/lock"
    assert unhashed == set()
    assert {n: pins[n] for n in pins} == {n: test_pins[n] for n in pins}, "the two locks disagree"
    test_only = {canonicalize_name(Requirement(r).name) for r in project["test"]}
    assert test_only.isdisjoint(pins), "test tools in the service lock"


def test_extras_of_a_dependency_are_locked_too() -> None:
    """``psycopg[binary]`` needs ``psycopg-binary``: the lock must carry what an extra pulls in."""
    pins, _ = read_lock(REPO / "requirements.lock")
    assert "psycopg-binary" in pins
    assert pins["psycopg-binary"][0][0] == pins["psycopg"][0][0]


def test_a_disagreement_is_reported() -> None:
    """The check itself: a requirement the lock misses or pins outside its range is named."""
    pins, _ = read_lock(REPO / "requirements-test.lock")
    assert disagreements(["fastapi>=999", "not-a-real-package>=1", "httpx>=0.27"], pins) == [
        f"fastapi is locked at {pins['fastapi'][0][0]}, outside >=999",
        "not-a-real-package is not in the lock",
    ]


def test_scripts_install_from_the_locks() -> None:
    check = (REPO / "scripts" / "check").read_text(encoding="utf-8")
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "--require-hashes -r requirements-test.lock" in check
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "pip install --require-hashes -r requirements.lock" in readme
