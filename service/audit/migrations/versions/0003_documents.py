"""One table of documents with binary addresses and numbered codecs, bodies packed per chart open.

Revision ID: 0003_documents
Revises: 0002_content_addressed
Create Date: 2026-11-29 05:00:00

``audit_document`` replaces ``audit_resource`` and ``audit_content``: their rows move over
unchanged but for the key (hex text to 32 bytes) and the codec (its name to its number), so
records of revision 0002, whose contents name a manifest of single resources, still read and
verify. New decisions store their input resources as one list per chart open, and a document
may be a delta against an earlier one of the same patient (``base``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from service.audit._content import LEGACY_CODECS, Codec, decode_body, encode_body

revision: str = "0003_documents"
down_revision: str | None = "0002_content_addressed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500
_LEGACY_NAMES = {number: name for name, number in LEGACY_CODECS.items()}


def _legacy_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("sha256", sa.String(length=64), primary_key=True),
        sa.Column("codec", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )


def _document_table() -> sa.Table:
    return sa.Table(
        "audit_document",
        sa.MetaData(),
        sa.Column("address", sa.LargeBinary(length=32), primary_key=True),
        sa.Column("codec", sa.SmallInteger(), nullable=False),
        sa.Column("base", sa.LargeBinary(length=32), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
    )


def _batches(connection: sa.Connection, query: sa.Select[Any]) -> Iterator[list[sa.Row[Any]]]:
    result = connection.execute(query)
    while rows := result.fetchmany(_BATCH):
        yield list(rows)


def upgrade() -> None:
    documents = op.create_table(
        "audit_document",
        sa.Column("address", sa.LargeBinary(length=32), nullable=False),
        sa.Column("codec", sa.SmallInteger(), nullable=False),
        sa.Column("base", sa.LargeBinary(length=32), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    connection = op.get_bind()
    for name in ("audit_resource", "audit_content"):
        legacy = _legacy_table(name)
        for rows in _batches(connection, sa.select(legacy.c.sha256, legacy.c.codec, legacy.c.body)):
            moved = [
                {
                    "address": bytes.fromhex(row.sha256),
                    "codec": int(LEGACY_CODECS[row.codec]),
                    "base": None,
                    "body": row.body,
                }
                for row in rows
            ]
            connection.execute(documents.insert(), moved)
        op.drop_table(name)


def downgrade() -> None:
    """Back to two tables; documents stored by codecs 0002 did not know are recompressed as plain zstd."""
    tables = {}
    for name in ("audit_resource", "audit_content"):
        op.create_table(
            name,
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("codec", sa.String(length=32), nullable=False),
            sa.Column("size", sa.Integer(), nullable=False),
            sa.Column("body", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("sha256"),
        )
        tables[name] = _legacy_table(name)
    documents = _document_table()
    connection = op.get_bind()
    query = sa.select(documents.c.address, documents.c.codec, documents.c.base, documents.c.body)
    for rows in _batches(connection, query):
        for row in rows:
            base = None
            if row.base is not None:
                base_row = connection.execute(query.where(documents.c.address == row.base)).one()
                base = decode_body(base_row.codec, base_row.body)
            text = decode_body(row.codec, row.body, base)
            table, codec, body = tables["audit_content"], "zstd", row.body
            if row.codec == Codec.RESOURCES:
                table, codec = tables["audit_resource"], _LEGACY_NAMES[Codec.RESOURCES]
            elif row.codec != Codec.ZSTD:
                body = encode_body(text, Codec.ZSTD)
            connection.execute(
                table.insert().values(sha256=row.address.hex(), codec=codec, size=len(text), body=body)
            )
    op.drop_table("audit_document")
