"""The `taskledger` command line (typer + rich)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from consumer.cli import audit as cli_audit
from consumer.cli import control as cli_control
from consumer.cli import dlq as cli_dlq
from consumer.cli.common import EXIT_UNAVAILABLE, console, fail, load_settings, run
from consumer.core import logs
from consumer.core.errors import DatabaseUnavailable

app = typer.Typer(
    name="taskledger",
    help="Audit and admission service for fleets of automation agents.\n\n"
    "Settings come from TASKLEDGER_* environment variables (see README, 'Configuration').",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
schema_app = typer.Typer(help="The wire contract's JSON Schema files.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(cli_audit.app, name="audit")
app.add_typer(cli_dlq.app, name="dlq")
cli_control.register(app)


class Only(StrEnum):
    """Which handler `run` hosts."""

    audit = "audit"
    capacity = "capacity"


@app.command()
def migrate(
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it.")
    ] = False,
) -> None:
    """Create the database if it is missing and upgrade it to the newest schema.

    Uses TASKLEDGER_MIGRATION_DATABASE_URL (the owner role) if set, else
    TASKLEDGER_DATABASE_URL. With TASKLEDGER_APP_ROLE_PASSWORD set, the least-privilege
    role the service connects as (TASKLEDGER_APP_ROLE, default taskledger_app) may log in.
    """
    from consumer.store import migrate as migration

    settings = load_settings()
    if sql:
        sys.stdout.write(migration.offline_sql(settings.owner_dsn))
        return
    try:
        created = migration.migrate(settings)
    except DatabaseUnavailable as exc:
        fail(f"cannot reach PostgreSQL: {exc}", EXIT_UNAVAILABLE)
    except OSError as exc:
        fail(f"cannot reach PostgreSQL: {exc}", EXIT_UNAVAILABLE)
    what = "created and migrated" if created else "migrated"
    console.print(f"database {what} to the newest schema")


@app.command("run")
def run_cmd(
    only: Annotated[
        Only | None, typer.Option(help="Host only this handler (default: both).")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once the queues are empty and the outbox drained.")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-text", help="Log JSON lines (default: text).")
    ] = None,
) -> None:
    """Run the service: consume the audit and capacity queues until SIGTERM/SIGINT.

    On SIGTERM/SIGINT it stops taking deliveries, commits and acknowledges what it holds,
    and exits 0 within TASKLEDGER_SHUTDOWN_TIMEOUT_S.
    """
    from consumer.core import metrics
    from consumer.runtime.service import run_service

    settings = load_settings(metrics_port=metrics_port, log_json=log_json)
    logs.configure(settings.log_level, settings.log_json)
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    run(run_service(settings, only=only.value if only else None, burst=burst))


@app.command()
def simulate(
    tasks: Annotated[int, typer.Option(min=1, help="Task lifecycles to publish.")] = 200,
    agents: Annotated[int, typer.Option(min=1, help="Fake agents.")] = 6,
    rate: Annotated[
        float, typer.Option(min=0, help="Messages per second (0: as fast as confirms allow).")
    ] = 0,
    duplicates: Annotated[
        float, typer.Option(min=0, max=1, help="Share of messages published twice.")
    ] = 0.05,
    reorder: Annotated[
        float, typer.Option(min=0, max=1, help="Share of tasks whose events are shuffled.")
    ] = 0.1,
    poison: Annotated[int, typer.Option(min=0, help="Invalid messages mixed in.")] = 5,
    seed: Annotated[int | None, typer.Option(help="Random seed (repeatable traffic).")] = None,
) -> None:
    """Publish realistic traffic from fake agents and an orchestrator (with confirms).

    Full lifecycles with steps, failures of every cause, homelab services, capacity
    reports, dispatch requests, duplicates, reordering and a few poison messages.
    """
    from consumer.simulate import SimulationConfig, simulate_traffic

    settings = load_settings()
    logs.configure("WARNING", settings.log_json)
    config = SimulationConfig(
        tasks=tasks, agents=agents, rate=rate, duplicate_share=duplicates,
        reorder_share=reorder, poison=poison, seed=seed,
    )  # fmt: skip
    stats = run(simulate_traffic(settings, config, show_progress=True))
    console.print(stats.render())


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve the HTTP API (/api/v1/..., /healthz, /readyz, /metrics, /docs).

    Mutating calls need `Authorization: Bearer $TASKLEDGER_API_TOKEN`; without a token
    configured they are disabled.
    """
    from consumer.http.app import serve

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_json)
    serve(settings, host, port)


@schema_app.command("export")
def schema_export(
    out: Annotated[
        Path | None, typer.Option(help="Directory (default: contracts/schemas in the package).")
    ] = None,
) -> None:
    """Write the JSON Schema of the envelope and of every event type."""
    from contracts.export import export_schemas

    target = out or Path(__file__).resolve().parents[2] / "contracts" / "schemas"
    written = export_schemas(target)
    console.print(f"wrote {len(written)} schema files to {target}")


@app.command()
def verify(
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the ledger against its hash chain; exit 1 if anything was altered.

    Reports rows altered, inserted or removed behind the service's back (for example by
    a superuser with triggers disabled), and the chain's head hash: keep it outside the
    database to detect a consistent rewrite of everything.
    """
    from rich.progress import Progress

    from consumer.cli.common import print_json
    from consumer.ledger.verify import VerifyReport
    from consumer.ledger.verify import verify as verify_ledger
    from consumer.store import db

    settings = load_settings()

    async def check() -> VerifyReport:
        conn = await db.connect(settings.dsn)
        try:
            total = int(await conn.fetchval(db.q("ledger_row_count")))
            with Progress(transient=True, disable=json_out) as progress:
                bar = progress.add_task("verifying", total=total)
                return await verify_ledger(conn, lambda n: progress.advance(bar, n))
        finally:
            await conn.close()

    report = run(check())
    if json_out:
        print_json(report.model_dump())
    else:
        console.print(f"checked {report.rows} ledger rows in {report.links} chain links")
        console.print(f"head hash: {report.head_hash or '(empty chain)'}")
        for finding in report.findings[:50]:
            console.print(f"[red]{finding.kind}[/red]: {finding.detail}")
        first = report.first
        if first is not None:
            console.print(f"[bold red]first discrepancy:[/bold red] {first.detail}")
        else:
            console.print("[green]ledger intact[/green]")
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
