"""``til-cds prescreen`` refuses bad options with a sentence, before starting Spark."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.cli import app


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["prescreen", *args])
    return result.exit_code, " ".join(
        result.output.replace("│", " ").split()
    )  # Typer's error box wraps lines


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    audit = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    code, output = _run(
        "--from", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--audit-url", audit
    )
    assert code == 2
    assert "absent is not a folder of NDJSON files" in output


def test_a_folder_without_ndjson_is_named(tmp_path: Path) -> None:
    audit = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    code, output = _run("--from", str(tmp_path), "--out", str(tmp_path / "out"), "--audit-url", audit)
    assert code == 2
    assert "holds no .ndjson files" in output


def test_exactly_one_source(tmp_path: Path) -> None:
    code, output = _run("--out", str(tmp_path))
    assert code == 2
    assert "exactly one of --from DIR or --fhir URL" in output


def test_an_evaluation_time_without_zone_is_refused(tmp_path: Path) -> None:
    code, output = _run("--from", str(tmp_path), "--out", str(tmp_path), "--at", "2026-11-29T08:00:00")
    assert code == 2
    assert "has no time zone" in output
