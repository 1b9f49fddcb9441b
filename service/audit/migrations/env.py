"""Alembic environment of the audit store.

``AuditStore.migrate()`` passes an open connection in ``config.attributes["connection"]``;
run by hand, the URL comes from ``-x url=...`` or the service settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from service.audit.models import AuditBase


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=AuditBase.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        from service.settings import AuditStoreSettings, load_settings

        url = load_settings(AuditStoreSettings).audit_database_url
    engine = create_engine(url)
    try:
        with engine.begin() as own_connection:
            _run(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the audit store migrations run online only")
_run_online()
