"""Linking a row into the hash chain, with statements built once.

Everything here runs while the chain head is locked, so it is kept to the fewest statements
and the least Python: Core tables rather than ORM entities (whose bulk path re-reads the
mapper for every value), and statements built at import and given parameter dicts, so
SQLAlchemy finds their compiled form by a key it has already computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from ._canonical import chain_hash
from ._engine import insert_skipping_conflicts
from ._records import hash_document, stored_columns
from .errors import AuditUnavailableError
from .models import CHAIN_HEAD_ID, AuditCard, AuditChainHead, AuditRecord

__all__ = ["ChainHead", "insert_cards", "link", "lock_head", "read_head"]

_record_table = cast(Table, AuditRecord.__table__)
_card_table = cast(Table, AuditCard.__table__)
_head_table = cast(Table, AuditChainHead.__table__)

_READ_HEAD = select(_head_table.c.last_seq, _head_table.c.last_hash).where(_head_table.c.id == CHAIN_HEAD_ID)
_LOCK_HEAD = _READ_HEAD.with_for_update()
_MOVE_HEAD = (
    update(_head_table)
    .where(_head_table.c.id == CHAIN_HEAD_ID)
    .values(last_seq=bindparam("new_seq"), last_hash=bindparam("new_hash"))
)
_INSERT_CARDS = insert(_card_table)


_INSERT_RECORD = {
    name: statement.execution_options(preserve_rowcount=True)
    for name, statement in insert_skipping_conflicts(_record_table, "record_id").items()
}
"""``INSERT ... ON CONFLICT (record_id) DO NOTHING`` by dialect: a record id already chained
inserts nothing (``rowcount`` 0, which SQLAlchemy keeps for an INSERT only when asked, from
2.0.28), so a duplicate is told without a query of its own under the lock."""


@dataclass(frozen=True)
class ChainHead:
    """The last record's seq and hash (hex text, which the next record's hash is taken over)."""

    last_seq: int
    last_hash: str


def read_head(connection: Connection) -> None:
    """Read the chain head without locking it, to see the store answers and is migrated."""
    connection.execute(_READ_HEAD).first()


def lock_head(connection: Connection) -> ChainHead:
    """Lock the chain head for this transaction (``SELECT ... FOR UPDATE``) and read it."""
    head = connection.execute(_LOCK_HEAD).one()
    return ChainHead(head.last_seq, bytes(head.last_hash).hex())


def link(connection: Connection, head: ChainHead, values: Mapping[str, Any]) -> int | None:
    """Chain a record after the head (hash taken over its hex text) and return its seq, or None
    when a record with its id is already chained (nothing is written then)."""
    seq = head.last_seq + 1
    row = {**values, "seq": seq, "prev_hash": head.last_hash}
    row["hash"] = chain_hash(hash_document(row), head.last_hash)
    written = connection.execute(_INSERT_RECORD[connection.dialect.name], stored_columns(row)).rowcount
    if written == 0:
        return None
    if written != 1:  # a driver that cannot tell (-1) must not move the head past a missing row
        raise AuditUnavailableError(
            f"the database reported {written} rows written for one audit record; nothing was linked"
        )
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": bytes.fromhex(row["hash"])})
    return seq


def insert_cards(connection: Connection, seq: int, cards: Sequence[int]) -> None:
    """Index the cards a decision showed by their keys (one executemany)."""
    if cards:
        connection.execute(_INSERT_CARDS, [{"card": key, "seq": seq} for key in cards])
