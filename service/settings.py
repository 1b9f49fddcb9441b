"""Service configuration: a settings file plus ``TIL_CDS_*`` environment variables.

Built by :func:`get_settings` (cached), never at import time, so tests and the CLI can
point the service at another file or environment before anything reads it.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = ["REPO_ROOT", "ClientConfig", "Settings", "get_settings"]

REPO_ROOT = Path(__file__).resolve().parents[1]


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
        raise ValueError(f"jwks_url must be https (or http on loopback), not {url}")


class Settings(BaseSettings):
    """Everything the service reads from its environment.

    ``dev`` relaxes what is unsafe in production (no client authentication, plain http to
    loopback FHIR servers) and is refused unless the service binds to loopback.
    """

    model_config = SettingsConfigDict(
        env_prefix="TIL_CDS_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=os.environ.get("TIL_CDS_SETTINGS_FILE"),
    )

    dev: bool = False
    public_base_url: str = "http://127.0.0.1:8000"
    criteria_dir: Path = REPO_ROOT / "criteria"
    mappings_dir: Path = REPO_ROOT / "mappings"

    clients: list[ClientConfig] = Field(default_factory=list)
    jwt_clock_skew_seconds: int = 60
    jwks_refresh_cooldown_seconds: float = 30.0
    cors_origins: list[str] = Field(default_factory=list)

    fhir_timeout_seconds: float = 8.0
    fhir_max_pages: int = 20
    fhir_max_concurrency: int = 8
    fhir_page_size: int = 200
    max_body_bytes: int = 5_000_000
    max_prefetch_resources: int = 20_000

    audit_database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'audit.sqlite3'}"
    audit_export_token: SecretStr | None = None
    audit_pseudonym_key: SecretStr | None = None
    audit_pseudonymise_exports: bool = False

    review_token_ttl_seconds: int = 7 * 24 * 3600
    review_signing_key: SecretStr = SecretStr("dev-only-review-key-change-me")
    sandbox_console: bool = False

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.audit_pseudonymise_exports and self.audit_pseudonym_key is None:
            raise ValueError("audit_pseudonymise_exports needs audit_pseudonym_key (the HMAC key)")
        if not self.dev and self.review_signing_key.get_secret_value() == "dev-only-review-key-change-me":
            raise ValueError(
                "review_signing_key still has its development default: set TIL_CDS_REVIEW_SIGNING_KEY"
            )
        if not self.dev and not self.clients:
            raise ValueError(
                "client authentication is not configured: set TIL_CDS_CLIENTS (a list of "
                "issuers with their JWKS and FHIR servers) or run with --dev on loopback"
            )
        return self

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
            env_settings,
            YamlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and settings file."""
    return Settings()
