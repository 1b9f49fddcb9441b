"""The append-only, hash-chained audit store (SQLite file or PostgreSQL).

A decision is written in two transactions. First its documents — the list of input resources
it read and its content — go into one content-addressed table (``INSERT ... ON CONFLICT DO
NOTHING``; an input list already stored by an earlier chart open is not written again, and a
changed one is stored as a delta against the patient's last; a repeat open this store
remembers has nothing to write there and skips this transaction). Then the chain-head row is
locked (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) only to link
a small row that names the content by its hash (and holds it when it is a delta of a few
hundred bytes, as on a repeat chart open), so writers in any number of threads or processes
extend one linear chain without waiting for each other's large writes. A crash between the two leaves unreferenced documents,
never a record without its content. Database failures surface as
:class:`AuditUnavailableError`, never as a silent drop, so the caller can refuse to answer a
hook it could not record.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy import Text as TextType
from sqlalchemy import cast as sql_cast
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from . import _counts, _documents, _verify
from ._canonical import as_utc, canonical_json, parse_timestamp
from ._chain import ChainHead, insert_cards, link, lock_head, read_head
from ._content import Document
from ._engine import create_audit_engine, describe_database_error
from ._records import (
    DECISION_OUTCOMES,
    FEEDBACK_OUTCOMES,
    PreparedDecision,
    card_trial_ids,
    feedback_values,
    prepare_decision,
    prepare_feedback,
    stored_decision,
)
from .errors import (
    AuditUnavailableError,
    DuplicateRecordError,
    InvalidAuditRecordError,
    UnknownCardError,
)
from .models import AuditRecord, CriteriaVersion, SeenJti

__all__ = ["AuditStore", "ExportFilters", "VerifyReport"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
RECORD_KINDS = ("decision", "feedback")
_JTI_PURGE_EVERY = 100
_STREAM_BATCH = 200
_T = TypeVar("_T")

_record_table = cast(Table, AuditRecord.__table__)
_FEEDBACK_BY_KEY = select(_record_table.c.record_id).where(_record_table.c.dedupe_key == bindparam("key"))
_REMEMBER_JTI = insert(cast(Table, SeenJti.__table__))


@dataclass(frozen=True)
class ExportFilters:
    """Which records to export: ``since`` inclusive, ``until`` exclusive, all optional."""

    since: datetime | None = None
    until: datetime | None = None
    patient_ref: str | None = None
    trial_id: str | None = None
    outcome: str | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in DECISION_OUTCOMES + FEEDBACK_OUTCOMES:
            known = ", ".join(DECISION_OUTCOMES + FEEDBACK_OUTCOMES)
            raise ValueError(f"unknown outcome {self.outcome!r}; use one of {known}")
        if self.kind is not None and self.kind not in RECORD_KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; use decision or feedback")

    @classmethod
    def from_text(
        cls,
        *,
        since: str | None = None,
        until: str | None = None,
        patient_ref: str | None = None,
        trial_id: str | None = None,
        outcome: str | None = None,
        kind: str | None = None,
    ) -> ExportFilters:
        """Filters from query or command-line text; a bad value raises ValueError naming it."""
        try:
            since_at = None if since is None else parse_timestamp(since, "since")
            until_at = None if until is None else parse_timestamp(until, "until")
        except InvalidAuditRecordError as exc:
            raise ValueError(str(exc)) from exc
        return cls(since_at, until_at, patient_ref, trial_id, outcome, kind)


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain: ``ok`` only when ``problems`` is empty."""

    ok: bool
    records_checked: int
    problems: list[str] = field(default_factory=list)


