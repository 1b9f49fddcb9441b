"""The ``til-cds`` command line (Typer): serve, criteria, audit, sandbox, bench."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.audit.cli import audit_app
from service.sandbox.cli import sandbox_app

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["app"]

# No local variables in tracebacks: Typer's default prints them, and they hold settings and tokens.
app = typer.Typer(
    help="til-cds: CDS Hooks 2.0 service suggesting TIL therapy trials.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
criteria_app = typer.Typer(
    help="Check the trial criteria and mappings, or write their JSON schema.", no_args_is_help=True
)
app.add_typer(criteria_app, name="criteria")
app.add_typer(audit_app, name="audit")
app.add_typer(sandbox_app, name="sandbox")

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev", help="Embedded default configuration, no client authentication; loopback only."
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(envvar="WEB_CONCURRENCY", help="Worker processes (production: one per core).")
    ] = 1,
) -> None:
    """Run the service with uvicorn."""
    import uvicorn

    from service.observability import log_config, prepare_multiprocess_dir
    from service.settings import SettingsProblemsError, get_settings

    if dev:
        if host not in LOOPBACK:
            raise typer.BadParameter(f"--dev binds to loopback only, not {host}", param_hint="--host")
        os.environ["TIL_CDS_DEV"] = "true"
        os.environ.setdefault("TIL_CDS_PUBLIC_BASE_URL", f"http://{host}:{port}")
    get_settings.cache_clear()
    try:
        get_settings()
    except SettingsProblemsError as exc:
        typer.echo(f"refusing to start: {exc}", err=True)
        raise typer.Exit(2) from None
    prepare_multiprocess_dir()
    uvicorn.run(
        "service.api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=log_config(),
        access_log=False,
        timeout_graceful_shutdown=20,
        http="service.api.server:NoDelayH11Protocol",
    )


def _dev_settings() -> Settings:
    """The settings in dev mode, or exit 2 listing every problem (never a value)."""
    from service.settings import Settings, SettingsProblemsError, load_settings

    try:
        return load_settings(Settings, dev=True)
    except SettingsProblemsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write the OpenAPI document.")] = Path("openapi.yaml"),
) -> None:
    """Write openapi.yaml from the running app's own OpenAPI document."""
    import yaml

    from service.api.main import create_app

    document = create_app(_dev_settings()).openapi()
    output.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
    typer.echo(f"wrote {output}")


@criteria_app.command("check")
def criteria_check(
    criteria_dir: Annotated[Path, typer.Option(help="Folder of trial files.")] = Path("criteria"),
    mappings_dir: Annotated[Path, typer.Option(help="Folder of mapping files.")] = Path("mappings"),
) -> None:
    """Validate every criteria and mapping file; print the version fingerprint."""
    from service.criteria import load_criteria
    from service.errors import ConfigurationError
    from service.mappings import load_mappings

    try:
        criteria = load_criteria(criteria_dir, load_mappings(mappings_dir))
    except ConfigurationError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from exc
    for trial in criteria.trials:
        computable = sum(c.rule is not None for c in trial.all_criteria())
        typer.echo(f"{trial.id}: {len(trial.all_criteria())} criteria, {computable} computable")
    typer.echo(f"fingerprint {criteria.fingerprint}")


