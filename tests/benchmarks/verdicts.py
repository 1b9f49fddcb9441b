"""Everything a hook call decides, for every synthetic and sized patient, as one JSON document.

Used to show that a change left every verdict as it was: write the document before, check
it after (``check`` compares each trial's status and each criterion's state, read through
the decision reader, so records written before the typed decision compare too).

    python -m tests.benchmarks.verdicts write var/verdicts-before.json
    python -m tests.benchmarks.verdicts check var/verdicts-before.json

The evaluation time and "today" are fixed, and the per-call values (decision id, card
uuids, timing) are left out, so two runs of the same code give the same document.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from service.audit import stored_decision
from service.bench.inprocess import build_bench_runtime
from service.bench.patients import sized_patient
from service.cdshooks import HookRequest
from service.pipeline import ORDER_SELECT_SERVICE_ID, SERVICE_ID, run_hook
from service.sandbox.synthetic import generate_patients, hook_request

TODAY = date(2026, 11, 20)
EVALUATED_AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
_PER_CALL = ("decision_id", "timing_ms")
HOOK_INSTANCE = "00000000-0000-4000-8000-000000000000"


def _stable(record: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in record.items() if k not in _PER_CALL}
    kept["cards"] = [{k: v for k, v in card.items() if k != "uuid"} for card in record["cards"]]
    return kept


async def decisions() -> dict[str, Any]:
    """Record (without per-call values) per patient, prefetch mode and hook."""
    patients = [*generate_patients(TODAY), *(sized_patient(TODAY, n) for n in (10, 100, 1000))]
    document: dict[str, Any] = {}
    async with httpx.AsyncClient() as http:
        runtime = build_bench_runtime(http)
        for patient in patients:
            for prefetch in ("full", "without-chemistry"):
                for hook in ("patient-view", "order-select"):
                    body = hook_request(patient, runtime.mappings, hook=hook, hook_instance=HOOK_INSTANCE)
                    if prefetch == "without-chemistry":
                        del body["prefetch"]["observations-chemistry"]
                    if hook == "order-select":
                        body["context"]["selections"] = ["MedicationRequest/draft-1"]
                        body["context"]["draftOrders"] = {
                            "resourceType": "Bundle",
                            "entry": [
                                {
                                    "resource": {
                                        "resourceType": "MedicationRequest",
                                        "id": "draft-1",
                                        "medicationCodeableConcept": {"text": "docetaxel 75 mg/m2"},
                                    }
                                }
                            ],
                        }
                    service_id = ORDER_SELECT_SERVICE_ID if hook == "order-select" else SERVICE_ID
                    outcome = await run_hook(
                        HookRequest.model_validate(body),
                        runtime,
                        EVALUATED_AT,
                        may_fetch=False,
                        service_id=service_id,
                    )
                    document[f"{patient.id} {prefetch} {hook}"] = _stable(outcome.record)
    return document


def main(argv: list[str]) -> int:
    command, path = argv[1], Path(argv[2])
    text = json.dumps(asyncio.run(decisions()), indent=1, sort_keys=True, default=str)
    if command == "write":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    before = {k: verdicts(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    after = {k: verdicts(v) for k, v in json.loads(text).items()}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for key in changed:
        old, new = before.get(key, {}), after.get(key, {})
        for trial in sorted(old.keys() | new.keys()):
            if old.get(trial) != new.get(trial):
                print(f"changed: {key} {trial}: {old.get(trial)} -> {new.get(trial)}")
    print(f"{len(after) - len(changed)} of {len(after)} decisions' verdicts identical")
    return 1 if changed else 0


def verdicts(record: dict[str, Any]) -> dict[str, Any]:
    """Per trial its status and every criterion's state, from a record of any schema version."""
    decision = stored_decision(record)
    return {
        t.trial_id: [t.status, {c.id: c.state.value for c in t.every_criterion()}] for t in decision.trials
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv))