class AuditStore:
    """Append, read, verify and export the audit trail in one SQL database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jti_calls = itertools.count(1)
        self._saved_fingerprints: set[str] = set()
        self._memory = _documents.Memory()
        self.last_chain_lock_seconds: float | None = None
        """How long the last append held the chain lock (locked to committed), for the benchmark."""

    @classmethod
    def from_url(cls, url: str) -> AuditStore:
        """A store for ``sqlite:///path`` (parent directory created) or ``postgresql://...``."""
        return cls(create_audit_engine(url))

    def ping(self) -> bool:
        """Whether the store answers and is migrated, for a readiness probe."""
        try:
            with self._transaction(write=False) as connection:
                read_head(connection)
        except AuditUnavailableError:
            return False
        return True

    def close(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @property
    def _is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def _transaction(self, *, write: bool, snapshot: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                if write:
                    connection.execution_options(sqlite_begin="IMMEDIATE")
                if snapshot and not self._is_sqlite:
                    connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    yield connection
        except SQLAlchemyError as exc:
            raise AuditUnavailableError(f"audit store unavailable: {describe_database_error(exc)}") from exc

    @contextmanager
    def _lazy_transaction(self) -> Iterator[Callable[[], Connection]]:
        """A write transaction begun only when the body first asks for its connection, so an
        append with nothing to read or store first (a repeat chart open remembered here) costs
        no pool checkout, ``BEGIN`` or ``COMMIT`` before the chain's own transaction."""
        with ExitStack() as stack:
            opened: list[Connection] = []

            def connect() -> Connection:
                if not opened:
                    opened.append(stack.enter_context(self._transaction(write=True)))
                return opened[0]

            yield connect

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (the newest by default); safe to run from every instance."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self._transaction(write=True) as connection:
            if not self._is_sqlite:
                connection.execute(select(func.pg_advisory_xact_lock(0x7A11C_D5A)))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def save_criteria_version(self, fingerprint: str, snapshot: Mapping[str, Any]) -> None:
        """Keep the criteria snapshot a decision used; saving a fingerprint again is a no-op.

        Fingerprints this store has saved are remembered, so the hook route's call on
        every request costs a set lookup, not a write transaction.
        """
        if fingerprint in self._saved_fingerprints:
            return
        content = canonical_json(dict(snapshot))
        try:
            with self._transaction(write=True) as connection:
                exists = connection.execute(
                    select(CriteriaVersion.fingerprint).where(CriteriaVersion.fingerprint == fingerprint)
                ).first()
                if exists is None:
                    connection.execute(
                        insert(CriteriaVersion).values(
                            fingerprint=fingerprint, content=content, saved_at=datetime.now(UTC)
                        )
                    )
        except AuditUnavailableError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        self._saved_fingerprints.add(fingerprint)

    def get_criteria_version(self, fingerprint: str) -> dict[str, Any] | None:
        """The saved criteria snapshot for ``fingerprint``, if any."""
        with self._transaction(write=False) as connection:
            content = connection.execute(
                select(CriteriaVersion.content).where(CriteriaVersion.fingerprint == fingerprint)
            ).scalar_one_or_none()
        return None if content is None else dict(json.loads(content))

    def _append(self, write: Callable[[Connection, ChainHead], _T]) -> _T:
        with self._transaction(write=True) as connection:
            head = lock_head(connection)
            locked_at = time.perf_counter()
            result = write(connection, head)
        self.last_chain_lock_seconds = time.perf_counter() - locked_at
        return result

    @staticmethod
    def _insert_record(connection: Connection, head: ChainHead, values: Mapping[str, Any]) -> int:
        """Chain a record after the head and return its seq; its id already chained raises."""
        seq = link(connection, head, values)
        if seq is None:
            raise DuplicateRecordError(
                f"{values['kind']} {values['record_id']} is already in the audit trail"
            )
        return seq

    def append_decision(self, record: Mapping[str, Any], *, received_inputs: Document | None = None) -> str:
        """Record one hook decision (secrets scrubbed) and return its ``decision_id``.

        ``received_inputs``: :func:`service.audit.received_inputs` of
        ``record["input_resources"]`` (their canonical JSON and its address), when the
        caller has it already; neither is taken again.
        """
        prepared = prepare_decision(record, self._memory.known_inputs, received=received_inputs)
        patient_ref = prepared.values["patient_ref"]
        with self._lazy_transaction() as connect:
            latest = self._memory.latest(patient_ref)
            if latest is None and patient_ref is not None:
                latest = _documents.latest_of_patient(connect(), patient_ref)
            stored = _documents.store_documents(connect, prepared, latest)

        def write(connection: Connection, head: ChainHead) -> str:
            return self._write_decision(connection, head, prepared, stored.content_columns)

        decision_id = self._append(write)
        self._memory.remember(prepared, stored.offered)
        return decision_id

    def _write_decision(
        self,
        connection: Connection,
        head: ChainHead,
        prepared: PreparedDecision,
        content_columns: Mapping[str, Any],
    ) -> str:
        seq = self._insert_record(connection, head, {**prepared.values, **content_columns})
        insert_cards(connection, seq, prepared.cards)
        return str(prepared.values["record_id"])

    def append_feedback(self, service_id: str, feedback: Mapping[str, Any]) -> tuple[str, bool]:
        """Record a feedback item linked to its decision: ``(record_id, is_new)``.

        The same card, outcome and outcomeTimestamp again returns the first record's id. The
        decision that showed the card, and the trials the card is about, are read before the
        chain is locked: records are never changed, so what is read then still holds.
        """
        prepared = prepare_feedback(feedback)
        with self._transaction(write=False) as connection:
            existing = self._feedback_by_key(connection, prepared.dedupe_key)
            if existing is not None:
                return existing, False
            found = _documents.decision_showing(connection, prepared.card_uuid, service_id)
        if found is None:
            raise UnknownCardError(
                f"no decision of service {service_id!r} showed card {prepared.card_uuid!r}"
            )
        decision, card = found
        values = feedback_values(
            prepared,
            service_id=service_id,
            decision=decision,
            trial_ids=_trials_of_card(card, decision),
        )

        def write(connection: Connection, head: ChainHead) -> tuple[str, bool]:
            existing = self._feedback_by_key(connection, prepared.dedupe_key)
            if existing is not None:
                return existing, False
            self._insert_record(connection, head, values)
            return str(values["record_id"]), True

        return self._append(write)

    @staticmethod
    def _feedback_by_key(connection: Connection, dedupe_key: str) -> str | None:
        found = connection.execute(_FEEDBACK_BY_KEY, {"key": bytes.fromhex(dedupe_key)}).scalar_one_or_none()
        return None if found is None else str(found)

    def append_prescreen_run(self, record: Mapping[str, Any]) -> str:
        """Record one population pre-screen run as a single record of kind ``prescreen``.

        The record holds what the run read and wrote (manifest, fingerprints, counts, the
        worklist's hash), not the verdicts; it links to no card, patient or user.
        """
        if not isinstance(record, Mapping) or not isinstance(record.get("trial_ids"), list):
            raise InvalidAuditRecordError("a prescreen run record must be an object with trial_ids")
        record_id = str(uuid.uuid4())
        values = {
            "record_id": record_id,
            "kind": "prescreen",
            "recorded_at": datetime.now(UTC),
            "service_id": str(record.get("service_id") or "til-trials"),
            "hook": "prescreen",
            "patient_ref": None,
            "user_ref": None,
            "decision_id": record_id,
            "trial_ids": [str(t) for t in record["trial_ids"]],
            "outcome": "completed",
            "dedupe_key": None,
            "content": canonical_json(dict(record)),
        }

        def write(connection: Connection, head: ChainHead) -> str:
            self._insert_record(connection, head, values)
            return record_id

        return self._append(write)

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        """The decision record with this id (metadata plus ``content``), or None.

        Any spelling of a UUID finds it (an auditor may paste one in upper case); text that is
        no UUID finds nothing.
        """
        try:
            decision_id = str(uuid.UUID(decision_id))
        except ValueError:
            return None
        query = _documents.records_query().where(
            _record_table.c.record_id == decision_id, _record_table.c.kind == "decision"
        )
        with self._transaction(write=False) as connection:
            row = connection.execute(query).first()
            return None if row is None else _documents.DocumentReader(connection).content(row._asdict())

    def find_decision_by_card(self, card_uuid: str) -> dict[str, Any] | None:
        """The latest decision that showed the card with this uuid, or None."""
        with self._transaction(write=False) as connection:
            found = _documents.decision_showing(connection, card_uuid)
        return None if found is None else found[0]

    def verify(self) -> VerifyReport:
        """Walk the chain in one snapshot: edited records, broken links and gaps are problems,
        and so is a record whose content or input resources are missing or do not match their
        addresses."""
        with self._transaction(write=False, snapshot=True) as connection:
            checked, problems = _verify.walk_chain(
                connection, _documents.records_query().order_by(_record_table.c.seq)
            )
        return VerifyReport(ok=not problems, records_checked=checked, problems=problems)

    def input_resources(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The FHIR resources a decision read, in input order, from a record view.

        Old records hold them inline; newer ones name the document (or, at revision 0002, the
        manifest of documents) that holds them. A missing or altered document raises
        :class:`MissingAuditContentError`.
        """
        if "input_resources" in record["content"]:
            return list(record["content"]["input_resources"] or [])
        with self._transaction(write=False, snapshot=True) as connection:
            return _documents.input_resources(_documents.DocumentReader(connection), record["content"])

    def iter_records(
        self, filters: ExportFilters | None = None, *, with_inputs: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Stream matching records in chain order, fetching a batch at a time.

        ``with_inputs`` puts each decision's input resources back into its content as
        ``input_resources`` (loaded from the store), for exports that must stand alone.
        """
        filters = filters or ExportFilters()
        query = _documents.records_query().order_by(_record_table.c.seq)
        if filters.since is not None:
            query = query.where(_record_table.c.recorded_at >= as_utc(filters.since))
        if filters.until is not None:
            query = query.where(_record_table.c.recorded_at < as_utc(filters.until))
        if filters.patient_ref is not None:
            query = query.where(_record_table.c.patient_ref == filters.patient_ref)
        if filters.kind is not None:
            query = query.where(_record_table.c.kind == filters.kind)
        per_trial_outcome = filters.trial_id is not None and filters.outcome in DECISION_OUTCOMES
        if per_trial_outcome:
            query = query.where(_record_table.c.kind == "decision")
        elif filters.outcome is not None:
            query = query.where(_record_table.c.outcome == filters.outcome)
        if filters.trial_id is not None:
            quoted = json.dumps(filters.trial_id)
            query = query.where(
                sql_cast(_record_table.c.trial_ids, TextType).contains(quoted, autoescape=True)
            )
        with self._transaction(write=False, snapshot=with_inputs) as connection:
            reader = _documents.DocumentReader(connection)
            rows = connection.execution_options(yield_per=_STREAM_BATCH).execute(query)
            for batch in rows.partitions():
                reader.fetch_contents(batch)
                views = [reader.content(row._asdict()) for row in batch]
                for view in views:
                    if filters.trial_id is not None and filters.trial_id not in view["trial_ids"]:
                        continue
                    if per_trial_outcome and not _counts.trial_outcome_matches(
                        view, str(filters.trial_id), str(filters.outcome)
                    ):
                        continue
                    if (
                        with_inputs
                        and view["kind"] == "decision"
                        and _documents.names_inputs(view["content"])
                    ):
                        view["content"]["input_resources"] = _documents.input_resources(
                            reader, view["content"]
                        )
                    yield view

    def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """True the first time an (issuer, jti) is seen by any instance, False on a replay."""
        if next(self._jti_calls) % _JTI_PURGE_EVERY == 0:
            self.purge_expired_jti()
        try:
            with self._transaction(write=True) as connection:
                connection.execute(
                    _REMEMBER_JTI, {"issuer": issuer, "jti": jti, "expires_at": as_utc(expires_at)}
                )
        except AuditUnavailableError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    def purge_expired_jti(self, now: datetime | None = None) -> int:
        """Forget JWT ids whose tokens have expired; returns how many were removed."""
        cutoff = as_utc(now or datetime.now(UTC))
        with self._transaction(write=True) as connection:
            result = connection.execute(delete(SeenJti).where(SeenJti.expires_at < cutoff))
        return int(result.rowcount)

    def counts(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Per month and trial: cards shown, accepted, overridden, and override reasons."""
        return _counts.monthly_trial_counts(self.iter_records(ExportFilters(since, until)))


def _trials_of_card(card: Mapping[str, Any] | None, decision: Mapping[str, Any]) -> list[str]:
    """The trials a card was about, for feedback on it; none when its decision cannot be read
    (the feedback is recorded all the same, and ``audit verify`` names the damaged record)."""
    if card is None:
        return []
    try:
        return card_trial_ids(card, stored_decision(decision["content"]))
    except InvalidAuditRecordError:
        return []
