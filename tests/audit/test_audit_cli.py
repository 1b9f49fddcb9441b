"""``til-cds audit`` commands and replay of recorded decisions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from service.audit import AuditStore, MissingCriteriaVersionError, UnknownDecisionError
from service.audit.cli import audit_app
from service.audit.models import AuditRecord
from service.audit.replay import compare_decisions, replay_decision
from service.engine.decision import CriterionVerdict, Decision, PatientSummary, State, TrialVerdict

DecisionFactory = Callable[..., dict[str, Any]]
CRITERIA = {"trials": [{"id": "NCT05727904", "min_anc": 1.5}]}

runner = CliRunner()


def _recorded(store: AuditStore, make_decision: DecisionFactory) -> dict[str, Any]:
    record = make_decision()
    store.save_criteria_version(record["decision"]["criteria_fingerprint"], CRITERIA)
    store.append_decision(record)
    return record


def _evaluate_like_recorded(
    criteria: dict[str, Any], resources: list[dict[str, Any]], evaluated_at: str, unavailable: dict[str, str]
) -> Decision:
    """A stand-in engine: suggests when the recorded ANC meets the snapshot's minimum."""
    [observation] = [r for r in resources if r["resourceType"] == "Observation"]
    anc_met = observation["valueQuantity"]["value"] >= criteria["trials"][0]["min_anc"]
    return _decision(
        evaluated_at, {"NCT05727904": {"ecog": State.MET, "anc": State.MET if anc_met else State.NOT_MET}}
    )


def _decision(evaluated_at: str, trials: dict[str, dict[str, State]]) -> Decision:
    verdicts = []
    for trial_id, states in trials.items():
        criteria = tuple(
            CriterionVerdict(c, c, "inclusion", c, "S1", state, "replayed") for c, state in states.items()
        )
        suggested = State.NOT_MET not in states.values()
        verdicts.append(
            TrialVerdict(
                trial_id,
                trial_id,
                trial_id,
                None,
                "may_be_eligible" if suggested else "ruled_out",
                "",
                criteria,
            )
        )
    return Decision(
        datetime.fromisoformat(evaluated_at),
        "sha256:x",
        "sha256:y",
        PatientSummary("Patient/p"),
        tuple(verdicts),
    )


def test_replay_agrees_with_the_same_engine(store: AuditStore, make_decision: DecisionFactory) -> None:
    record = _recorded(store, make_decision)
    report = replay_decision(store, record["decision_id"], _evaluate_like_recorded)
    assert report.agrees
    assert report.criteria_fingerprint == "sha256:criteria-v1"
    assert report.evaluated_at == datetime.fromisoformat(record["recorded_at"]).isoformat()


