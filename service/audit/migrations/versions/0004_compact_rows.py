"""Compact chained rows: UUID ids, 32-byte hashes, cards keyed by record seq, fewer indexes.

Revision ID: 0004_compact_rows
Revises: 0003_documents
Create Date: 2026-11-29 12:00:00

What a repeat chart open stores is mostly its chained row and card rows, so they shrink:

- ``record_id`` and ``decision_id`` become UUIDs (16 bytes on PostgreSQL, not 37), and
  ``decision_id`` is NULL where it is the record's own id (decisions, pre-screen runs);
- ``prev_hash``, ``hash``, ``content_sha256`` and ``dedupe_key`` become 32 bytes, not 64 hex
  characters (the chain hash is still taken over the hex text, so every record verifies as
  it was written), and the head's ``last_hash`` with them;
- ``dedupe_key`` (feedback only) gets a partial unique index, so decisions add no entry;
- ``decision_id`` loses its index, which no query used;
- a card row is ``(card, seq)``, a 64-bit key of the card's uuid and the decision's seq,
  with one index on the key (no primary key, whose B-tree no query used): a hit is confirmed
  against the card in the decision's content, and the trials the card is about are read from
  there (the chain covers it), as the monthly counts already did, instead of being copied
  into every card row;
- a decision's content that is a delta (a few hundred bytes for a repeat chart open) is kept
  in its own row (``content_codec``, ``content_base``, ``content_body``) rather than in a
  document row, which would cost as much again in row header, address and index entry;
  contents already stored stay where they are;
- ``recorded_at`` gets a BRIN index on PostgreSQL (records are appended in time order), with
  ``autosummarize`` so each block range is summarised once filled, not at the next VACUUM;
- columns are in PostgreSQL alignment order (the timestamp first), so no row is padded.

Every row is copied (the tables are rebuilt to get the new column order). Ids are checked to
be UUIDs in lowercase hyphenated form: a UUID column would give any other spelling back
changed, and the record's hash would no longer verify, so such a record stops the migration.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004_compact_rows"
down_revision: str | None = "0003_documents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500
_HEX_COLUMNS = ("dedupe_key", "content_sha256", "prev_hash", "hash")


def card_key(card_uuid: str) -> int:
    """A frozen copy of ``service.audit._records.card_key`` as of this revision: a migration
    must write what it wrote the day it was made, whatever the code does later."""
    return int.from_bytes(hashlib.sha256(card_uuid.encode("utf-8")).digest()[:8], "big", signed=True)


_OLD = "_0003"
_PG_CONSTRAINTS = {
    "audit_record": ("audit_record_pkey", "audit_record_record_id_key", "audit_record_dedupe_key_key"),
    "audit_card": ("audit_card_pkey", "audit_card_record_id_fkey"),
    "audit_chain_head": ("audit_chain_head_pkey",),
}
_NEW = "_0004"
_PG_COMPACT_CONSTRAINTS = {
    "audit_record": ("audit_record_pkey", "audit_record_record_id_key"),
    "audit_card": ("audit_card_seq_fkey",),
    "audit_chain_head": ("audit_chain_head_pkey",),
}
_OLD_INDEXES = {"audit_record": ("ix_audit_record_recorded_at", "ix_audit_record_patient_ref")}
"""Indexes whose names the rebuilt tables take; the others go with their tables."""


def _text_record_columns() -> list[sa.Column[Any]]:
    """``audit_record`` as revisions 0001-0003 made it."""
    return [
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("hook", sa.String(length=200), nullable=False),
        sa.Column("patient_ref", sa.String(length=500), nullable=True),
        sa.Column("user_ref", sa.String(length=500), nullable=True),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("trial_ids", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
    ]


def _compact_record_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("content_codec", sa.SmallInteger(), nullable=True),
        sa.Column("record_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("decision_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("hook", sa.String(length=200), nullable=False),
        sa.Column("patient_ref", sa.String(length=500), nullable=True),
        sa.Column("user_ref", sa.String(length=500), nullable=True),
        sa.Column("trial_ids", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("dedupe_key", sa.LargeBinary(length=32), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.LargeBinary(length=32), nullable=True),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("content_base", sa.LargeBinary(length=32), nullable=True),
        sa.Column("content_body", sa.LargeBinary(), nullable=True),
    ]


def _table(name: str, *columns: sa.Column[Any]) -> sa.Table:
    return sa.Table(name, sa.MetaData(), *columns)


def _batches(records: sa.Table) -> Iterator[list[dict[str, Any]]]:
    """The rows of a records table in seq order, a batch at a time, each batch its own query
    (by the primary key), so no cursor stays open while the batch is copied."""
    connection, last = op.get_bind(), 0
    query = sa.select(records).order_by(records.c.seq).limit(_BATCH)
    while rows := connection.execute(query.where(records.c.seq > last)).mappings().all():
        yield [dict(row) for row in rows]
        last = rows[-1]["seq"]


def _set_aside(names: Sequence[str]) -> None:
    """Rename the tables being rebuilt (and their indexes' names) out of the way."""
    is_postgres = op.get_bind().dialect.name == "postgresql"
    for name in names:
        for index in _OLD_INDEXES.get(name, ()):
            op.drop_index(index, table_name=name)
        op.rename_table(name, name + _OLD)
        if is_postgres:
            for constraint in _PG_CONSTRAINTS[name]:
                op.execute(f"ALTER TABLE {name}{_OLD} RENAME CONSTRAINT {constraint} TO {constraint}{_OLD}")


def _uuid(text: str, seq: int, column: str) -> str:
    try:
        if str(uuid.UUID(text)) == text:
            return text
    except ValueError:
        pass
    raise RuntimeError(
        f"audit record seq {seq}: {column} {text!r} is not a UUID in lowercase hyphenated form, so "
        "revision 0004 cannot store it without changing what the record's hash covers"
    )


def _bytes(text: str | None, seq: int, column: str) -> bytes | None:
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != 32 or value.hex() != text:
        raise RuntimeError(
            f"audit record seq {seq}: {column} {text!r} is not a SHA-256 in hex; the record was "
            "altered (`til-cds audit verify` with the previous version names it)"
        )
    return value


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    seq = row["seq"]
    compact = {**row, "record_id": _uuid(row["record_id"], seq, "record_id")}
    decision_id = _uuid(row["decision_id"], seq, "decision_id")
    compact["decision_id"] = None if decision_id == compact["record_id"] else decision_id
    for column in _HEX_COLUMNS:
        compact[column] = _bytes(row[column], seq, column)
    return compact


def _create_compact_tables() -> tuple[sa.Table, sa.Table, sa.Table]:
    records = op.create_table(
        "audit_record",
        *_compact_record_columns(),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("record_id"),
    )
    op.create_index(
        "ix_audit_record_recorded_at",
        "audit_record",
        ["recorded_at"],
        postgresql_using="brin",
        postgresql_with={"autosummarize": "on"},
    )
    op.create_index("ix_audit_record_patient_ref", "audit_record", ["patient_ref"])
    op.create_index(
        "ix_audit_record_dedupe_key",
        "audit_record",
        ["dedupe_key"],
        unique=True,
        sqlite_where=sa.text("dedupe_key IS NOT NULL"),
        postgresql_where=sa.text("dedupe_key IS NOT NULL"),
    )
    cards = op.create_table(
        "audit_card",
        sa.Column("card", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["seq"], ["audit_record.seq"]),
    )
    op.create_index("ix_audit_card_card", "audit_card", ["card"])
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    return records, cards, head


def upgrade() -> None:
    connection = op.get_bind()
    _set_aside(("audit_card", "audit_record", "audit_chain_head"))
    records, cards, head = _create_compact_tables()
    old_records = _table("audit_record" + _OLD, *_text_record_columns())
    old_cards = _table(
        "audit_card" + _OLD,
        sa.Column("card_uuid", sa.String(length=200)),
        sa.Column("record_id", sa.String(length=36)),
    )
    for rows in _batches(old_records):
        connection.execute(records.insert(), [_compact(row) for row in rows])
        seqs = {row["record_id"]: row["seq"] for row in rows}
        shown = connection.execute(
            sa.select(old_cards.c.card_uuid, old_cards.c.record_id).where(old_cards.c.record_id.in_(seqs))
        ).all()
        keyed = sorted({(card_key(card_uuid), seqs[record_id]) for card_uuid, record_id in shown})
        if keyed:
            connection.execute(cards.insert(), [{"card": card, "seq": seq} for card, seq in keyed])
    old_head = _table(
        "audit_chain_head" + _OLD,
        sa.Column("id", sa.Integer()),
        sa.Column("last_seq", sa.Integer()),
        sa.Column("last_hash", sa.String(length=64)),
    )
    for old in connection.execute(sa.select(old_head)).mappings().all():
        last_hash = _bytes(old["last_hash"], old["last_seq"], "chain head")
        connection.execute(head.insert().values({**old, "last_hash": last_hash}))
    for name in ("audit_card", "audit_record", "audit_chain_head"):
        op.drop_table(name + _OLD)


def downgrade() -> None:
    """Back to text columns; card rows get their uuid text and trials from the decision's content.

    The contents are read with today's readers (the compact card row keeps no uuid text). A
    decision with cards whose content cannot be read stops the downgrade, naming its record,
    rather than lose which cards it showed; ``til-cds audit verify`` names such records first.
    """
    from service.audit._documents import DocumentReader
    from service.audit._records import card_trial_ids, stored_decision

    connection = op.get_bind()
    for index in ("ix_audit_record_recorded_at", "ix_audit_record_patient_ref", "ix_audit_record_dedupe_key"):
        op.drop_index(index, table_name="audit_record")
    for name in ("audit_card", "audit_record", "audit_chain_head"):
        op.rename_table(name, name + _NEW)
    if connection.dialect.name == "postgresql":
        for name, constraints in _PG_COMPACT_CONSTRAINTS.items():
            for constraint in constraints:
                op.execute(f"ALTER TABLE {name}{_NEW} RENAME CONSTRAINT {constraint} TO {constraint}{_NEW}")
    compact_records = _table("audit_record" + _NEW, *_compact_record_columns())
    compact_cards = _table(
        "audit_card" + _NEW, sa.Column("card", sa.BigInteger()), sa.Column("seq", sa.Integer())
    )
    compact_head = _table(
        "audit_chain_head" + _NEW,
        sa.Column("id", sa.Integer()),
        sa.Column("last_seq", sa.Integer()),
        sa.Column("last_hash", sa.LargeBinary(length=32)),
    )
    records = op.create_table(
        "audit_record",
        *_text_record_columns(),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("record_id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_audit_record_recorded_at", "audit_record", ["recorded_at"])
    op.create_index("ix_audit_record_patient_ref", "audit_record", ["patient_ref"])
    op.create_index("ix_audit_record_decision_id", "audit_record", ["decision_id"])
    cards = op.create_table(
        "audit_card",
        sa.Column("card_uuid", sa.String(length=200), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("trial_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["record_id"], ["audit_record.record_id"]),
        sa.PrimaryKeyConstraint("card_uuid", "record_id"),
    )
    op.create_index("ix_audit_card_record_id", "audit_card", ["record_id"])
    head = op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    documents = _table(
        "audit_document",
        sa.Column("address", sa.LargeBinary(length=32)),
        sa.Column("codec", sa.SmallInteger()),
        sa.Column("base", sa.LargeBinary(length=32)),
        sa.Column("body", sa.LargeBinary()),
    )
    reader = DocumentReader(connection)
    op.create_index("ix_audit_card_0004_seq", "audit_card" + _NEW, ["seq"])
    for rows in _batches(compact_records):
        text_rows = []
        for row in rows:
            text_row = {column.name: row[column.name] for column in records.columns}
            text_row["decision_id"] = row["decision_id"] or row["record_id"]
            for column in _HEX_COLUMNS:
                text_row[column] = None if row[column] is None else bytes(row[column]).hex()
            text_rows.append(text_row)
        connection.execute(records.insert(), text_rows)
        kept_in_row = [
            {
                "address": row["content_sha256"],
                "codec": row["content_codec"],
                "base": row["content_base"],
                "body": row["content_body"],
            }
            for row in rows
            if row["content_body"] is not None
        ]
        if kept_in_row:
            connection.execute(documents.insert(), kept_in_row)
        keys = connection.execute(
            sa.select(compact_cards.c.seq, compact_cards.c.card).where(
                compact_cards.c.seq.in_([row["seq"] for row in rows])
            )
        ).all()
        shown: dict[int, set[int]] = {}
        for seq, card in keys:
            shown.setdefault(seq, set()).add(card)
        card_rows: list[dict[str, Any]] = []
        for row in rows:
            if row["seq"] not in shown:
                continue
            view = reader.content(row)
            decision = stored_decision(view["content"])
            by_uuid = {
                card["uuid"]: card
                for card in reversed(view["content"].get("cards", []))
                if isinstance(card.get("uuid"), str) and card_key(card["uuid"]) in shown[row["seq"]]
            }
            card_rows.extend(
                {
                    "card_uuid": text,
                    "record_id": row["record_id"],
                    "trial_ids": card_trial_ids(card, decision),
                }
                for text, card in by_uuid.items()
            )
        if card_rows:
            connection.execute(cards.insert(), card_rows)
    for compact in connection.execute(sa.select(compact_head)).mappings().all():
        connection.execute(head.insert().values({**compact, "last_hash": bytes(compact["last_hash"]).hex()}))
    for name in ("audit_card", "audit_record", "audit_chain_head"):
        op.drop_table(name + _NEW)
