"""The run's static HTML summary: verdict counts per trial, near misses, washouts ending soon, bad input."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from service.criteria import CriteriaSet
from service.prescreen.read import BAD_INPUT_KINDS, EXAMPLES_KEPT, InputFile, Problem

__all__ = ["NEAR_MISSES_SHOWN", "WASHOUT_DAYS", "line_number", "write_summary"]

WASHOUT_DAYS = 30
NEAR_MISSES_SHOWN = 200
_STATES = ("may_be_eligible", "ruled_out", "not_applicable")
_STATE_LABELS = {
    "may_be_eligible": "May be eligible (card shown)",
    "ruled_out": "Ruled out",
    "not_applicable": "Disease not on record",
}
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("service.prescreen", "templates"),
    autoescape=True,
    keep_trailing_newline=True,
)


def line_number(path: str, offset: int) -> int:
    """The 1-based line at a byte offset of an uncompressed file (bad lines are few: counted on demand)."""
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def write_summary(
    path: Path,
    rows: list[dict[str, Any]],
    files: list[InputFile],
    problem_counts: Counter[tuple[str, str]],
    problems: list[Problem],
    criteria: CriteriaSet,
    evaluated_at: datetime,
    resources: int,
) -> None:
    """Write ``summary.html``; its content depends only on the run's inputs, so reruns match."""
    titles = {trial.id: f"{trial.short_title} ({trial.id})" for trial in criteria.trials}
    counts: dict[str, Counter[str]] = {trial.id: Counter() for trial in criteria.trials}
    near: Counter[str] = Counter()
    for row in rows:
        counts[row["trial"]][row["state"]] += 1
        near[row["trial"]] += row["near_miss"]
    soon = evaluated_at.date() + timedelta(days=WASHOUT_DAYS)
    washouts = sorted(
        (r for r in rows if isinstance(r["not_before"], date) and r["not_before"] <= soon),
        key=lambda r: (r["not_before"], r["patient"], r["trial"]),
    )
    near_misses = [r for r in rows if r["near_miss"]]
    by_file = {f.name: f for f in files}
    file_views = [
        {
            "name": f.name,
            "size": f.size,
            "sha256": f.sha256,
            "problems": sorted(
                (BAD_INPUT_KINDS[kind], n) for (name, kind), n in problem_counts.items() if name == f.name
            ),
        }
        for f in files
    ]
    unattributed = sorted(
        (BAD_INPUT_KINDS[kind], n) for (name, kind), n in problem_counts.items() if name not in by_file
    )
    examples = [
        {
            "file": name,
            "line": line_number(by_file[name].path, offset)
            if name in by_file and not by_file[name].is_gzip
            else "",
            "label": BAD_INPUT_KINDS[kind],
            "detail": detail,
        }
        for name, kind, offset, detail in problems
    ]
    html = _ENVIRONMENT.get_template("summary.html").render(
        evaluated_at=evaluated_at.isoformat(),
        patients=len({r["patient"] for r in rows}),
        resources=resources,
        criteria_fingerprint=criteria.fingerprint,
        states=_STATES,
        state_labels=_STATE_LABELS,
        titles=titles,
        trials=[{"title": titles[t], "counts": counts[t], "near_misses": near[t]} for t in sorted(counts)],
        washouts=washouts,
        near_misses=near_misses[:NEAR_MISSES_SHOWN],
        near_misses_left=max(0, len(near_misses) - NEAR_MISSES_SHOWN),
        files=file_views,
        unattributed=unattributed,
        examples=examples,
        examples_kept=EXAMPLES_KEPT,
    )
    path.write_text(html, encoding="utf-8")
