"""Issue 16: settings errors list every problem at once and never show a value, whole or in part.

Each secret setting is set to its own marker and every settings error path is triggered in
a real ``til-cds`` process (start-up, each command, bad values from the environment and from
the settings file); stdout and stderr must not hold 8 characters of any marker. Before, a
start-up without clients printed pydantic's ``input_value={'review_signing_key': ...}``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.settings import ClientConfig, Settings
from tests.cli.conftest import newcomer_environment
from tests.conftest import REPO


def _secret_settings() -> list[str]:
    """Every SecretStr setting, found from the model so that a new secret is covered too."""
    assert not any("SecretStr" in str(f.annotation) for f in ClientConfig.model_fields.values())
    return sorted(name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation))


SECRETS = _secret_settings()
MARKERS = {name: f"Mk{uuid.uuid4().hex}{i}zQ" for i, name in enumerate(SECRETS)}
DATABASE_PASSWORD = f"Pw{uuid.uuid4().hex}zQ"


def test_the_known_secrets_are_covered() -> None:
    assert {"audit_export_token", "audit_pseudonym_key", "review_signing_key"} <= set(SECRETS)


@dataclass
class ErrorPath:
    """A command run with the markers set (plus ``env``), expected to fail naming ``mentions``."""

    arguments: list[str]
    mentions: list[str]
    env: dict[str, str] = field(default_factory=dict)
    settings_file: str | None = None
    exit_code: int = 2


def _yaml(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


KEY = MARKERS["review_signing_key"]
ERROR_PATHS = {
    "production start-up without clients": ErrorPath(
        ["serve"], ["clients (TIL_CDS_CLIENTS as JSON): client authentication is not configured"]
    ),
    "every invalid value at once": ErrorPath(
        ["serve"],
        [
            "5 settings to fix",
            "clients (TIL_CDS_CLIENTS as JSON)",
            "jwt_clock_skew_seconds (TIL_CDS_JWT_CLOCK_SKEW_SECONDS)",
            "fhir_max_pages (TIL_CDS_FHIR_MAX_PAGES)",
            "dev (TIL_CDS_DEV)",
            "sandbox_console (TIL_CDS_SANDBOX_CONSOLE)",
        ],
        env={
            "TIL_CDS_CLIENTS": f'[{{"issuer": "x", "jwks": "{KEY}"}}',
            "TIL_CDS_JWT_CLOCK_SKEW_SECONDS": "a minute",
            "TIL_CDS_FHIR_MAX_PAGES": "-x",
            "TIL_CDS_DEV": "perhaps",
            "TIL_CDS_SANDBOX_CONSOLE": "sometimes",
        },
    ),
    "the development signing key in production": ErrorPath(
        ["serve"],
        ["review_signing_key (TIL_CDS_REVIEW_SIGNING_KEY): still has its development default"],
        env={"TIL_CDS_REVIEW_SIGNING_KEY": "dev-only-review-key-change-me"},
    ),
    "pseudonymised exports without a key": ErrorPath(
        ["serve", "--dev"],
        ["audit_pseudonym_key (TIL_CDS_AUDIT_PSEUDONYM_KEY): not set"],
        env={"TIL_CDS_AUDIT_PSEUDONYMISE_EXPORTS": "true", "TIL_CDS_AUDIT_PSEUDONYM_KEY": ""},
    ),
    "secrets of the wrong type and a misspelt secret in the settings file": ErrorPath(
        ["serve", "--dev"],
        [
            "review_signing_key (TIL_CDS_REVIEW_SIGNING_KEY): Input should be a valid string",
            "audit_export_token (TIL_CDS_AUDIT_EXPORT_TOKEN): Input should be a valid string",
            "review_signing_ky: not a setting; did you mean review_signing_key",
        ],
        env={"TIL_CDS_REVIEW_SIGNING_KEY": "", "TIL_CDS_AUDIT_EXPORT_TOKEN": ""},  # the file's count
        settings_file=_yaml(
            [
                f"review_signing_key: {{key: {KEY}}}",
                f"audit_export_token: [{MARKERS['audit_export_token']}]",
                f"review_signing_ky: {KEY}",
            ]
        ),
    ),
    "a settings file that is not YAML": ErrorPath(
        ["serve", "--dev"],
        ["the settings file", "at line"],
        settings_file=f"dev: true\nreview_signing_key: '{KEY}\n  x: [\n",
    ),
    "openapi with invalid settings": ErrorPath(
        ["openapi", "--output", "openapi-out.yaml"],
        ["fhir_timeout_seconds (TIL_CDS_FHIR_TIMEOUT_SECONDS)"],
        env={"TIL_CDS_FHIR_TIMEOUT_SECONDS": "never"},
    ),
    "bench with invalid settings": ErrorPath(
        ["bench", "--quick", "--parts", "prefetch", "--output", "bench-out.json"],
        ["mappings_dir (TIL_CDS_MAPPINGS_DIR)", "cors_origins (TIL_CDS_CORS_ORIGINS as JSON)"],
        env={"TIL_CDS_MAPPINGS_DIR": "", "TIL_CDS_CORS_ORIGINS": f"{{{KEY}"},
        settings_file=_yaml([f"mappings_dir: {{a: {KEY}}}"]),
    ),
    "a pseudonymised audit export without a key": ErrorPath(
        ["audit", "export", "--pseudonymise"],
        ["audit_pseudonym_key (TIL_CDS_AUDIT_PSEUDONYM_KEY): not set"],
        env={"TIL_CDS_AUDIT_PSEUDONYM_KEY": ""},
    ),
    "an audit export with an invalid switch": ErrorPath(
        ["audit", "export"],
        ["audit_pseudonymise_exports (TIL_CDS_AUDIT_PSEUDONYMISE_EXPORTS)"],
        env={"TIL_CDS_AUDIT_PSEUDONYMISE_EXPORTS": "maybe"},
    ),
    "an audit database URL that does not parse": ErrorPath(
        ["audit", "verify"],
        ["the audit database URL is not valid"],
        env={"TIL_CDS_AUDIT_DATABASE_URL": f"postgresql+psycopg://til:{DATABASE_PASSWORD}@db:port/til"},
    ),
    "an audit database that does not answer": ErrorPath(
        ["audit", "counts"],
        ["audit store unavailable"],
        env={"TIL_CDS_AUDIT_DATABASE_URL": f"postgresql+psycopg://til:{DATABASE_PASSWORD}@127.0.0.1:9/til"},
    ),
}


def _run(path: ErrorPath, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = newcomer_environment()
    env["PYTHONPATH"] = str(REPO)
    env.update({f"TIL_CDS_{name.upper()}": marker for name, marker in MARKERS.items()})
    env.update(path.env)
    env = {name: value for name, value in env.items() if value != ""}
    if path.settings_file is not None:
        settings_file = workdir / "settings.yaml"
        settings_file.write_text(path.settings_file, encoding="utf-8")
        env["TIL_CDS_SETTINGS_FILE"] = str(settings_file)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *path.arguments],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _leaks(text: str, secret: str) -> list[str]:
    return sorted({secret[i : i + 8] for i in range(len(secret) - 7) if secret[i : i + 8] in text})


@pytest.mark.parametrize("name", list(ERROR_PATHS))
def test_settings_errors_name_every_problem_and_no_value(name: str, tmp_path: Path) -> None:
    path = ERROR_PATHS[name]
    result = _run(path, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == path.exit_code, output
    for mention in path.mentions:
        assert mention in output, output
    assert "input_value" not in output and "Traceback" not in output, output
    for secret in [*MARKERS.values(), DATABASE_PASSWORD]:
        assert not _leaks(output, secret), f"{_leaks(output, secret)} of a secret in:\n{output}"
    for line in output.splitlines():
        if line.startswith("  - "):
            assert "TIL_CDS_" in line or "settings file" in line or "not a setting" in line, line
