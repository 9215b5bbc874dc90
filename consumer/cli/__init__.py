"""The `taskledger` command line (typer + rich)."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from consumer.cli import archive as cli_archive
from consumer.cli import audit as cli_audit
from consumer.cli import control as cli_control
from consumer.cli import dispatches as cli_dispatches
from consumer.cli import dlq as cli_dlq
from consumer.cli import recover as cli_recover
from consumer.cli import seal as cli_seal
from consumer.cli.common import EXIT_UNAVAILABLE, console, fail, load_settings, run, run_app
from consumer.core import logs
from consumer.core.errors import DatabaseUnavailable
from consumer.core.settings import Settings, redact_text

log = logging.getLogger(__name__)

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
cli_dispatches.register(cli_audit.app)
app.add_typer(cli_dlq.app, name="dlq")
app.add_typer(cli_archive.app, name="archive")
cli_control.register(app)
cli_recover.register(app)
cli_seal.register(app)


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
        Only | None, typer.Option(help="Host only this handler: audit or capacity (default: both).")
    ] = None,
    burst: Annotated[
        bool,
        typer.Option(
            "--burst",
            help="Exit once the queues are empty, the outbox drained and every ledger row sealed.",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    log_json: Annotated[
        bool | None, typer.Option("--log-json/--log-text", help="Log JSON lines (default: text).")
    ] = None,
) -> None:
    """Run the service: consume the audit and capacity queues until SIGTERM/SIGINT.

    It also creates the ledger's month partitions ahead (at start, then daily) and, with
    the audit handler, seals the ledger (every TASKLEDGER_SEAL_INTERVAL_MS; one sealer
    works at a time across processes).

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
    """Serve the HTTP API (/api/v1/..., /healthz, /readyz, /metrics, /docs) and the ops
    console (/ui/).

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
    asyncapi: Annotated[
        Path | None,
        typer.Option(help="AsyncAPI file (default: docs/asyncapi.json, or OUT/asyncapi.json)."),
    ] = None,
) -> None:
    """Write the JSON Schema of the envelope and of every event type, and the AsyncAPI 3.0
    document of every channel, operation and message (docs/asyncapi.json)."""
    from contracts.asyncapi import ASYNCAPI_PATH, export_asyncapi
    from contracts.export import export_schemas

    target = out or Path(__file__).resolve().parents[2] / "contracts" / "schemas"
    written = export_schemas(target)
    console.print(f"wrote {len(written)} schema files to {target}")
    document = export_asyncapi(asyncapi or (out / "asyncapi.json" if out else ASYNCAPI_PATH))
    console.print(f"wrote the AsyncAPI 3.0 document to {document}")


@app.command()
def verify(
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="HEX",
            help="A head hash recorded earlier (action=chain_head): exit 1 unless it is "
            "still a link of the chain.",
        ),
    ] = None,
) -> None:
    """Check the ledger against its hash chain, and tasks/steps against the ledger.

    Exit 0: intact. Exit 1: sealed rows altered or removed behind the service's back
    (for example by a superuser with triggers disabled), a broken chain, a projection
    that differs from its events, a dedup key whose row is gone, or --expect-head not
    found in the chain. Exit 5:
    nothing altered, but some rows are not sealed (written with
    TASKLEDGER_LEDGER_CHAIN=false, or inserted around the service), or are waiting for
    the sealer longer than TASKLEDGER_SEAL_BOUND_S (rows waiting less are pending: exit 0),
    or have no dedup key in ledger_event_ids (unkeyed).
    Each run is recorded as the operator action 'verify' (shown on the console's overview).
    """
    from rich.progress import Progress

    from consumer.cli.common import print_json
    from consumer.ledger.verify import WARNING_KINDS, VerifyReport, parse_head
    from consumer.ledger.verify import verify as verify_ledger
    from consumer.store import db

    anchor: bytes | None = None
    if expect_head is not None:
        try:
            anchor = parse_head(expect_head)
        except ValueError:
            fail("--expect-head: expected a head hash of 64 hex digits")
    settings = load_settings()

    async def check() -> VerifyReport:
        conn = await db.connect(settings.dsn)
        try:
            total = int(await conn.fetchval(db.q("ledger_row_count")))
            with Progress(transient=True, disable=json_out) as progress:
                bar = progress.add_task("verifying", total=total)
                report = await verify_ledger(
                    conn, lambda n: progress.advance(bar, n), expect_head=anchor,
                    seal_bound_s=settings.seal_bound_s,
                )  # fmt: skip
            await record_verify(conn, settings, report)
            return report
        finally:
            await conn.close()

    report = run(check())
    if json_out:
        print_json({**report.model_dump(), "exit_code": report.exit_code})
    else:
        console.print(
            f"checked {report.rows} ledger rows in {report.links} chain links, "
            f"{report.tasks_checked} tasks"
        )
        console.print(f"head hash: {report.head_hash or '(empty chain)'} (link {report.head_link})")
        cli_archive.print_archived(report.archived_months, report.archived_rows)
        if report.pending:
            console.print(f"{report.pending} rows pending sealing (within "
                          f"{settings.seal_bound_s:g} s; not a finding)")  # fmt: skip
        if report.expected_head and "anchor_missing" not in report.counts:
            console.print(f"expected head {report.expected_head} is a link of the chain")
        for finding in report.findings[:50]:
            colour = "yellow" if finding.kind in WARNING_KINDS else "red"
            console.print(f"[{colour}]{finding.kind}[/{colour}]: {finding.detail}", soft_wrap=True)
        hidden = sum(report.counts.values()) - min(len(report.findings), 50)
        if hidden > 0:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
            console.print(f"... and {hidden} more ({counts}; --json lists up to 1000 per kind)")
        first = report.first
        if report.tampered and first is not None:
            console.print(f"[bold red]first discrepancy:[/bold red] {first.detail}", soft_wrap=True)
        elif report.counts:
            ranges = ", ".join(f"{report.counts[k]} {k}" for k in sorted(report.counts))
            console.print(f"[yellow]warning:[/yellow] {ranges} range(s), nothing altered (exit 5)")
        else:
            console.print("[green]ledger intact[/green]")
    if report.exit_code:
        raise typer.Exit(report.exit_code)


async def record_verify(conn: Any, settings: Settings, report: Any) -> None:
    """Record the outcome of a verify run as the operator action ``verify`` (the ops
    console's overview shows the newest). A database that refuses the write (a replica, a
    role without the grant) costs a warning, never the verify's own answer."""
    from consumer.operations.actions import default_actor, record_action

    status = "tampered" if report.tampered else ("warnings" if report.counts else "intact")
    result = {
        "status": status, "exit_code": report.exit_code, "rows": report.rows,
        "links": report.links, "tasks": report.tasks_checked, "pending": report.pending,
        "head_hash": report.head_hash, "findings": dict(report.counts),
    }  # fmt: skip
    params = {"expect_head": report.expected_head} if report.expected_head else {}
    try:
        await record_action(conn, "verify", default_actor(settings), params, result)
    except Exception as exc:  # the verdict stands whatever the write does
        log.warning("could not record the verify run", extra={"error": redact_text(str(exc))})


def main() -> None:
    """Console-script entry point (usage errors in one line: see ``common.run_app``)."""
    run_app(app)


if __name__ == "__main__":  # pragma: no cover
    main()
