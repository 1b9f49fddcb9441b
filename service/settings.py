"""Service configuration: a settings file plus ``TIL_CDS_*`` environment variables.

Built by :func:`get_settings` (cached), never at import time, so tests and the CLI can
point the service at another file or environment before anything reads it.

Each command reads only the settings it uses: ``til-cds audit verify`` needs the audit
database (:class:`AuditStoreSettings`), ``audit export`` also the pseudonym key
(:class:`AuditExportSettings`), ``serve`` everything (:class:`Settings`, which extends
both).  :func:`load_settings` turns every problem into one line naming the setting and its
environment variable, all at once and never with the value: pydantic's own message
repeats the input (``input_value=...``), which for a signing key is the secret.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _PydanticSettingsError

from service.errors import ConfigurationError

__all__ = [
    "DEFAULT_AUDIT_DATABASE_URL",
    "DEV_REVIEW_SIGNING_KEY",
    "REPO_ROOT",
    "AuditExportSettings",
    "AuditStoreSettings",
    "ClientConfig",
    "Settings",
    "SettingsProblemsError",
    "get_settings",
    "load_settings",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "TIL_CDS_"
DEFAULT_AUDIT_DATABASE_URL = f"sqlite:///{REPO_ROOT / 'var' / 'audit.sqlite3'}"
"""In the checkout's ``var/`` whatever the working directory, so ``serve`` and the audit
commands find the same trail from anywhere."""
DEV_REVIEW_SIGNING_KEY = "dev-only-review-key-change-me"


class ClientConfig(BaseModel):
    """One CDS client (an EHR), identified by its JWT issuer.

    A plain model, not settings: a settings class would read bare ``TENANT`` or
    ``ISSUER`` environment variables into every client it is built for.
    """

    model_config = ConfigDict(extra="forbid")

    issuer: str
    jwks_url: AnyHttpUrl | None = None
    jwks: dict[str, Any] | None = None
    tenant: str | None = None
    fhir_servers: list[str] = Field(default_factory=list)
    algorithms: list[str] = Field(default_factory=lambda: ["ES384", "RS384"])

    @field_validator("jwks_url")
    @classmethod
    def _https_jwks(cls, url: AnyHttpUrl | None) -> AnyHttpUrl | None:
        """Keys fetched over plain http could be swapped in transit; loopback is the exception."""
        if url is None or url.scheme == "https" or url.host == "localhost":
            return url
        try:
            if ipaddress.ip_address((url.host or "").strip("[]")).is_loopback:
                return url
        except ValueError:
            pass
        raise ValueError("jwks_url must be https (or http on loopback)")


class _LenientEnvSource(EnvSettingsSource):
    """Hands an undecodable JSON value on to validation instead of stopping at it.

    pydantic-settings stops at the first complex value that is not JSON; passed on as
    text it fails validation like any other bad value, so it is listed with the rest.
    """

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value


class _SettingsBase(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        yaml_file=os.environ.get("TIL_CDS_SETTINGS_FILE"),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _LenientEnvSource(settings_cls),
            YamlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )


class AuditStoreSettings(_SettingsBase):
    """What reading the audit trail needs: where it is (``audit verify``, ``counts``, ``replay``)."""

    audit_database_url: str = DEFAULT_AUDIT_DATABASE_URL


class AuditExportSettings(AuditStoreSettings):
    """What exporting the trail needs: the store, and the key when exports are pseudonymised."""

    audit_pseudonymise_exports: bool = False
    audit_pseudonym_key: SecretStr | None = Field(default=None, validate_default=True)

    @field_validator("audit_pseudonym_key")
    @classmethod
    def _pseudonymising_needs_a_key(cls, key: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if key is None and info.data.get("audit_pseudonymise_exports", False):
            raise ValueError("not set, and pseudonymised exports need it (the HMAC key for pseudonyms)")
        return key


class Settings(AuditExportSettings):
    """Everything the service reads from its environment.

    ``dev`` relaxes what is unsafe in production (no client authentication, plain http to
    loopback FHIR servers) and is refused unless the service binds to loopback.  The
    production refusals are field validators (not one model validator) so that they are
    reported together with every other problem.
    """

    model_config = SettingsConfigDict(extra="forbid")

    dev: bool = False
    public_base_url: str = "http://127.0.0.1:8000"
    criteria_dir: Path = REPO_ROOT / "criteria"
    mappings_dir: Path = REPO_ROOT / "mappings"

    clients: list[ClientConfig] = Field(default_factory=list, validate_default=True)
    jwt_clock_skew_seconds: int = 60
    jwks_refresh_cooldown_seconds: float = 30.0
    cors_origins: list[str] = Field(default_factory=list)

    fhir_timeout_seconds: float = 8.0
    fhir_max_pages: int = 20
    fhir_max_concurrency: int = 8
    fhir_page_size: int = 200
    max_body_bytes: int = 5_000_000
    max_prefetch_resources: int = 20_000
    facts_memo_resources: int = Field(default=50_000, ge=0)

    audit_export_token: SecretStr | None = None

    review_token_ttl_seconds: int = 7 * 24 * 3600
    review_signing_key: SecretStr = Field(default=SecretStr(DEV_REVIEW_SIGNING_KEY), validate_default=True)
    sandbox_console: bool = False

    @field_validator("clients")
    @classmethod
    def _clients_outside_dev(cls, clients: list[ClientConfig], info: ValidationInfo) -> list[ClientConfig]:
        if not clients and not info.data.get("dev", False):
            raise ValueError(
                "client authentication is not configured: list the CDS clients (issuers with "
                "their JWKS and FHIR servers), or run with --dev on loopback"
            )
        return clients

    @field_validator("review_signing_key")
    @classmethod
    def _own_signing_key_outside_dev(cls, key: SecretStr, info: ValidationInfo) -> SecretStr:
        if not info.data.get("dev", False) and key.get_secret_value() == DEV_REVIEW_SIGNING_KEY:
            raise ValueError("still has its development default: set a random key of your own")
        return key


class SettingsProblemsError(ConfigurationError):
    """The settings a command needs are missing or invalid; one line per problem, no values."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = f"{len(self.problems)} setting{'s' if len(self.problems) != 1 else ''}"
        super().__init__(
            f"{count} to fix (environment variables {ENV_PREFIX}*, or the YAML file named by "
            "TIL_CDS_SETTINGS_FILE):\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _describe(error: Any, cls: type[BaseSettings]) -> str:
    """One line for one pydantic error, built from its location and message only."""
    location = [str(part) for part in error["loc"]]
    field = location[0] if location else "settings"
    path = field + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in location[1:])
    if error["type"] == "extra_forbidden" and len(location) == 1:
        near = difflib.get_close_matches(field, list(cls.model_fields), n=1)
        hint = f"; did you mean {near[0]} ({_env_name(near[0])})?" if near else ""
        return f"{field}: not a setting{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if field in cls.model_fields:
        annotation = str(cls.model_fields[field].annotation)
        as_json = " as JSON" if ("list" in annotation or "dict" in annotation) else ""
        return f"{path} ({_env_name(field)}{as_json}): {message}"
    return f"{path}: {message}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where the settings file is broken, without PyYAML's snippet of the line (it may hold a key)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    return f"the settings file {os.environ.get('TIL_CDS_SETTINGS_FILE')}{where}: {problem}"


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment and settings file, or raise every problem at once.

    The pydantic error is deliberately not chained (``from None``): its text quotes the
    values, and a traceback printed by whoever catches this would show them.
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = [_describe(e, cls) for e in exc.errors(include_url=False, include_input=False)]
    except yaml.YAMLError as exc:
        problems = [_yaml_problem(exc)]
    except (_PydanticSettingsError, json.JSONDecodeError) as exc:
        problems = [str(exc).split(":", 1)[0]]
    raise SettingsProblemsError(problems) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and settings file."""
    return load_settings(Settings)
