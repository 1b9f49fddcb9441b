"""Write ``v3-audit.sqlite3.gz``: an audit database of revision 0003 (documents and deltas).

Kept to show how the fixture was made; it only runs with the code of that revision (commit
61826fa) first on the path, because it migrates to 0003 and writes with that version's store:

    git archive 61826fa | tar -x -C /tmp/v3 && cd /tmp/v3 && \
        PYTHONPATH=$PWD python /path/to/write_v3_fixture.py /path/to/v3-audit.sqlite3.gz

Three synthetic patients open their chart once; the first opens it again unchanged (its content
a delta of the first's, no new input list) and once more with one new Observation (an input
list that is a delta); two of the first decision's cards get feedback; a decision shows a card
whose id is not a UUID, which gets feedback too; a pre-screen run is recorded.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from service.audit import AuditStore
from service.bench.inprocess import build_bench_runtime, serve_body
from service.sandbox.synthetic import generate_patients, hook_request

PATIENTS = ("til-lung-eligible", "til-low-anc", "til-recent-docetaxel")
LEGACY_CARD = "legacy-card-1"


async def _records() -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    patients = {patient.id: patient for patient in generate_patients(date.today())}
    records = []
    async with httpx.AsyncClient() as http:
        runtime = build_bench_runtime(http)
        for patient_id in PATIENTS:
            body = orjson.dumps(hook_request(patients[patient_id], runtime.mappings))
            _, outcome = await serve_body(body, runtime)
            records.append({**outcome.record, "client": "fixture"})
    return records, runtime.criteria.fingerprint, dict(runtime.criteria.snapshot)


def _again(record: dict[str, Any]) -> dict[str, Any]:
    """The chart opened again: new decision id, hook instance and card uuids."""
    cards = [{**card, "uuid": str(uuid.uuid4())} for card in record["cards"]]
    return {**record, "decision_id": str(uuid.uuid4()), "hook_instance": str(uuid.uuid4()), "cards": cards}


def main(target: Path) -> None:
    records, fingerprint, snapshot = asyncio.run(_records())
    if len(records[0]["cards"]) < 2:
        raise SystemExit("the first patient must be shown two cards")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v3-audit.sqlite3"
        store = AuditStore.from_url(f"sqlite:///{path}")
        store.migrate("0003_documents")
        store.save_criteria_version(fingerprint, snapshot)
        now = datetime.now(UTC).isoformat()
        for record in records:
            store.append_decision({**record, "recorded_at": now})
        store.append_decision({**_again(records[0]), "recorded_at": now})
        changed = copy.deepcopy(_again(records[0]))
        observation = next(r for r in changed["input_resources"] if r["resourceType"] == "Observation")
        changed["input_resources"].append({**observation, "id": f"{observation['id']}-repeat"})
        store.append_decision({**changed, "recorded_at": now})
        legacy = _again(records[1])
        legacy["cards"] = [{**records[0]["cards"][0], "uuid": LEGACY_CARD}]
        store.append_decision({**legacy, "recorded_at": now})
        first, second = (card["uuid"] for card in records[0]["cards"][:2])
        store.append_feedback("til-trials", {"card": first, "outcome": "accepted", "outcomeTimestamp": now})
        store.append_feedback(
            "til-trials",
            {
                "card": second,
                "outcome": "overridden",
                "outcomeTimestamp": now,
                "overrideReason": {"reason": {"code": "patient-declined"}},
            },
        )
        store.append_feedback(
            "til-trials", {"card": LEGACY_CARD, "outcome": "accepted", "outcomeTimestamp": now}
        )
        store.append_prescreen_run(
            {"service_id": "til-trials", "kind": "prescreen", "trial_ids": ["NCT05727904"], "counts": {}}
        )
        report = store.verify()
        store.close()
        if not report.ok:
            raise SystemExit(f"the fixture does not verify: {report.problems}")
        with path.open("rb") as plain, gzip.open(target, "wb") as packed:
            shutil.copyfileobj(plain, packed)
    print(f"wrote {target} ({report.records_checked} records)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
