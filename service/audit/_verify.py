"""Walk the audit chain: hashes, links, gaps, and the documents records refer to by address.

Each stored resource is decompressed and hashed once (not once per decision that read it);
each manifest is read once; then every record is checked against what was found.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Select, select

from ._canonical import GENESIS_HASH, chain_hash
from ._content import content_address, decode_body
from ._records import hash_document
from .errors import InvalidAuditRecordError
from .models import AuditChainHead, AuditContent, AuditResource

__all__ = ["walk_chain"]

_STREAM_BATCH = 200
_SHOWN = 3

_resource_table = AuditResource.__table__
_content_table = AuditContent.__table__


def _stored_resources(connection: Connection) -> tuple[set[str], dict[str, str]]:
    """Addresses of resources that hash to their address, and why the others are wrong."""
    good: set[str] = set()
    bad: dict[str, str] = {}
    rows = connection.execution_options(yield_per=_STREAM_BATCH).execute(
        select(_resource_table.c.sha256, _resource_table.c.codec, _resource_table.c.body)
    )
    for row in rows:
        try:
            matches = content_address(decode_body(row.codec, row.body)) == row.sha256
        except InvalidAuditRecordError as exc:
            bad[row.sha256] = str(exc)
            continue
        if matches:
            good.add(row.sha256)
        else:
            bad[row.sha256] = "does not match its address"
    return good, bad


def _content_text(row: Any) -> tuple[str | None, str | None]:
    """A record's content document (text) and, if it cannot be trusted, why."""
    if row.content_body is None:
        return None, f"content {row.content_sha256} is missing"
    try:
        text = decode_body(row.content_codec, row.content_body)
    except InvalidAuditRecordError as exc:
        return None, f"content {row.content_sha256}: {exc}"
    if content_address(text) != row.content_sha256:
        return None, f"content {row.content_sha256} does not match its address"
    return text.decode("utf-8"), None


class _Inputs:
    """Checks a record's input manifest against the stored resources, once per manifest."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.good, self.bad = _stored_resources(connection)
        self.checked: dict[str, list[str]] = {}

    def problems(self, manifest_sha256: str) -> list[str]:
        if manifest_sha256 not in self.checked:
            self.checked[manifest_sha256] = self._check(manifest_sha256)
        return self.checked[manifest_sha256]

    def _check(self, manifest_sha256: str) -> list[str]:
        row = self.connection.execute(
            select(_content_table.c.codec, _content_table.c.body).where(
                _content_table.c.sha256 == manifest_sha256
            )
        ).first()
        if row is None:
            return [f"input manifest {manifest_sha256} is missing"]
        try:
            text = decode_body(row.codec, row.body)
        except InvalidAuditRecordError as exc:
            return [f"input manifest {manifest_sha256}: {exc}"]
        if content_address(text) != manifest_sha256:
            return [f"input manifest {manifest_sha256} does not match its address"]
        wrong = []
        for reference in json.loads(text):
            address = reference["sha256"]
            if address in self.good:
                continue
            name = f"{reference.get('type')}/{reference.get('id')} (version {reference.get('versionId')}, {address})"
            wrong.append(f"{name} {self.bad.get(address, 'is missing')}")
        if not wrong:
            return []
        shown = "; ".join(wrong[:_SHOWN])
        more = f" and {len(wrong) - _SHOWN} more" if len(wrong) > _SHOWN else ""
        return [f"{len(wrong)} input resources missing or altered: {shown}{more}"]


def walk_chain(connection: Connection, records: Select[Any]) -> tuple[int, list[str]]:
    """Check every record of ``records`` (in seq order, content joined); (count, problems)."""
    problems: list[str] = []
    checked = 0
    expected_seq, previous_hash = 1, GENESIS_HASH
    head = connection.execute(select(AuditChainHead.last_seq, AuditChainHead.last_hash)).one()
    inputs = _Inputs(connection)
    for row in connection.execution_options(yield_per=_STREAM_BATCH).execute(records):
        checked += 1
        label = f"seq {row.seq} (record {row.record_id})"
        if row.seq != expected_seq:
            missing = (
                f"seq {expected_seq}"
                if row.seq == expected_seq + 1
                else f"seqs {expected_seq}..{row.seq - 1}"
            )
            problems.append(f"gap before {label}: {missing} missing (deleted record?)")
        if row.prev_hash != previous_hash:
            problems.append(f"broken link at {label}: prev_hash is not the previous record's hash")
        if chain_hash(hash_document(row._asdict()), row.prev_hash) != row.hash:
            problems.append(f"edited content at {label}: hash does not match the record")
        if row.content_sha256 is not None:
            text, problem = _content_text(row)
            if problem is not None:
                problems.append(f"{label}: {problem}")
            elif text is not None:
                manifest = json.loads(text).get("input_manifest")
                if manifest is not None:
                    problems.extend(f"{label}: {found}" for found in inputs.problems(manifest["sha256"]))
        expected_seq, previous_hash = row.seq + 1, row.hash
    if head.last_seq != expected_seq - 1 or head.last_hash != previous_hash:
        problems.append(
            f"chain head names seq {head.last_seq} but the last record is seq "
            f"{expected_seq - 1} (records deleted at the end?)"
        )
    return checked, problems