@criteria_app.command("schema")
def criteria_schema(
    output: Annotated[Path, typer.Option(help="Where to write the schema.")] = Path("criteria/schema.json"),
) -> None:
    """Write the JSON schema of a trial criteria file (generated from the pydantic models)."""
    from service.criteria import criteria_json_schema

    output.write_text(json.dumps(criteria_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    typer.echo(f"wrote {output}")


@app.command()
def prescreen(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for worklist.parquet, worklist.csv, summary.html.")
    ],
    source: Annotated[
        Path | None, typer.Option("--from", help="Folder of Bulk Data NDJSON files (one per resource type).")
    ] = None,
    fhir: Annotated[
        str | None,
        typer.Option("--fhir", help="Instead of --from: run a Bulk Data $export on this FHIR server."),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Evaluation time, ISO 8601 with zone (default: now, UTC).")
    ] = None,
    master: Annotated[
        str, typer.Option("--master", help="Spark master: local[*] (embedded) or e.g. spark://host:7077.")
    ] = "local[*]",
    criteria_dir: Annotated[Path, typer.Option(help="Folder of trial files.")] = Path("criteria"),
    mappings_dir: Annotated[Path, typer.Option(help="Folder of mapping files.")] = Path("mappings"),
    audit_url: Annotated[
        str | None, typer.Option(help="Audit database for the run record (default: the service's).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show Spark's stage progress bar.")] = True,
) -> None:
    """Pre-screen every patient of a Bulk FHIR export against every trial, on Spark."""
    from service.prescreen.cli import run_command

    run_command(
        out=out,
        source=source,
        fhir=fhir,
        at=at,
        master=master,
        criteria_dir=criteria_dir,
        mappings_dir=mappings_dir,
        audit_url=audit_url,
        progress=progress,
    )


@app.command()
def bench(
    parts: Annotated[
        str,
        typer.Option(help="Comma-separated parts: prefetch, fetch, throughput, memory, audit, prescreen."),
    ] = "prefetch,fetch,throughput,memory,audit",
    sizes: Annotated[
        str | None, typer.Option(help="Observations per patient, e.g. 10,100,1000,5000.")
    ] = None,
    patients: Annotated[
        str | None, typer.Option(help="Pre-screen population sizes, e.g. 10000,100000.")
    ] = None,
    output: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = Path("var/bench.json"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Few calls and small patients (about a minute).")
    ] = False,
    calls: Annotated[int | None, typer.Option(help="Calls per patient size (bounded by time too).")] = None,
    memory_calls: Annotated[int | None, typer.Option(help="Calls before the second RSS reading.")] = None,
    workers: Annotated[int | None, typer.Option(help="Throughput workers (default: one per core).")] = None,
    audit_url: Annotated[
        str | None, typer.Option(help="Audit database for the measured service (default: temporary SQLite).")
    ] = None,
    fhir_url: Annotated[
        str | None, typer.Option(help="A running FHIR server for the fetch part (default: start HAPI).")
    ] = None,
    profile: Annotated[
        int | None,
        typer.Option(help="Instead: print a pyinstrument profile of in-process calls at this size."),
    ] = None,
    uvicorn_arg: Annotated[
        list[str] | None, typer.Option(help="Extra uvicorn argument for the throughput server (repeatable).")
    ] = None,
) -> None:
    """Benchmark latency (next to its floors), throughput and memory; print tables, write JSON."""
    import asyncio

    from service.bench import BenchOptions, format_report, run_benchmarks

    _dev_settings()  # the measured service reads them: bad ones stop here, listed, not mid-run
    if profile is not None:
        from service.bench.inprocess import profile_in_process

        typer.echo(asyncio.run(profile_in_process(profile, calls or 20)))
        return
    overrides: dict[str, object] = {"parts": tuple(p.strip() for p in parts.split(",") if p.strip())}
    if sizes:
        overrides["sizes"] = overrides["fetch_sizes"] = tuple(int(s) for s in sizes.split(","))
    if patients:
        overrides["prescreen_sizes"] = tuple(int(n) for n in patients.split(","))
    for name, value in (
        ("calls", calls),
        ("memory_calls", memory_calls),
        ("workers", workers),
        ("audit_url", audit_url),
        ("fhir_url", fhir_url),
        ("uvicorn_args", tuple(uvicorn_arg) if uvicorn_arg else None),
    ):
        if value is not None:
            overrides[name] = value
    try:
        options = BenchOptions.quick(**overrides) if quick else BenchOptions(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--parts") from exc
    result = run_benchmarks(options, output)
    typer.echo(format_report(result))
    typer.echo(f"\nwrote {output}")


if __name__ == "__main__":
    app()
