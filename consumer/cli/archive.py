"""``taskledger archive``: retention without DELETE (owner role only).

``taskledger archive --before 2026-01 [--output DIR] [--dry-run] [--allow-open]``
exports every month partition before January 2026 not archived yet, verifies each export
against the chain and detaches the month (:mod:`consumer.operations.archive`);
``taskledger archive verify FILE`` re-checks an export offline
(:func:`consumer.ledger.archived.check_export`); ``taskledger archive list`` shows the
archived months.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumer.cli.common import console, fail, load_settings, print_json, run
from consumer.operations.actions import default_actor

__all__ = ["app"]

app = typer.Typer(
    help="Archive old months of the ledger: export, verify, detach (owner role only).",
    invoke_without_command=True,
)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    )  # fmt: skip


@app.callback()
def archive(
    ctx: typer.Context,
    before: Annotated[
        str | None,
        typer.Option(metavar="YYYY-MM", help="Archive every month strictly before this one."),
    ] = None,
    output: Annotated[
        Path, typer.Option(metavar="DIR", help="Where the export files are written.")
    ] = Path("ledger-archive"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be archived; change nothing.")
    ] = False,
    allow_open: Annotated[
        bool,
        typer.Option("--allow-open", help="Archive months whose tasks are not all finished."),
    ] = False,
) -> None:
    """Export each month before --before (events, chain links, tasks, steps) to
    DIR/ledger-YYYY-MM.jsonl.gz with its .sha256, verify the file against the chain,
    then detach the month's partitions into the schema ledger_archive and record it in
    ledger_archives and operator_actions. Uses TASKLEDGER_MIGRATION_DATABASE_URL (the
    owner role); the app role is refused (exit 3). Exit 1 when a month is refused.
    """
    if ctx.invoked_subcommand is not None:
        return
    from consumer.operations.archive import ArchiveRun, MonthPlan, archive, parse_month
    from consumer.store import db

    if before is None:
        fail("--before YYYY-MM is required (or a subcommand: verify, list)")
    try:
        month = parse_month(before)
    except ValueError as exc:
        fail(f"--before: {exc}")
    settings = load_settings()
    actor = default_actor(settings)

    async def go() -> ArchiveRun:
        conn = await db.connect(settings.owner_dsn)
        try:
            with _progress() as progress:

                def on_plan(plans: list[MonthPlan]) -> Callable[[MonthPlan], Callable[[int], None]]:
                    def factory(p: MonthPlan) -> Callable[[int], None]:
                        bar = progress.add_task(f"exporting {p.label}", total=None)
                        return lambda n: progress.advance(bar, n)

                    return factory

                return await archive(
                    conn, month, output, actor, allow_open=allow_open, dry_run=dry_run,
                    on_plan=on_plan,
                )  # fmt: skip
        finally:
            await conn.close()

    result = run(go())
    _report(result, dry_run)
    if result.refused is not None:
        raise typer.Exit(1)


def _report(result: object, dry_run: bool) -> None:
    from consumer.operations.archive import ArchiveRun

    assert isinstance(result, ArchiveRun)
    if not result.plans:
        console.print("nothing to archive: no attached month before that one")
        return
    table = Table(title="would archive" if dry_run else "months", title_justify="left")
    for column in ("month", "rows", "seqs", "links", "state"):
        table.add_column(column, justify="right" if column in ("rows", "links") else "left")
    done = {a.month: a for a in result.done}
    stopped = False
    for p in result.plans:
        seqs = f"{p.first_seq}..{p.last_seq}" if p.rows else "-"
        if p.refusal is not None:
            state = f"[red]refused: {p.refusal}[/red]"
            stopped = True
        elif stopped:
            state = "not reached (an older month was refused)"
        elif p.label in done:
            a = done[p.label]
            state = f"archived: {a.tasks:,} tasks, {a.steps:,} steps"
        else:
            state = "would archive" if dry_run else "not archived"
        table.add_row(p.label, f"{p.rows:,}", seqs, str(len(p.links)), state)
    console.print(table, soft_wrap=True)
    for a in result.done:
        console.print(f"{a.month}: {a.path} sha256 {a.sha256}", soft_wrap=True, highlight=False)
    if result.done:
        tables = ", ".join(t for a in result.done for t in a.partitions)
        console.print(
            f"archived {len(result.done)} month(s); detached tables kept: {tables} "
            "(drop them once the files are stored safely: README, 'Archiving old months')",
            soft_wrap=True,
        )


@app.command("verify")
def verify_file(
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="An export (ledger-YYYY-MM.jsonl.gz).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-verify an export offline: its SHA-256 against FILE.sha256, every row digest
    against the link that sealed it, every link hash and the chain between its links.
    Exit 0 intact, 1 a problem, 4 no such file."""
    from consumer.ledger.archived import check_export

    if not file.is_file():
        fail(f"no such file: {file}", 4)
    with _progress() as progress:
        bar = progress.add_task(f"verifying {file.name}", total=None)
        check = check_export(file, lambda n: progress.advance(bar, n))
    if as_json:
        print_json({
            "file": str(file), "ok": check.ok, "sha256": check.sha256, "month": check.month,
            "events": check.events, "links": check.links, "tasks": check.tasks,
            "steps": check.steps, "first_seq": check.first_seq, "last_seq": check.last_seq,
            "problems": check.problems,
        })  # fmt: skip
    else:
        console.print(
            f"{file.name}: month {check.month}, {check.events:,} events in {check.links:,} "
            f"links (seqs {check.first_seq}..{check.last_seq}), {check.tasks:,} tasks, "
            f"{check.steps:,} steps, sha256 {check.sha256}",
            soft_wrap=True, highlight=False,
        )  # fmt: skip
        for problem in check.problems:
            console.print(f"[red]problem[/red]: {problem}", soft_wrap=True, highlight=False)
        if check.ok:
            console.print("[green]export intact[/green]")
    if not check.ok:
        raise typer.Exit(1)


@app.command("list")
def list_archives(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The archived months: file, SHA-256, rows, seqs, when."""
    from consumer.store import db

    settings = load_settings()

    async def go() -> list[dict[str, object]]:
        conn = await db.connect(settings.dsn)
        try:
            with db.translate_errors():
                if not await conn.fetchval(db.q("archived_table_exists")):
                    return []
                return [dict(r) for r in await conn.fetch(db.q("archive_done_months"))]
        finally:
            await conn.close()

    rows = run(go())
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no archived months")
        return
    table = Table(title="archived months", title_justify="left")
    for column in ("month", "file", "sha256", "rows", "seqs", "archived at"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            f"{r['month']:%Y-%m}", str(r["file_name"]), str(r["sha256"]), f"{r['row_count']:,}",
            f"{r['first_seq']}..{r['last_seq']}", f"{r['archived_at']:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    console.print(table, soft_wrap=True)


def print_archived(months: list[str], rows: int) -> None:
    """The line `taskledger verify` prints about archived months (nothing if none)."""
    if months:
        console.print(
            f"archived months (exported and detached; the chain is checked from their boundary "
            f"hashes): {', '.join(months)} ({rows:,} rows)",
            soft_wrap=True, highlight=False,
        )  # fmt: skip
