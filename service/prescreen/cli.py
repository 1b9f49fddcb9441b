"""``til-cds prescreen``'s body: options -> inputs -> run -> audit record -> a few lines on the console."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import typer

from service.errors import ConfigurationError, FhirServerError

__all__ = ["parse_evaluation_time", "run_command"]


def parse_evaluation_time(text: str | None) -> datetime:
    """``--at`` as an aware datetime; a date alone means its midnight UTC; none means now."""
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"'{text}' is not an ISO 8601 time, e.g. 2026-11-29T08:00:00Z", param_hint="--at"
        ) from exc
    if moment.tzinfo is None:
        if len(text) > 10:
            raise typer.BadParameter(f"'{text}' has no time zone; add Z or +01:00", param_hint="--at")
        moment = moment.replace(tzinfo=UTC)
    return moment


def run_command(
    *,
    out: Path,
    source: Path | None,
    fhir: str | None,
    at: str | None,
    master: str,
    criteria_dir: Path,
    mappings_dir: Path,
    audit_url: str | None,
    progress: bool,
) -> None:
    """Run one pre-screen from the command line; user errors exit 2 with a sentence, never a traceback."""
    from service.audit import AuditStore
    from service.audit.errors import AuditError
    from service.criteria import load_criteria
    from service.mappings import load_mappings
    from service.prescreen.bulk import bulk_export
    from service.prescreen.job import JobOptions
    from service.prescreen.run import run_prescreen
    from service.settings import Settings

    if (source is None) == (fhir is None):
        raise typer.BadParameter("give exactly one of --from DIR or --fhir URL", param_hint="--from/--fhir")
    evaluated_at = parse_evaluation_time(at)
    try:
        mappings = load_mappings(mappings_dir)
        criteria = load_criteria(criteria_dir, mappings)
    except ConfigurationError as exc:
        typer.echo(f"invalid criteria or mappings: {exc}", err=True)
        raise typer.Exit(2) from exc
    # the audit store first: a run that cannot be recorded is refused before it starts
    try:
        store = AuditStore.from_url(audit_url or Settings(dev=True).audit_database_url)
        store.migrate()
    except AuditError as exc:
        typer.echo(f"the audit trail is unavailable, so the run would not be recorded: {exc}", err=True)
        raise typer.Exit(2) from exc
    directory, described = (source, str(source)) if source is not None else (out / "export", "")
    if fhir is not None:
        try:
            export = asyncio.run(bulk_export(fhir, directory, token=os.environ.get("TIL_CDS_FHIR_TOKEN")))
        except FhirServerError as exc:
            typer.echo(f"bulk export from {fhir} failed: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(
            f"exported {len(export.files)} files from {fhir} (transaction time {export.transaction_time})"
        )
        described = f"{fhir} $export at {export.transaction_time}"
    try:
        result = run_prescreen(
            directory,
            out,
            criteria,
            mappings,
            evaluated_at,
            JobOptions(master=master, progress=progress),
            source=described,
        )
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    try:
        record_id = store.append_prescreen_run(result.record)
    except AuditError as exc:
        typer.echo(
            f"the worklist is written, but the run could not be recorded in the audit trail: {exc}", err=True
        )
        raise typer.Exit(1) from exc
    finally:
        store.close()
    counts = result.record["counts"]
    typer.echo(
        f"{counts['patients']} patients x {len(criteria.trials)} trials at {evaluated_at.isoformat()}: "
        f"{counts['suggested']} suggestions, {counts['near_misses']} near misses"
    )
    for (name, kind), count in sorted(result.problem_counts.items()):
        typer.echo(f"  {name}: {count} lines not used ({kind})")
    typer.echo(f"wrote {result.worklist_parquet}, {result.worklist_csv}, {result.summary_html}")
    typer.echo(f"audit record {record_id}")
