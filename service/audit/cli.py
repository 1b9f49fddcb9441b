"""``til-cds audit ...``: verify the chain, export, count and replay recorded decisions."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TextIO, TypeVar

import typer

from service.settings import (
    AuditExportSettings,
    AuditStoreSettings,
    SettingsProblemsError,
    load_settings,
)

from .errors import AuditError
from .export import EXPORT_FORMATS, exports_inputs, pseudonym_key_from_settings
from .replay import Evaluate, replay_decision
from .store import AuditStore, ExportFilters

__all__ = ["DEFAULT_REPLAY_EVALUATOR", "audit_app"]

S = TypeVar("S", bound=AuditStoreSettings)

DEFAULT_REPLAY_EVALUATOR = "service.engine.replay:evaluate_recorded"
"""``module:function`` with the :data:`~service.audit.replay.Evaluate` signature."""

audit_app = typer.Typer(
    help="Verify, export, count and replay the hash-chained audit trail.",
    no_args_is_help=True,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Audit database URL [default: TIL_CDS_AUDIT_DATABASE_URL, else the one `til-cds serve` uses]",
    ),
]
Since = Annotated[str | None, typer.Option(help="ISO 8601 start, inclusive (UTC if no offset)")]
Until = Annotated[str | None, typer.Option(help="ISO 8601 end, exclusive (UTC if no offset)")]


def _settings(cls: type[S], **overrides: object) -> S:
    """Only the settings this command uses: an auditor needs no signing key or client list."""
    try:
        return load_settings(cls, **overrides)
    except SettingsProblemsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def _open_store(database_url: str | None) -> Iterator[AuditStore]:
    """The store for the command, with audit errors shown as one line and exit status 2."""
    url = database_url or _settings(AuditStoreSettings).audit_database_url
    try:
        store = AuditStore.from_url(url)
    except AuditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        yield store
    except AuditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        store.close()


def _filters(**text: str | None) -> ExportFilters:
    try:
        return ExportFilters.from_text(**text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@audit_app.command()
def verify(database_url: DatabaseUrl = None) -> None:
    """Check every record's hash and link; exit 1 if anything was edited or deleted."""
    with _open_store(database_url) as store:
        report = store.verify()
    for problem in report.problems:
        typer.echo(problem)
    status = "ok" if report.ok else f"BROKEN ({len(report.problems)} problems)"
    typer.echo(f"{status}: {report.records_checked} records checked")
    if not report.ok:
        raise typer.Exit(1)


@contextmanager
def _output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
        return
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        yield handle


@audit_app.command()
def export(
    export_format: Annotated[str, typer.Option("--format", help="ndjson, csv or fhir")] = "ndjson",
    since: Since = None,
    until: Until = None,
    patient: Annotated[str | None, typer.Option(help="Patient reference, e.g. Patient/123")] = None,
    trial: Annotated[str | None, typer.Option(help="Trial id")] = None,
    outcome: Annotated[
        str | None, typer.Option(help="suggested, not_suggested, accepted or overridden")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="decision or feedback")] = None,
    output: Annotated[str, typer.Option(help="File to write, - for stdout")] = "-",
    pseudonymise: Annotated[
        bool | None,
        typer.Option(
            "--pseudonymise/--no-pseudonymise",
            help="Replace patient and user references [default: from the settings]",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Stream records as NDJSON, CSV or a FHIR Bundle of AuditEvents."""
    if export_format not in EXPORT_FORMATS:
        raise typer.BadParameter(f"unknown format {export_format!r}; use ndjson, csv or fhir")
    filters = _filters(
        since=since, until=until, patient_ref=patient, trial_id=trial, outcome=outcome, kind=kind
    )
    key: bytes | None = None
    if pseudonymise is not False:
        overrides = {} if pseudonymise is None else {"audit_pseudonymise_exports": True}
        settings = _settings(AuditExportSettings, **overrides)
        try:
            key = pseudonym_key_from_settings(settings)
        except AuditError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    _media_type, exporter = EXPORT_FORMATS[export_format]
    with _open_store(database_url) as store, _output(output) as handle:
        records = store.iter_records(filters, with_inputs=exports_inputs(export_format, key))
        for chunk in exporter(records, pseudonym_key=key):
            handle.write(chunk)


@audit_app.command()
def counts(since: Since = None, until: Until = None, database_url: DatabaseUrl = None) -> None:
    """Per month and trial: cards shown, accepted, overridden and override reasons (JSON)."""
    filters = _filters(since=since, until=until)
    with _open_store(database_url) as store:
        rows = store.counts(filters.since, filters.until)
    typer.echo(json.dumps(rows, indent=2))


def _load_evaluator(spec: str) -> Evaluate:
    module_name, _, attribute = spec.partition(":")
    try:
        evaluator: Evaluate = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load the evaluator {spec!r}: {exc}") from exc
    try:
        inspect.signature(evaluator).bind({}, [], "", {})
    except (TypeError, ValueError) as exc:
        raise typer.BadParameter(
            f"the evaluator {spec!r} must take (criteria_snapshot, input_resources, evaluated_at, "
            f"unavailable): {exc}"
        ) from exc
    return evaluator


@audit_app.command()
def replay(
    decision_id: Annotated[str, typer.Argument(help="The recorded decision's id")],
    evaluator: Annotated[
        str, typer.Option(help="module:function evaluating (criteria, resources, evaluated_at)")
    ] = DEFAULT_REPLAY_EVALUATOR,
    database_url: DatabaseUrl = None,
) -> None:
    """Re-evaluate a decision with its recorded criteria and inputs; exit 1 on disagreement."""
    evaluate = _load_evaluator(evaluator)
    with _open_store(database_url) as store:
        report = replay_decision(store, decision_id, evaluate)
    for difference in report.differences:
        typer.echo(difference.describe())
    for what in report.not_compared:
        typer.echo(f"not compared: {what}")
    verdict = "agrees" if report.agrees else f"DIFFERS in {len(report.differences)} places"
    typer.echo(
        f"decision {decision_id} (criteria {report.criteria_fingerprint}, evaluated at "
        f"{report.evaluated_at}): today's engine {verdict}"
    )
    if not report.agrees:
        raise typer.Exit(1)
