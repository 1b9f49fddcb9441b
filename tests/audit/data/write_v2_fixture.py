"""Write ``v2-audit.sqlite3.gz``: an audit database of revision 0002 (content-addressed resources).

Kept to show how the fixture was made; it only runs with the code of that revision (commit
199a994) first on the path, because it migrates to 0002 and writes with that version's store:

    git archive 199a994 | tar -x -C /tmp/v2 && cd /tmp/v2 && \
        PYTHONPATH=$PWD python /path/to/write_v2_fixture.py /path/to/v2-audit.sqlite3.gz

Three synthetic patients open their chart once; one opens it again unchanged (the same input
manifest) and once more with one new Observation (one more resource row); a card of the
first decision is accepted; a pre-screen run is recorded.
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
    return {**record, "decision_id": str(uuid.uuid4()), "hook_instance": str(uuid.uuid4())}


def main(target: Path) -> None:
    records, fingerprint, snapshot = asyncio.run(_records())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "v2-audit.sqlite3"
        store = AuditStore.from_url(f"sqlite:///{path}")
        store.migrate("0002_content_addressed")
        store.save_criteria_version(fingerprint, snapshot)
        now = datetime.now(UTC).isoformat()
        for record in records:
            store.append_decision({**record, "recorded_at": now})
        store.append_decision({**_again(records[0]), "recorded_at": now})
        changed = copy.deepcopy(_again(records[0]))
        observation = next(r for r in changed["input_resources"] if r["resourceType"] == "Observation")
        changed["input_resources"].append({**observation, "id": f"{observation['id']}-repeat"})
        store.append_decision({**changed, "recorded_at": now})
        card = records[0]["cards"][0]["uuid"]
        store.append_feedback("til-trials", {"card": card, "outcome": "accepted", "outcomeTimestamp": now})
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
