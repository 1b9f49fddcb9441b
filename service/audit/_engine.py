"""Engines for the audit store: SQLite with WAL and chosen BEGIN modes, or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from .errors import AuditConfigurationError

__all__ = ["create_audit_engine", "describe_database_error", "insert_skipping_conflicts"]


def _configure_sqlite(engine: Engine) -> None:
    """Let the store choose BEGIN IMMEDIATE for writes, and use WAL so reads never block them."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def insert_skipping_conflicts(table: Table, key: str) -> dict[str, Insert]:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` for each dialect the store runs on, by name:
    an insert of a row already there (the same document, a record id already chained) is
    skipped rather than failing its transaction."""
    return {
        name: dialect.insert(table).on_conflict_do_nothing(index_elements=[key])
        for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
    }


def describe_database_error(exc: SQLAlchemyError) -> str:
    """The driver's first message line; statement parameters (which may hold PHI) are left out."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else 'no message'}"


def create_audit_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path`` (parent directory created) or ``postgresql://...``.

    Statement parameters are hidden from errors and logs because they carry patient data.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # SQLAlchemy's message quotes the whole URL, password included: neither it nor the
        # chained cause may reach a terminal or a log.
        raise AuditConfigurationError(
            "the audit database URL is not valid: use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise AuditConfigurationError("the SQLite audit store needs a file path")
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditConfigurationError(f"cannot create audit directory: {exc}") from exc
        engine = create_engine(parsed, hide_parameters=True, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed,
            hide_parameters=True,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 5},
        )
        return engine
    raise AuditConfigurationError(f"unsupported audit database {backend!r}: use sqlite or postgresql")
