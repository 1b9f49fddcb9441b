"""Reading and writing the content-addressed documents of the audit store.

Documents (input resources in ``audit_resource``; decision contents and input manifests in
``audit_content``) are written before a decision is chained, with ``INSERT ... ON CONFLICT DO
NOTHING``, and read back checked against their addresses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Select, String, Table, any_, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from ._content import CODEC, RESOURCE_CODEC, Document, content_address, decode_body, encode_body
from ._records import PreparedDecision, record_view
from .errors import MissingAuditContentError
from .models import AuditContent, AuditRecord, AuditResource

__all__ = ["load_inputs", "record_from_row", "records_query", "store_documents"]

_LOOKUP_BATCH = 500

_record_table = cast(Table, AuditRecord.__table__)
_resource_table = cast(Table, AuditResource.__table__)
_content_table = cast(Table, AuditContent.__table__)


def records_query() -> Select[Any]:
    """Every record column, plus the codec and body of its content document where kept apart."""
    return select(
        _record_table,
        _content_table.c.codec.label("content_codec"),
        _content_table.c.body.label("content_body"),
    ).outerjoin(_content_table, _content_table.c.sha256 == _record_table.c.content_sha256)


def record_from_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """A row of :func:`records_query` as a plain dict with its content parsed."""
    if values["content_sha256"] is None:
        return record_view(values)
    if values["content_body"] is None:
        raise MissingAuditContentError(
            f"record {values['record_id']}: its content {values['content_sha256']} is missing"
        )
    return record_view(values, decode_body(values["content_codec"], values["content_body"]))


def _stored_addresses(connection: Connection, table: Table, addresses: list[str]) -> set[str]:
    """Which of ``addresses`` the table holds (one array parameter on PostgreSQL)."""
    found: set[str] = set()
    is_sqlite = connection.dialect.name == "sqlite"
    for start in range(0, len(addresses), _LOOKUP_BATCH):
        batch = addresses[start : start + _LOOKUP_BATCH]
        condition: ColumnElement[bool]
        if is_sqlite:
            condition = table.c.sha256.in_(batch)
        else:
            condition = table.c.sha256 == any_(bindparam(None, batch, type_=postgresql.ARRAY(String)))
        found.update(connection.execute(select(table.c.sha256).where(condition)).scalars())
    return found


def _insert_new(
    connection: Connection,
    table: Table,
    documents: Iterable[Document],
    codec: str = CODEC,
    *,
    lookup: bool = True,
) -> None:
    """Insert the documents not yet stored; one a concurrent writer adds meanwhile is skipped.

    ``lookup=False`` sends every document, for those new by construction (a decision's
    content holds its own id), saving the query.
    """
    pending = {item.sha256: item for item in documents}
    for stored in _stored_addresses(connection, table, list(pending)) if lookup else ():
        del pending[stored]
    if not pending:
        return
    rows = []
    for item in pending.values():
        stored_codec, body = encode_body(item.text, codec)
        rows.append({"sha256": item.sha256, "codec": stored_codec, "size": len(item.text), "body": body})
    if connection.dialect.name == "sqlite":
        connection.execute(sqlite.insert(table).on_conflict_do_nothing(index_elements=["sha256"]), rows)
    else:
        connection.execute(postgresql.insert(table).on_conflict_do_nothing(index_elements=["sha256"]), rows)


def store_documents(connection: Connection, prepared: PreparedDecision) -> None:
    """Write a decision's documents, before it is chained and outside the chain's lock.

    A manifest is written in the same transaction as its resources, so a stored manifest
    means every resource it lists is stored: a repeat chart open checks one address.
    """
    manifest = prepared.manifest
    if manifest is not None and not _stored_addresses(connection, _content_table, [manifest.sha256]):
        _insert_new(connection, _resource_table, prepared.resources, RESOURCE_CODEC)
        _insert_new(connection, _content_table, [manifest])
    _insert_new(connection, _content_table, [prepared.content], lookup=False)


def _load(connection: Connection, table: Table, addresses: list[str]) -> list[bytes]:
    """Documents by address, in the order asked, each checked against its address."""
    found: dict[str, bytes] = {}
    wanted = list(dict.fromkeys(addresses))
    for start in range(0, len(wanted), _LOOKUP_BATCH):
        batch = wanted[start : start + _LOOKUP_BATCH]
        query = select(table.c.sha256, table.c.codec, table.c.body).where(table.c.sha256.in_(batch))
        for row in connection.execute(query):
            text = decode_body(row.codec, row.body)
            if content_address(text) != row.sha256:
                raise MissingAuditContentError(f"{table.name} {row.sha256} does not match its address")
            found[row.sha256] = text
    missing = [address for address in wanted if address not in found]
    if missing:
        raise MissingAuditContentError(f"{table.name} is missing {len(missing)} documents, e.g. {missing[0]}")
    return [found[address] for address in addresses]


def load_inputs(connection: Connection, manifest_sha256: str) -> list[dict[str, Any]]:
    """The resources a manifest lists, in its order, each checked against its address."""
    references = json.loads(_load(connection, _content_table, [manifest_sha256])[0])
    texts = _load(connection, _resource_table, [reference["sha256"] for reference in references])
    return [json.loads(text) for text in texts]
