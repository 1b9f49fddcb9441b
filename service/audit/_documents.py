"""Reading and writing the audit store's documents (``audit_document``).

A decision's documents are written before it is chained, with ``INSERT ... ON CONFLICT DO
NOTHING``. Its input list is not written at all when it is already stored (a repeat chart
open); otherwise it, like the content, is stored as a delta against the patient's latest
stored document of its kind when that is much smaller (see ``_content.smallest_encoding``);
a content delta then goes into the decision's own row instead (revision 0004). Every read,
from a document or a row, is checked against the content's address.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Row, Select, String, Table, bindparam, select, type_coerce

from ._content import Base, Codec, Document, address_of, decode_body, smallest_encoding
from ._engine import insert_skipping_conflicts
from ._records import PreparedDecision, card_key, find_card, logical_values, record_view
from .errors import InvalidAuditRecordError, MissingAuditContentError
from .models import AuditCard, AuditDocument, AuditRecord

__all__ = [
    "DocumentReader",
    "Latest",
    "Memory",
    "Stored",
    "decision_showing",
    "input_resources",
    "latest_of_patient",
    "names_inputs",
    "records_query",
    "store_documents",
]

_LOOKUP_BATCH = 500
_KNOWN_INPUTS = 1024
"""Input lists a store remembers as stored: a repeat chart open in this process then hashes its
list but does not look through it for secrets again (an entry is two hashes)."""
_LATEST_KEPT = 64
_LATEST_BYTES = 16 * 2**20
"""Patients whose bases a store remembers (at most this many, and this many bytes of their
texts), so a repeat chart open in this process takes its deltas without reading them."""
_BASES_KEPT = 16
"""Decoded bases a reader keeps: records come in chain order, patients interleaved."""

_record_table = cast(Table, AuditRecord.__table__)
_card_table = cast(Table, AuditCard.__table__)
_document_table = cast(Table, AuditDocument.__table__)
_rows_query = select(
    _document_table.c.address, _document_table.c.codec, _document_table.c.base, _document_table.c.body
)
_ROWS_OF = _rows_query.where(_document_table.c.address.in_(bindparam("addresses", expanding=True)))
_ROW_OF = _rows_query.where(_document_table.c.address == bindparam("address"))
_IS_STORED = select(_document_table.c.address).where(_document_table.c.address == bindparam("address"))
_INSERT_DOCUMENTS = insert_skipping_conflicts(_document_table, "address")
"""Documents are only ever inserted; one a concurrent writer stored meanwhile is skipped."""


_ID_COLUMNS = {
    name: type_coerce(_record_table.c[name], String).label(name) for name in ("record_id", "decision_id")
}
"""The id columns read as the database holds them: SQLAlchemy's UUID type would raise on a
value edited into something else (SQLite keeps any text), before ``verify`` could report it;
``logical_values`` gives them their form."""


def records_query() -> Select[Any]:
    """Every record column; contents kept apart are read by a :class:`DocumentReader`."""
    return select(*(_ID_COLUMNS.get(column.name, column) for column in _record_table.c))


def _address(text: object, what: str) -> bytes:
    """A hex address from a record, as bytes; a malformed one is an altered record."""
    try:
        if isinstance(text, str) and len(text) == 64:
            return bytes.fromhex(text)
    except ValueError:
        pass
    raise MissingAuditContentError(f"{what} address {text!r} is not a SHA-256")


class DocumentReader:
    """Reads documents by address on one connection, through their bases, each checked.

    ``fetch`` loads the rows of many documents in a few queries (a batch of records);
    ``text`` decodes one. Decoded bases are kept for the next documents of the same patient.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._rows: dict[bytes, Any] = {}  # rows of _rows_query
        self._bases: OrderedDict[bytes, bytes] = OrderedDict()

    def fetch(self, addresses: Iterable[bytes], *, anew: bool = False) -> None:
        """Load the rows of these documents and of their bases (``anew``: forget earlier ones)."""
        if anew:
            self._rows = {}
        wanted = [address for address in dict.fromkeys(addresses) if address not in self._rows]
        for _ in ("documents", "their bases"):
            for start in range(0, len(wanted), _LOOKUP_BATCH):
                batch = wanted[start : start + _LOOKUP_BATCH]
                found = self.connection.execute(_ROWS_OF, {"addresses": batch})
                self._rows.update((row.address, row) for row in found)
            bases = {row.base for row in self._rows.values() if row.base is not None}
            wanted = [base for base in bases if base not in self._rows and base not in self._bases]

    def fetch_contents(self, rows: Iterable[Row[Any]]) -> None:
        """:meth:`fetch` the content documents (or the bases of contents kept in the row) of a
        batch of record rows."""
        addresses = (
            row.content_sha256 if row.content_body is None else row.content_base
            for row in rows
            if row.content_sha256 is not None
        )
        self.fetch((address for address in addresses if address is not None), anew=True)

    def row(self, address: bytes) -> Any:
        """The stored row of a document, from the last fetch or one query."""
        if address not in self._rows:
            found = self.connection.execute(_ROW_OF, {"address": address}).first()
            if found is None:
                return None
            self._rows[address] = found
        return self._rows[address]

    def text(self, address: bytes, what: str) -> bytes:
        """A document's canonical JSON; raises :class:`MissingAuditContentError` naming ``what``."""
        row = self.row(address)
        if row is None:
            raise MissingAuditContentError(f"{what} {address.hex()} is missing")
        return self.decoded(address, row.codec, row.base, row.body, what)

    def decoded(self, address: bytes, codec: int, base: bytes | None, body: bytes, what: str) -> bytes:
        """The canonical JSON of a stored body (through its base), checked against its address."""
        name = f"{what} {address.hex()}"
        base_text = None if base is None else self._base(base, name)
        try:
            text = decode_body(codec, body, base_text)
        except InvalidAuditRecordError as exc:
            raise MissingAuditContentError(f"{name}: {exc}") from exc
        if address_of(text) != address:
            raise MissingAuditContentError(f"{name} does not match its address")
        return text

    def content_text(self, values: Mapping[str, Any]) -> bytes:
        """The content of a record kept apart (``content_sha256``): from the row's own
        ``content_body`` when it holds it, else from its document."""
        address = _address(values["content_sha256"], "content")
        if values.get("content_body") is None:
            return self.text(address, "content")
        return self.decoded(
            address, values["content_codec"], values["content_base"], values["content_body"], "content"
        )

    def _base(self, address: bytes, name: str) -> bytes:
        if address in self._bases:
            self._bases.move_to_end(address)
            return self._bases[address]
        row = self.row(address)
        if row is not None and row.base is not None:
            raise MissingAuditContentError(f"{name}: its base {address.hex()} is itself a delta")
        try:
            text = self.text(address, "base")
        except MissingAuditContentError as exc:
            raise MissingAuditContentError(f"{name}: its {exc}") from exc
        self._bases[address] = text
        while len(self._bases) > _BASES_KEPT:
            self._bases.popitem(last=False)
        return text

    def content(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A stored record row as a plain dict, its content read from its document where kept apart."""
        values = logical_values(row)
        if values["content_sha256"] is None:
            return record_view(values)
        try:
            text = self.content_text(values)
        except MissingAuditContentError as exc:
            raise MissingAuditContentError(f"record {values['record_id']}: {exc}") from exc
        return record_view(values, text)

    def keyframe(self, address: bytes) -> Base | None:
        """The document a delta of ``address``'s patient can be taken against: itself, or its
        base if it is a delta; None when it cannot be read (the next document stands alone)."""
        row = self.row(address)
        if row is None:
            return None
        target = address if row.base is None else row.base
        try:
            text = self.text(target, "base")
        except MissingAuditContentError:
            return None
        return Base(target, text, len(self.row(target).body))


def names_inputs(content: Mapping[str, Any]) -> bool:
    """Whether a decision's content names input resources stored apart.

    Decisions since revision 0003 name one input list (``input_list``); those of revision
    0002 a manifest of single resources (``input_manifest``); older ones hold them inline.
    """
    return "input_list" in content or "input_manifest" in content


def input_resources(reader: DocumentReader, content: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The FHIR resources a decision's content names (see :func:`names_inputs`), in input order."""
    if "input_list" in content:
        address = _address(content["input_list"].get("sha256"), "input list")
        return list(orjson.loads(reader.text(address, "input list")))
    manifest = content.get("input_manifest")
    if manifest is None:
        return []
    references = orjson.loads(
        reader.text(_address(manifest.get("sha256"), "input manifest"), "input manifest")
    )
    addresses = [_address(reference.get("sha256"), "input resource") for reference in references]
    reader.fetch(addresses)
    return [orjson.loads(reader.text(address, "input resource")) for address in addresses]


@dataclass(frozen=True)
class Latest:
    """What a patient's latest decision offers the next one: a document to take a content
    delta against, the address of its input list, and a document to take an inputs delta against."""

    content: Base | None
    inputs: bytes | None
    inputs_base: Base | None

    def size(self) -> int:
        """Bytes of text it holds."""
        return sum(len(item.text) for item in (self.content, self.inputs_base) if item is not None)


_LATEST_OF_PATIENT = (
    select(
        _ID_COLUMNS["record_id"],
        _ID_COLUMNS["decision_id"],
        _record_table.c.content_sha256,
        _record_table.c.content_codec,
        _record_table.c.content_base,
        _record_table.c.content_body,
    )
    .where(_record_table.c.patient_ref == bindparam("patient_ref"))
    .where(_record_table.c.kind == "decision")
    .where(_record_table.c.content_sha256.is_not(None))
    .order_by(_record_table.c.seq.desc())
    .limit(1)
)


def latest_of_patient(connection: Connection, patient_ref: str) -> Latest | None:
    """The patient's latest chained decision that keeps its content apart, if any."""
    row = connection.execute(_LATEST_OF_PATIENT, {"patient_ref": patient_ref}).first()
    if row is None:
        return None
    reader = DocumentReader(connection)
    values = logical_values(row._asdict())
    try:
        text = reader.content_text(values)
    except MissingAuditContentError:
        return None
    reference = orjson.loads(text).get("input_list")
    try:
        inputs = _address(reference.get("sha256"), "input list") if isinstance(reference, dict) else None
    except MissingAuditContentError:
        inputs = None
    keyframe = reader.keyframe(row.content_sha256 if row.content_body is None else row.content_base)
    return Latest(keyframe, inputs, None)


_SHOWING = (
    records_query()
    .join(_card_table, _card_table.c.seq == _record_table.c.seq)
    .where(_card_table.c.card == bindparam("card"))
    .order_by(_record_table.c.seq.desc())
)
_SHOWING_OF_SERVICE = _SHOWING.where(_record_table.c.service_id == bindparam("service_id"))


def decision_showing(
    connection: Connection, card_uuid: str, service_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The latest decision (of ``service_id``, if given) that showed the card with this uuid,
    and the card as its content holds it; None when no decision did.

    Found through the card index (:func:`~service.audit._records.card_key`), then confirmed
    against the content, which the chain covers.  A decision whose content is lost or altered
    (``audit verify`` names it) cannot confirm the card: when no readable one does, it is
    returned with its content None and no card, so that feedback on it is still recorded,
    linked to it, rather than refused for a fault of the store's.
    """
    if service_id is None:
        rows = connection.execute(_SHOWING, {"card": card_key(card_uuid)})
    else:
        rows = connection.execute(
            _SHOWING_OF_SERVICE, {"card": card_key(card_uuid), "service_id": service_id}
        )
    reader = DocumentReader(connection)
    unreadable: dict[str, Any] | None = None
    for row in rows.all():
        try:
            view = reader.content(row._asdict())
        except (MissingAuditContentError, InvalidAuditRecordError):
            if unreadable is None:
                unreadable = record_view(logical_values(row._asdict()), b"null")
            continue
        card = find_card(view["content"], card_uuid)
        if card is not None:
            return view, card
    return None if unreadable is None else (unreadable, None)


def _is_stored(connection: Connection, address: bytes) -> bool:
    return connection.execute(_IS_STORED, {"address": address}).first() is not None


def _insert(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    connection.execute(_INSERT_DOCUMENTS[connection.dialect.name], rows)


def _row(item: Document, codec: Codec, base: Base | None) -> tuple[dict[str, Any], Base]:
    """The row to store for ``item``, and the base the patient's next delta of its kind uses."""
    stored_codec, base_address, body = smallest_encoding(item.text, codec, base)
    row = {"address": item.address, "codec": int(stored_codec), "base": base_address, "body": body}
    if base_address is not None and base is not None:
        return row, base
    return row, Base(item.address, item.text, len(body))


@dataclass(frozen=True)
class Stored:
    """What :func:`store_documents` did: what the decision offers the patient's next one, and
    the columns that hold its content in its own row when it is a delta (else empty)."""

    offered: Latest
    content_columns: dict[str, Any]


def store_documents(
    connect: Callable[[], Connection], prepared: PreparedDecision, latest: Latest | None
) -> Stored:
    """Write a decision's documents, before it is chained and outside the chain's lock.

    ``latest`` is what the patient's latest decision offers (:func:`latest_of_patient`). The
    input list is not written when it is known to be stored (``prepared.inputs`` is None), is
    the patient's latest, or is found. A content that is a delta (a few hundred bytes for a
    repeat chart open) is not written here but returned, to go into the decision's own row:
    a document row of its own would cost as much again in row header, address and index entry.
    ``connect`` gives the write transaction's connection; it is asked for only to look a
    document up or write one, so a repeat chart open whose patient is remembered opens none.
    """
    rows = []
    inputs = prepared.inputs
    inputs_base = latest.inputs_base if latest is not None else None
    if (
        inputs is not None
        and (latest is None or latest.inputs != inputs.address)
        and not _is_stored(connect(), inputs.address)
    ):
        if inputs_base is None and latest is not None and latest.inputs is not None:
            inputs_base = DocumentReader(connect()).keyframe(latest.inputs)
        row, inputs_base = _row(inputs, Codec.RESOURCES, inputs_base)
        rows.append(row)
    row, content_base = _row(
        prepared.content, Codec.DECISIONS, latest.content if latest is not None else None
    )
    content_columns = {}
    if row["base"] is None:
        rows.append(row)
    else:
        content_columns = {
            "content_codec": row["codec"],
            "content_base": row["base"],
            "content_body": row["body"],
        }
    if rows:
        _insert(connect(), rows)
    return Stored(Latest(content_base, prepared.inputs_address, inputs_base), content_columns)


class Memory:
    """What a store remembers between appends, for the newest few: input lists it knows are
    stored (by the hash of the list as received) and what each patient's latest decision offers."""

    def __init__(self) -> None:
        self.known_inputs: OrderedDict[bytes, bytes] = OrderedDict()
        self._latest: OrderedDict[str, Latest] = OrderedDict()
        self._lock = threading.Lock()

    def latest(self, patient_ref: str | None) -> Latest | None:
        """What the patient's latest decision written here offers, if remembered."""
        if patient_ref is None:
            return None
        with self._lock:
            return self._latest.get(patient_ref)

    def remember(self, prepared: PreparedDecision, offered: Latest) -> None:
        """Remember a decision once it is chained: its input list is stored, and what it offers."""
        patient_ref = prepared.values["patient_ref"]
        with self._lock:
            if prepared.inputs_key is not None and prepared.inputs_address is not None:
                self.known_inputs.pop(prepared.inputs_key, None)
                self.known_inputs[prepared.inputs_key] = prepared.inputs_address
                while len(self.known_inputs) > _KNOWN_INPUTS:
                    self.known_inputs.popitem(last=False)
            if patient_ref is None:
                return
            self._latest.pop(patient_ref, None)
            self._latest[patient_ref] = offered
            while (
                len(self._latest) > _LATEST_KEPT
                or sum(map(Latest.size, self._latest.values())) > _LATEST_BYTES
            ):
                self._latest.popitem(last=False)
