"""The audit database schema, as typed SQLAlchemy 2 ORM classes.

The Alembic revisions in ``migrations/`` create these tables; a test compares the two so they
cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "CHAIN_HEAD_ID",
    "AuditBase",
    "AuditCard",
    "AuditChainHead",
    "AuditDocument",
    "AuditRecord",
    "CriteriaVersion",
    "SeenJti",
]

CHAIN_HEAD_ID = 1
"""The id of the one row of ``audit_chain_head``."""


class AuditBase(DeclarativeBase):
    """Declarative base of the audit tables, separate from any other metadata of the service."""


class AuditRecord(AuditBase):
    """One hook decision, feedback item or pre-screen run; append-only and chained by hash.

    ``seq`` is assigned from the chain head while it is locked, not from a database sequence,
    so a rolled-back append leaves no gap and any gap means a deleted record.

    Since revision 0004 the row is stored compactly (``_records.stored_columns`` and
    ``logical_values`` convert): ids are UUIDs, hashes and addresses 32 bytes (the chain hash
    is still taken over their hex text, so every record verifies as it was written), and
    ``decision_id`` is NULL when it is the record's own id (decisions, pre-screen runs).
    Columns are in PostgreSQL alignment order, fixed widths first.
    """

    __tablename__ = "audit_record"
    __table_args__ = (
        # Records are appended in time order, so on PostgreSQL a BRIN index (24 kB for a
        # million rows) serves the exports' time ranges; ``autosummarize`` has autovacuum
        # summarise each block range once filled, since an unsummarised one is always read.
        Index(
            "ix_audit_record_recorded_at",
            "recorded_at",
            postgresql_using="brin",
            postgresql_with={"autosummarize": "on"},
        ),
        Index(
            "ix_audit_record_dedupe_key",
            "dedupe_key",
            unique=True,
            sqlite_where=text("dedupe_key IS NOT NULL"),
            postgresql_where=text("dedupe_key IS NOT NULL"),
        ),
    )

    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    content_codec: Mapped[int | None] = mapped_column(SmallInteger)
    record_id: Mapped[str] = mapped_column(Uuid(as_uuid=False), unique=True)
    decision_id: Mapped[str | None] = mapped_column(Uuid(as_uuid=False))
    kind: Mapped[str] = mapped_column(String(16))
    service_id: Mapped[str] = mapped_column(String(200))
    hook: Mapped[str] = mapped_column(String(200))
    patient_ref: Mapped[str | None] = mapped_column(String(500), index=True)
    user_ref: Mapped[str | None] = mapped_column(String(500))
    trial_ids: Mapped[list[str]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    # Decisions written since revision 0002 keep ``content`` empty and name their content by
    # ``content_sha256``; older records hold it inline. Since 0004 a content that is a delta
    # (``content_codec``, against the document ``content_base``) is kept in ``content_body``
    # of its own row, any other in ``audit_document``.
    content: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    content_base: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    content_body: Mapped[bytes | None] = mapped_column(LargeBinary)


class AuditDocument(AuditBase):
    """A decision's content or the list of FHIR resources it read, stored once by address.

    ``address`` is the SHA-256 of the document's canonical JSON; ``body`` is one zstd frame
    decoded by ``codec`` (``service.audit._content.Codec``), with the text of the document
    ``base`` as its dictionary when the codec is a delta. Written before the chain is locked,
    only ever inserted (``ON CONFLICT DO NOTHING``), so the chained row stays small.
    """

    __tablename__ = "audit_document"

    address: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    codec: Mapped[int] = mapped_column(SmallInteger)
    base: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCard(AuditBase):
    """Which decision showed a card, so feedback finds it through an index, not by scanning.

    ``card`` is the card's 64-bit key (``_records.card_key``), ``seq`` the decision's; a hit is
    confirmed against the card's ``uuid`` in the decision's content, and the trials the card
    is about are read from there (the chain covers the content). The table has no primary key:
    rows are only ever looked up by ``card``, and one index serves that at 20 bytes a card.
    """

    __tablename__ = "audit_card"
    __table_args__ = (Index("ix_audit_card_card", "card"),)

    card: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(Integer, ForeignKey("audit_record.seq"))

    __mapper_args__ = {"primary_key": [card, seq]}


class AuditChainHead(AuditBase):
    """The single row every append locks: it serialises writers and names the last record."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class CriteriaVersion(AuditBase):
    """A criteria snapshot by fingerprint, so a decision can be replayed with what it used."""

    __tablename__ = "criteria_version"

    fingerprint: Mapped[str] = mapped_column(String(200), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    saved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SeenJti(AuditBase):
    """JWT ids already accepted, shared by every instance so a replayed token is refused."""

    __tablename__ = "seen_jti"

    issuer: Mapped[str] = mapped_column(String(500), primary_key=True)
    jti: Mapped[str] = mapped_column(String(500), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
