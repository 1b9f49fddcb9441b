"""Re-evaluate a recorded decision with its recorded criteria version and inputs (audit replay)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from service.criteria import criteria_from_snapshot
from service.engine import Decision, decide
from service.facts import build_facts
from service.mappings import mappings_from_texts

__all__ = ["evaluate_recorded"]

SHIPPED_ROLES = Path(__file__).resolve().parents[2] / "mappings" / "roles.yaml"
"""Criteria snapshots recorded before ``roles.yaml`` existed used exactly these names."""


def evaluate_recorded(
    criteria_snapshot: dict[str, Any],
    input_resources: list[dict[str, Any]],
    evaluated_at: str,
    unavailable: dict[str, str],
) -> Decision:
    """Today's engine on yesterday's criteria and data, at yesterday's evaluation time.

    ``unavailable`` is what could not be obtained then (an Observation group, the
    Procedures): without it, a criterion that was rightly unknown would replay as met.
    """
    mappings = mappings_from_texts(
        criteria_snapshot["__mappings__"], roles_text=SHIPPED_ROLES.read_text(encoding="utf-8")
    )
    criteria = criteria_from_snapshot(criteria_snapshot, mappings)
    patient_id = next(
        (str(r.get("id")) for r in input_resources if r.get("resourceType") == "Patient"), "unknown"
    )
    facts = build_facts(patient_id, input_resources, mappings, unavailable=unavailable)
    return decide(facts, criteria, mappings, datetime.fromisoformat(evaluated_at))