def test_replay_says_it_did_not_decide_an_order_warning_again(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    """The draft orders of an order-select call are not recorded inputs: the replay says the
    warning was not compared instead of letting "agrees" cover it."""
    record = make_decision(service_id="til-trials-order-select", hook="order-select")
    record["decision"]["order_warning"] = {"drugs": ["docetaxel"], "trial_ids": ["NCT05727904"]}
    store.save_criteria_version(record["decision"]["criteria_fingerprint"], CRITERIA)
    store.append_decision(record)
    report = replay_decision(store, record["decision_id"], _evaluate_like_recorded)
    assert report.agrees
    assert report.not_compared == (
        "the order-select warning about docetaxel: the draft orders it read are not part of the "
        "recorded inputs, so it was not decided again",
    )
    plain = _recorded(store, make_decision)
    assert replay_decision(store, plain["decision_id"], _evaluate_like_recorded).not_compared == ()


def test_replay_uses_the_recorded_criteria_and_lists_differences(
    store: AuditStore, make_decision: DecisionFactory
) -> None:
    record = _recorded(store, make_decision)

    def stricter(
        criteria: dict[str, Any], resources: list[dict[str, Any]], at: str, unavailable: dict[str, str]
    ) -> Any:
        assert criteria == CRITERIA
        return _evaluate_like_recorded({"trials": [{"min_anc": 2.0}]}, resources, at, unavailable)

    report = replay_decision(store, record["decision_id"], stricter)

    assert not report.agrees
    assert [d.describe() for d in report.differences] == [
        "NCT05727904: suggested was True, now False",
        "NCT05727904/anc: state was 'met', now 'not_met'",
    ]


def test_compare_decisions_notes_missing_trials_and_criteria() -> None:
    at = "2024-05-14T09:30:00+00:00"
    recorded = _decision(at, {"A": {"x": State.MET}})
    replayed = _decision(at, {"A": {}, "B": {}})
    assert [d.describe() for d in compare_decisions(recorded, replayed)] == [
        "A/x: state was 'met', now 'absent'",
        "B: trial was 'absent', now 'evaluated'",
    ]


def test_replay_of_unknown_decision_or_criteria(store: AuditStore, make_decision: DecisionFactory) -> None:
    with pytest.raises(UnknownDecisionError):
        replay_decision(store, str(uuid.uuid4()), _evaluate_like_recorded)
    record = make_decision(criteria_fingerprint="sha256:never-saved")
    store.append_decision(record)
    with pytest.raises(MissingCriteriaVersionError):
        replay_decision(store, record["decision_id"], _evaluate_like_recorded)


def test_cli_verify(store: AuditStore, database_url: str, make_decision: DecisionFactory) -> None:
    _recorded(store, make_decision)
    result = runner.invoke(audit_app, ["verify", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "ok: 1 records checked" in result.output

    with store.engine.begin() as connection:
        connection.execute(update(AuditRecord).values(hook="order-select"))
    broken = runner.invoke(audit_app, ["verify", "--database-url", database_url])
    assert broken.exit_code == 1
    assert "edited content at seq 1" in broken.output


@pytest.mark.parametrize("export_format", ["ndjson", "csv", "fhir"])
def test_cli_export_to_a_file(
    store: AuditStore,
    database_url: str,
    make_decision: DecisionFactory,
    tmp_path: Path,
    export_format: str,
) -> None:
    _recorded(store, make_decision)
    output = tmp_path / f"export.{export_format}"
    result = runner.invoke(
        audit_app,
        ["export", "--format", export_format, "--trial", "NCT05727904", "--output", str(output),
         "--no-pseudonymise", "--database-url", database_url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Patient/pat-1" in output.read_text()


def test_cli_export_to_stdout_with_bad_filter(store: AuditStore, database_url: str) -> None:
    result = runner.invoke(
        audit_app,
        ["export", "--since", "soon", "--no-pseudonymise", "--database-url", database_url],
    )
    assert result.exit_code == 2
    assert "since is not an ISO 8601 timestamp" in result.output


def test_cli_counts(store: AuditStore, database_url: str, make_decision: DecisionFactory) -> None:
    _recorded(store, make_decision)
    result = runner.invoke(audit_app, ["counts", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["cards_shown"] == 1


def test_cli_replay(
    store: AuditStore,
    database_url: str,
    make_decision: DecisionFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = _recorded(store, make_decision)
    module = f"replay_engine_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from tests.audit.test_audit_cli import _decision\n"
        "def disagree(criteria, resources, evaluated_at, unavailable):\n"
        "    return _decision(evaluated_at, {'NCT05727904': {'anc': 'not_met'}})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    result = runner.invoke(
        audit_app,
        ["replay", record["decision_id"], "--evaluator", f"{module}:disagree",
         "--database-url", database_url],
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert "NCT05727904: suggested was True, now False" in result.output
    assert "DIFFERS" in result.output
    missing = runner.invoke(
        audit_app, ["replay", str(uuid.uuid4()), "--evaluator", f"{module}:disagree",
                    "--database-url", database_url],
    )  # fmt: skip
    assert missing.exit_code == 2 and "no decision" in missing.output
    (tmp_path / f"{module}_old.py").write_text("def old(criteria, resources, evaluated_at):\n    return []\n")
    outdated = runner.invoke(
        audit_app, ["replay", record["decision_id"], "--evaluator", f"{module}_old:old",
                    "--database-url", database_url],
    )  # fmt: skip
    assert outdated.exit_code == 2 and "must take" in outdated.output, outdated.output
