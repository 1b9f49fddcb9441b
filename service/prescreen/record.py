"""The run's one audit record: what was read, with which criteria, at what time, and what came out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.criteria import CriteriaSet
from service.prescreen.read import InputFile

__all__ = ["run_record"]


def run_record(
    *,
    criteria: CriteriaSet,
    evaluated_at: datetime,
    files: list[InputFile],
    counts: dict[str, Any],
    outputs: dict[str, str],
    source: str,
    master: str,
) -> dict[str, Any]:
    """The record's content; individual verdicts stay in the worklist, whose hash is here."""
    return {
        "service_id": "til-trials",
        "kind": "prescreen",
        "criteria_fingerprint": criteria.fingerprint,
        "evaluated_at": evaluated_at.isoformat(),
        "source": source,
        "spark_master": master,
        "trial_ids": [trial.id for trial in criteria.trials],
        "input_manifest": [{"file": f.name, "size": f.size, "sha256": f"sha256:{f.sha256}"} for f in files],
        "counts": counts,
        "outputs": outputs,
    }
