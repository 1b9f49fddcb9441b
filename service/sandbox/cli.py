"""``til-cds sandbox``: a local HAPI FHIR server loaded with the synthetic patients."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from service.errors import ConfigurationError
from service.mappings import Mappings
from service.settings import REPO_ROOT

__all__ = ["sandbox_app"]

sandbox_app = typer.Typer(help="A HAPI FHIR sandbox with synthetic patients.", no_args_is_help=True)
STATE_DIR = REPO_ROOT / "var" / "sandbox"
PIDFILE = STATE_DIR / "hapi.pid"


def _mappings() -> Mappings:
    from service.mappings import load_mappings

    return load_mappings(REPO_ROOT / "mappings")


@contextmanager
def _patient_files() -> Iterator[None]:
    """A broken patient file (deploy/sandbox/patients/) ends the command with its file and field."""
    try:
        yield
    except ConfigurationError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from exc


def _load_patients(base_url: str) -> None:
    from service.sandbox.loader import load_bundles
    from service.sandbox.synthetic import generate_patients, transaction_bundle

    with _patient_files():
        patients = generate_patients(datetime.now(UTC).date())
    report = load_bundles(((p.id, transaction_bundle(p)) for p in patients), base_url, total=len(patients))
    for name, reason in report.failed.items():
        typer.echo(f"FAILED {name}: {reason}", err=True)
    typer.echo(f"loaded {len(report.loaded)} patients into {base_url}:")
    for patient in patients:
        if patient.id in report.loaded:
            typer.echo(f"  {patient.id:36} {patient.description}")
    if report.failed:
        raise typer.Exit(1)


@sandbox_app.command()
def up(
    port: Annotated[int, typer.Option(help="Port for the FHIR server on 127.0.0.1.")] = 8080,
    docker: Annotated[
        bool,
        typer.Option("--docker", help="Use the hapiproject/hapi image via testcontainers (needs Docker)."),
    ] = False,
) -> None:
    """Build (if needed) and start the HAPI server, wait for it, load the synthetic patients."""
    from service.sandbox.hapi import SandboxError, build_server, start_container, start_server

    try:
        if docker:
            server = start_container()
            typer.echo("started hapiproject/hapi in Docker; it stops when this command exits (Ctrl-C)")
        else:
            jar = build_server()
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            server = start_server(port, jar=jar, log_path=STATE_DIR / "hapi.log", detach=True)
            server.write_pidfile(PIDFILE)
    except SandboxError as exc:
        typer.echo(f"sandbox: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"HAPI FHIR R4 ready at {server.base_url}")
    _load_patients(server.base_url)
    typer.echo(f"\npoint the service at it: fhirServer = {server.base_url}")
    typer.echo(
        f"a request body without prefetch: til-cds sandbox request til-lung-eligible --prefetch none --fhir {server.base_url}"
    )
    if docker:
        typer.echo("press Ctrl-C to stop")
        try:
            import time

            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.stop()
    else:
        typer.echo("stop it with: til-cds sandbox down")


@sandbox_app.command()
def down() -> None:
    """Stop the server started by ``sandbox up``."""
    from service.sandbox.hapi import stop_from_pidfile

    if stop_from_pidfile(PIDFILE):
        typer.echo("stopped")
    else:
        typer.echo("no sandbox server was running")


@sandbox_app.command()
def load(
    path: Annotated[Path, typer.Argument(help="A transaction Bundle file, or a folder of them.")],
    fhir: Annotated[str, typer.Option(help="FHIR server base URL.")] = "http://127.0.0.1:8080/fhir",
) -> None:
    """Load transaction Bundles into any FHIR server, with a progress bar; report what failed."""
    from service.sandbox.loader import bundle_files, load_bundles

    try:
        files = bundle_files(path)
    except FileNotFoundError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    named = ((f.name, json.loads(f.read_text(encoding="utf-8"))) for f in files)
    token = os.environ.get("TIL_CDS_FHIR_TOKEN")
    report = load_bundles(named, fhir, total=len(files), token=token)
    for name, reason in report.failed.items():
        typer.echo(f"FAILED {name}: {reason}", err=True)
    typer.echo(f"{len(report.loaded)} loaded, {len(report.failed)} failed")
    if report.failed:
        raise typer.Exit(1)


@sandbox_app.command()
def generate(
    output: Annotated[Path, typer.Argument(help="Folder to write into.")] = Path("var/synthetic"),
    ndjson: Annotated[
        bool,
        typer.Option("--ndjson", help="Write Bulk Data NDJSON files (one per resource type) instead."),
    ] = False,
    patients: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With --ndjson: this many generated patients (5% lung, 2% gastro-esophageal cancer, "
            "50-2,000 Observations each) instead of the synthetic cases.",
        ),
    ] = None,
) -> None:
    """Write each synthetic patient as a transaction Bundle and a full-prefetch request body (or NDJSON)."""
    today = datetime.now(UTC).date()
    if patients is not None and not ndjson:
        raise typer.BadParameter("--patients writes NDJSON; add --ndjson", param_hint="--patients")
    with _patient_files():
        if ndjson:
            from service.prescreen.samples import write_population, write_synthetic

            written = (
                write_population(output, patients, today) if patients else write_synthetic(output, today)
            )
        else:
            from service.sandbox.synthetic import write_samples

            written = write_samples(output, today, _mappings())
    typer.echo(f"wrote {len(written)} files to {output}")


@sandbox_app.command()
def request(
    patient_id: Annotated[str, typer.Argument(help="A synthetic patient id, e.g. til-lung-eligible.")],
    prefetch: Annotated[str, typer.Option(help="full, partial or none.")] = "full",
    fhir: Annotated[str | None, typer.Option(help="fhirServer to put in the request.")] = None,
    hook: Annotated[str, typer.Option(help="patient-view or order-select.")] = "patient-view",
    drug: Annotated[
        str, typer.Option(help="order-select: the systemic anticancer therapy in the draft order.")
    ] = "docetaxel",
) -> None:
    """Print a CDS Hooks request body for a synthetic patient, dated today, with a new hookInstance."""
    from service.sandbox.synthetic import find_patient, hook_request

    try:
        with _patient_files():
            patient = find_patient(patient_id, datetime.now(UTC).date())
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    if prefetch not in ("full", "partial", "none"):
        raise typer.BadParameter("full, partial or none", param_hint="--prefetch")
    if hook not in ("patient-view", "order-select"):
        raise typer.BadParameter("patient-view or order-select", param_hint="--hook")
    try:
        body = hook_request(
            patient, _mappings(), prefetch=prefetch, fhir_server=fhir, hook=hook, draft_drug=drug
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--drug") from exc
    json.dump(body, sys.stdout, indent=1)
    sys.stdout.write("\n")
