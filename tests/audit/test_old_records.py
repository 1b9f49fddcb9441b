"""Issue 13: audit records written by the previous version still verify, export, count, render and replay.

``data/v1-audit.sqlite3.gz`` is a SQLite audit database written by the version before the
typed decision (schema 1: loose ``verdicts`` dicts, no ``decision``): four patient-view
decisions (til-lung-eligible, til-low-anc, til-gastric, til-recent-docetaxel), each with
one accepted card, and the criteria version they used (recorded before ``roles.yaml``).
It is never rewritten: the tests work on a decompressed copy.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from service.api.main import create_app
from service.audit import AuditStore, stored_decision
from service.audit.export import export_csv, export_fhir_bundle, export_ndjson, pseudonym
from service.audit.replay import replay_decision
from service.engine.decision import State
from service.engine.replay import evaluate_recorded
from service.review import build_review_page, sign_review_token
from service.settings import Settings
from tests.api.conftest import started

OLD_DATABASE = Path(__file__).parent / "data" / "v1-audit.sqlite3.gz"
PATIENTS = ("til-lung-eligible", "til-low-anc", "til-gastric", "til-recent-docetaxel")
PSEUDONYM_KEY = b"old-records-pseudonym-key"


def _decompress(target: Path) -> Path:
    path = target / "v1-audit.sqlite3"
    with gzip.open(OLD_DATABASE, "rb") as packed, path.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    return path


def _raw_decisions(path: Path) -> dict[str, dict[str, Any]]:
    """decision id -> the stored content, read with sqlite3 (not through the code under test).

    Since revision 0004 SQLite keeps ids as 32 hex digits; ``uuid.UUID`` reads either form.
    """
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT record_id, content FROM audit_record WHERE kind = 'decision'")
        return {str(uuid.UUID(record_id)): json.loads(content) for record_id, content in rows}


@pytest.fixture
def old_path(tmp_path: Path) -> Path:
    return _decompress(tmp_path)


@pytest.fixture
def old_store(old_path: Path) -> Iterator[AuditStore]:
    store = AuditStore.from_url(f"sqlite:///{old_path}")
    store.migrate()
    yield store
    store.close()


def test_the_fixture_is_a_version_1_database(old_path: Path) -> None:
    decisions = _raw_decisions(old_path)
    assert sorted(c["patient_ref"] for c in decisions.values()) == sorted(f"Patient/{p}" for p in PATIENTS)
    for content in decisions.values():
        assert "decision" not in content and content["verdicts"], "written before the typed decision"
        assert stored_decision(content).schema_version == 1


def test_old_records_still_verify(old_store: AuditStore) -> None:
    report = old_store.verify()
    assert report.ok, report.problems
    assert report.records_checked == 8


def _suggested_then(content: dict[str, Any]) -> list[str]:
    return [v["trial_id"] for v in content["verdicts"] if v["suggested"]]


@pytest.mark.parametrize("key", [None, PSEUDONYM_KEY], ids=["plain", "pseudonymised"])
def test_old_records_export_as_csv_with_the_trials_suggested_then(
    old_store: AuditStore, old_path: Path, key: bytes | None
) -> None:
    decisions = _raw_decisions(old_path)
    rows = list(csv.DictReader(io.StringIO("".join(export_csv(old_store.iter_records(), pseudonym_key=key)))))
    assert len(rows) == 8
    decision_rows = [row for row in rows if row["kind"] == "decision"]
    assert len(decision_rows) == 4
    for row in decision_rows:
        content = decisions[row["record_id"]]
        assert row["suggested_trials"] == ";".join(_suggested_then(content))
        assert row["card_count"] == str(len(content["cards"]))
        expected_patient = pseudonym(key, content["patient_ref"]) if key else content["patient_ref"]
        assert row["patient_ref"] == expected_patient


@pytest.mark.parametrize("key", [None, PSEUDONYM_KEY], ids=["plain", "pseudonymised"])
def test_old_records_export_as_ndjson(old_store: AuditStore, key: bytes | None) -> None:
    text = "".join(export_ndjson(old_store.iter_records(), pseudonym_key=key))
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 9))
    if key is not None:
        assert "Patient/til-" not in text
        assert all(line["pseudonymised"] for line in lines)
        assert all("input_resources" not in line["content"] for line in lines if line["kind"] == "decision")
    else:
        assert lines[0]["content"]["verdicts"], "exported as stored"


@pytest.mark.parametrize("key", [None, PSEUDONYM_KEY], ids=["plain", "pseudonymised"])
def test_old_records_export_as_a_valid_fhir_bundle(
    old_store: AuditStore, old_path: Path, key: bytes | None
) -> None:
    decisions = _raw_decisions(old_path)
    text = "".join(export_fhir_bundle(old_store.iter_records(), pseudonym_key=key))
    bundle = Bundle.model_validate_json(text)
    assert bundle.entry is not None and len(bundle.entry) == 8
    for entry in bundle.entry:
        event = entry.resource
        assert isinstance(event, AuditEvent)
        if event.id in decisions:
            record_entity = next(e for e in event.entity or [] if e.name == "decision")
            details = {d.type: str(d.valueString) for d in record_entity.detail or []}
            assert json.loads(details["suggested_trials"]) == _suggested_then(decisions[event.id])
            assert json.loads(details["decision"])["schema_version"] == 1
    if key is not None:
        assert "Patient/til-" not in text


def test_old_records_count(old_store: AuditStore) -> None:
    counts = {row["trial_id"]: row for row in old_store.counts()}
    assert counts["NCT04614103"]["cards_shown"] == 3
    assert counts["NCT04614103"]["accepted"] == 3
    assert counts["NCT06538012"]["cards_shown"] == 2
    assert counts["essen-til-gastroesophageal"]["accepted"] == 1
    assert all(row["overridden"] == 0 for row in counts.values())


def _decision_ids(store: AuditStore) -> dict[str, str]:
    """patient id -> decision id."""
    return {
        str(r["patient_ref"]).removeprefix("Patient/"): r["record_id"]
        for r in store.iter_records()
        if r["kind"] == "decision"
    }


def test_old_records_render_a_review_page(old_store: AuditStore) -> None:
    pages = {}
    for patient_id, decision_id in _decision_ids(old_store).items():
        record = old_store.get_decision(decision_id)
        assert record is not None
        snapshot = old_store.get_criteria_version(record["content"]["criteria_fingerprint"])
        assert snapshot is not None
        pages[patient_id] = build_review_page(record, snapshot)
    assert set(pages) == set(PATIENTS)
    for page in pages.values():
        titles = {t.trial_id: t.title for t in page.trials}
        assert titles["NCT06538012"].startswith("TIL Therapy + Pembrolizumab"), "named from the snapshot"
        assert page.age_years == 58 or page.trials[0].trial_id == "essen-til-gastroesophageal"
    low_anc = {t.trial_id: t for t in pages["til-low-anc"].trials}["NCT06538012"]
    assert low_anc.status == "ruled_out"
    assert [row.id for row in low_anc.blocking] == ["absolute-neutrophil-count"]
    docetaxel = pages["til-recent-docetaxel"]
    washouts = [
        c
        for t in docetaxel.trials
        for c in t.criteria
        if c.state == State.NOT_YET.value and c.until is not None
    ]
    assert washouts, "the recorded washout is shown with its date"
    assert {c.until for c in washouts} <= {event.on for event in docetaxel.timeline}


async def test_the_review_route_shows_an_old_record(old_path: Path, tmp_path: Path) -> None:
    settings = Settings(
        dev=True, audit_database_url=f"sqlite:///{old_path}", public_base_url="http://testserver"
    )
    decisions = _raw_decisions(old_path)
    key = settings.review_signing_key.get_secret_value()
    async for client in started(create_app(settings)):
        for decision_id, content in decisions.items():
            token = sign_review_token(decision_id, key, 300)
            response = await client.get(f"/review/{decision_id}", params={"token": token})
            assert response.status_code == 200, content["patient_ref"]
            for verdict in content["verdicts"]:
                assert verdict["trial_id"] in response.text
            assert html.escape(
                "TIL Therapy + Pembrolizumab for Advanced or Metastatic Refractory Lung Cancer"
            ) in (response.text)


@pytest.mark.parametrize("patient_id", PATIENTS)
def test_old_records_replay_in_agreement(old_store: AuditStore, patient_id: str) -> None:
    """The old records were made by an engine whose verdicts are pinned unchanged."""
    decision_id = _decision_ids(old_store)[patient_id]
    report = replay_decision(old_store, decision_id, evaluate_recorded)
    assert report.agrees, [d.describe() for d in report.differences]
    assert report.criteria_fingerprint.startswith("sha256:")
