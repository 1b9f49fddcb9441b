"""The facts memo: a repeat open of a chart decides exactly what reading its resources again would."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from service.api.main import build_runtime
from service.audit import received_inputs
from service.cdshooks import HookRequest
from service.engine.decision import decision_json
from service.facts import PatientFacts, SourceRef
from service.facts.memo import FactsMemo, with_call_extras
from service.mappings import Mappings
from service.pipeline import Runtime, run_hook
from service.sandbox.synthetic import find_patient, hook_request
from service.settings import Settings

NOW = datetime.now(UTC)


@pytest.fixture
async def runtimes() -> AsyncIterator[tuple[Runtime, Runtime]]:
    """The app's runtime (memo on) and the same with the memo off."""
    async with httpx.AsyncClient() as http:
        remembering = build_runtime(Settings(dev=True), http)
        yield remembering, replace(remembering, facts_memo_resources=0)


def _hits() -> float:
    return REGISTRY.get_sample_value("til_cds_facts_memo_total", {"result": "hit"}) or 0.0


async def _decided(runtime: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    service = "til-trials-order-select" if body["hook"] == "order-select" else "til-trials"
    outcome = await run_hook(
        HookRequest.model_validate(copy.deepcopy(body)), runtime, NOW, may_fetch=False, service_id=service
    )
    return decision_json(outcome.decision)


def _lab_changed(body: dict[str, Any]) -> dict[str, Any]:
    """The same chart with one numeric result (the first with a value) halved."""
    changed = copy.deepcopy(body)
    for key, bundle in changed["prefetch"].items():
        if not key.startswith("observations-"):
            continue
        for entry in bundle["entry"]:
            quantity = entry["resource"].get("valueQuantity")
            if quantity and isinstance(quantity.get("value"), (int, float)):
                quantity["value"] = quantity["value"] / 2
                return changed
    raise AssertionError("the patient has no numeric result")


async def test_every_open_decides_what_reading_the_chart_again_decides(
    runtimes: tuple[Runtime, Runtime], mappings: Mappings
) -> None:
    """Opens that share resources but not what the call adds (drafts, unreadable sources)
    must not share those additions, and a changed result must not find the old facts."""
    remembering, reading = runtimes
    patient = find_patient("til-lung-eligible", NOW.date())
    full = hook_request(patient, mappings)
    assert full["prefetch"]["procedures"] is None  # null: read, and none found
    unreadable = copy.deepcopy(full)  # the same resources, procedures not prefetched
    del unreadable["prefetch"]["procedures"]
    opens = [
        unreadable,
        unreadable,
        full,
        unreadable,
        hook_request(patient, mappings, hook="order-select"),
        full,
        _lab_changed(full),
        full,
    ]
    hits_before = _hits()
    decided = [(await _decided(remembering, body), await _decided(reading, body)) for body in opens]
    for index, (remembered, read) in enumerate(decided):
        assert remembered == read, f"open {index} decided differently with its facts remembered"
    assert "procedures" in str(decided[1][0]["unavailable"])
    assert "procedures" not in str(decided[2][0]["unavailable"])
    assert "procedures" in str(decided[3][0]["unavailable"])
    assert decided[4][0]["order_warning"] is not None and decided[5][0]["order_warning"] is None
    assert decided[6][0]["trials"] != decided[7][0]["trials"], "the changed result was not read"
    # Two distinct resource lists (the chart, and the chart with one result changed): the
    # other six opens found their facts remembered, and the memo-off runtime kept none.
    assert len(remembering.facts_memo) == 2 and len(reading.facts_memo) == 0
    assert _hits() - hits_before == 6


def test_facts_are_found_only_for_the_patient_they_were_read_for() -> None:
    """The hook refuses another patient's resources before facts, but the memo does not rely on it."""
    memo = FactsMemo(max_resources=10)
    memo.put(b"a", "p", _facts("p", 1))
    assert memo.get(b"a", "q") is None and memo.get(b"a", "p") is not None


async def test_patients_whose_charts_hold_the_same_resources_each_get_their_own_facts(
    runtimes: tuple[Runtime, Runtime], mappings: Mappings
) -> None:
    """Two patients whose prefetch is all null read the same (empty) list of resources."""
    remembering, _ = runtimes
    body = hook_request(find_patient("til-lung-eligible", NOW.date()), mappings)
    body["prefetch"] = dict.fromkeys(body["prefetch"])
    for patient_id in ("patient-one", "patient-two", "patient-one"):
        body["context"]["patientId"] = patient_id
        assert (await _decided(remembering, body))["patient"]["reference"] == f"Patient/{patient_id}"
    assert len(remembering.facts_memo) == 2


async def test_the_text_handed_to_the_audit_is_the_canonical_json_of_the_recorded_resources(
    runtimes: tuple[Runtime, Runtime], mappings: Mappings
) -> None:
    """The audit stores ``received_inputs`` as the decision's input list without taking it again."""
    remembering, _ = runtimes
    body = hook_request(find_patient("til-lung-eligible", NOW.date()), mappings)
    outcome = await run_hook(HookRequest.model_validate(body), remembering, NOW, may_fetch=False)
    assert outcome.received_inputs == received_inputs(outcome.record["input_resources"], "inputs")
    assert json.loads(outcome.received_inputs.text) == _prefetched_resources(body["prefetch"])


def _prefetched_resources(prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    """The prefetch's resources in key order, each once (the pipeline's ``unique_resources``)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for value in prefetch.values():
        for resource in [e["resource"] for e in value["entry"]] if value and "entry" in value else [value]:
            if resource is not None:
                seen.setdefault((resource["resourceType"], resource["id"]), resource)
    return list(seen.values())


async def test_a_reload_starts_with_an_empty_memo(
    runtimes: tuple[Runtime, Runtime], mappings: Mappings
) -> None:
    remembering, _ = runtimes
    await _decided(remembering, hook_request(find_patient("til-lung-eligible", NOW.date()), mappings))
    reloaded = replace(remembering, mappings=mappings)  # what the reloader does
    assert len(remembering.facts_memo) == 1 and len(reloaded.facts_memo) == 0


def _facts(patient_id: str, resources: int) -> PatientFacts:
    return PatientFacts(
        patient_id=patient_id, inputs=tuple(SourceRef("Observation", str(n)) for n in range(resources))
    )


def test_the_memo_holds_at_most_its_bound_in_resources_dropping_the_least_recent() -> None:
    memo = FactsMemo(max_resources=10)
    memo.put(b"a", "p", _facts("p", 4))
    memo.put(b"b", "p", _facts("p", 4))
    assert memo.get(b"a", "p") is not None  # "a" is now the most recent
    memo.put(b"c", "p", _facts("p", 4))  # 12 > 10: "b" goes
    assert memo.get(b"b", "p") is None
    assert memo.get(b"a", "p") is not None and memo.get(b"c", "p") is not None
    memo.put(b"huge", "p", _facts("p", 11))  # larger than the bound: not kept, nothing dropped
    assert memo.get(b"huge", "p") is None and len(memo) == 2
    memo.put(b"a", "p", _facts("p", 6))  # the same key again replaces, and counts once
    assert len(memo) == 2
    memo.put(b"d", "p", _facts("p", 1))  # 6 + 4 + 1 > 10: "c", the least recent, goes
    assert memo.get(b"c", "p") is None and len(memo) == 2


def test_a_bound_of_zero_remembers_nothing_and_an_empty_chart_counts_as_one() -> None:
    memo = FactsMemo(max_resources=0)
    memo.put(b"a", "p", _facts("p", 0))
    memo.put(b"b", "p", _facts("p", 3))
    assert len(memo) == 0
    memo = FactsMemo(max_resources=2)
    for patient in ("p", "q", "r"):
        memo.put(b"none", patient, _facts(patient, 0))
    assert len(memo) == 2 and memo.get(b"none", "p") is None


def test_call_extras_are_added_to_a_copy_and_leave_the_remembered_facts_as_they_were() -> None:
    remembered = replace(_facts("p", 2), data_problems=("Observation/1 has no numeric value; ignored",))
    with_extras = with_call_extras(
        remembered, unavailable={"procedures": "not prefetched"}, problems=["procedures: not prefetched"]
    )
    assert with_extras.unavailable == {"procedures": "not prefetched"}
    assert with_extras.data_problems == (
        "Observation/1 has no numeric value; ignored",
        "procedures: not prefetched",
    )
    assert remembered.unavailable == {} and len(remembered.data_problems) == 1
    assert with_call_extras(remembered) is remembered
