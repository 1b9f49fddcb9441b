"""Walk the audit chain: hashes, links, gaps, and the documents records refer to by address.

Each document a record names (its content, its input list, and at revision 0002 a manifest and
the single resources it lists) must exist, decode (through its base, for a delta) and hash to
its address. Each is checked once, however many decisions name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, Select, select

from ._canonical import GENESIS_HASH, chain_hash
from ._documents import DocumentReader
from ._records import hash_document, hex_text, logical_values
from .errors import MissingAuditContentError
from .models import AuditChainHead

__all__ = ["walk_chain"]

_STREAM_BATCH = 200
_SHOWN = 3


def _address(text: object) -> bytes | None:
    try:
        return bytes.fromhex(text) if isinstance(text, str) and len(text) == 64 else None
    except ValueError:
        return None


class _Documents:
    """Checks the documents records name, remembering each verdict by address."""

    def __init__(self, connection: Connection) -> None:
        self.reader = DocumentReader(connection)
        self.verdicts: dict[tuple[str, bytes], str | None] = {}

    def problem(self, address: bytes, what: str) -> str | None:
        """Why the document cannot be trusted, or None when it can."""
        key = (what, address)
        if key not in self.verdicts:
            try:
                self.reader.text(address, what)
                self.verdicts[key] = None
            except MissingAuditContentError as exc:
                self.verdicts[key] = str(exc)
        return self.verdicts[key]

    def content(self, values: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """A record's content (from its document or its own row) and, if it cannot be trusted, why."""
        try:
            return orjson.loads(self.reader.content_text(values)), None
        except MissingAuditContentError as exc:
            return None, str(exc)

    def inputs(self, content: Mapping[str, Any]) -> list[str]:
        """Problems with the input resources a decision's content names."""
        reference = content.get("input_list")
        if isinstance(reference, Mapping):
            address = _address(reference.get("sha256"))
            if address is None:
                return [f"input list address {reference.get('sha256')!r} is not a SHA-256"]
            problem = self.problem(address, "input list")
            return [] if problem is None else [problem]
        manifest = content.get("input_manifest")
        if isinstance(manifest, Mapping):
            return self._manifest(manifest)
        return []

    def _manifest(self, manifest: Mapping[str, Any]) -> list[str]:
        """Revision 0002: a manifest document listing single resource documents."""
        address = _address(manifest.get("sha256"))
        if address is None:
            return [f"input manifest address {manifest.get('sha256')!r} is not a SHA-256"]
        key = ("input manifest", address)
        if key in self.verdicts:
            problem = self.verdicts[key]
            return [] if problem is None else [problem]
        try:
            references = orjson.loads(self.reader.text(address, "input manifest"))
        except MissingAuditContentError as exc:
            self.verdicts[key] = str(exc)
            return [str(exc)]
        self.reader.fetch(
            found for found in (_address(reference.get("sha256")) for reference in references) if found
        )
        wrong = []
        for reference in references:
            resource = _address(reference.get("sha256")) or b""
            problem = self.problem(resource, "input resource") if resource else "has no address"
            if problem is not None:
                name = f"{reference.get('type')}/{reference.get('id')} (version {reference.get('versionId')}, {reference.get('sha256')})"
                wrong.append(
                    f"{name} {problem.removeprefix(f'input resource {resource.hex()}').lstrip(': ')}"
                )
        problem = None
        if wrong:
            shown = "; ".join(wrong[:_SHOWN])
            more = f" and {len(wrong) - _SHOWN} more" if len(wrong) > _SHOWN else ""
            problem = f"{len(wrong)} input resources missing or altered: {shown}{more}"
        self.verdicts[key] = problem
        return [] if problem is None else [problem]


def walk_chain(connection: Connection, records: Select[Any]) -> tuple[int, list[str]]:
    """Check every record of ``records`` (in seq order); (count, problems)."""
    problems: list[str] = []
    checked = 0
    expected_seq, previous_hash = 1, GENESIS_HASH
    head = connection.execute(select(AuditChainHead.last_seq, AuditChainHead.last_hash)).one()
    documents = _Documents(connection)
    for batch in connection.execution_options(yield_per=_STREAM_BATCH).execute(records).partitions():
        documents.reader.fetch_contents(batch)
        for row in batch:
            values = logical_values(row._asdict())
            seq = values["seq"]
            checked += 1
            label = f"seq {seq} (record {values['record_id']})"
            if seq != expected_seq:
                missing = (
                    f"seq {expected_seq}" if seq == expected_seq + 1 else f"seqs {expected_seq}..{seq - 1}"
                )
                problems.append(f"gap before {label}: {missing} missing (deleted record?)")
            if values["prev_hash"] != previous_hash:
                problems.append(f"broken link at {label}: prev_hash is not the previous record's hash")
            if chain_hash(hash_document(values), values["prev_hash"]) != values["hash"]:
                problems.append(f"edited content at {label}: hash does not match the record")
            if values["content_sha256"] is not None:
                content, problem = documents.content(values)
                if problem is not None:
                    problems.append(f"{label}: {problem}")
                elif content is not None:
                    problems.extend(f"{label}: {found}" for found in documents.inputs(content))
            expected_seq, previous_hash = seq + 1, values["hash"]
    if head.last_seq != expected_seq - 1 or hex_text(head.last_hash) != previous_hash:
        problems.append(
            f"chain head names seq {head.last_seq} but the last record is seq "
            f"{expected_seq - 1} (records deleted at the end?)"
        )
    return checked, problems
