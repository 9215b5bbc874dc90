"""``taskledger dlq summary|list|show|replay|export|import``: the dead letters on the command line.

Every command reads ``<prefix>.dead`` without taking anything it does not mean to take
(see :mod:`consumer.dlq` for how, and why order is kept). ``replay``, ``export`` (with or
without ``--purge``) and ``import`` are recorded as operator actions in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from consumer import dlq, logs
from consumer.broker import Names
from consumer.cli_common import (
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    console,
    err_console,
    fail,
    load_settings,
    parse_time,
    print_json,
    run,
)
from consumer.exceptions import InvalidArgument
from consumer.settings import Settings

app = typer.Typer(
    help="Inspect, replay, export and import dead-lettered messages (<prefix>.dead).\n\n"
    "Reading never takes a message out of the queue, and keeps its order.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

EXIT_INTERRUPTED = 130

ReasonOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--reason",
        metavar="REASON",
        help="Failure reason, a shell pattern; repeatable (schema_violation, invalid_json, "
        "rejected, delivery_limit, ...).",
    ),
]
TypeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--type", metavar="TYPE", help="Event type, a shell pattern; repeatable (task.*)."
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="TIME", help="Failed at or after: RFC 3339 or relative (7d, 12h, 30m)."
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(
        "--until",
        metavar="TIME",
        help="Failed before: RFC 3339 or relative (1h: before an hour ago).",
    ),
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", metavar="TASK_ID", help="Task id (the CloudEvent subject)."),
]
IdOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--id",
        metavar="ID",
        help="CloudEvent id, message_id or fingerprint (as `list` shows); repeatable.",
    ),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", metavar="N", help="At most N messages.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def build_filters(
    *,
    reason: list[str] | None = None,
    type_: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    task: str | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
) -> dlq.Filters:
    """Turn the command-line filters into :class:`dlq.Filters`; exits 2 with one line if bad."""
    try:
        start = parse_time(since, name="--since")
        end = parse_time(until, name="--until")
    except InvalidArgument as exc:
        fail(str(exc))
    if start and end and start >= end:
        fail("--since must be before --until")
    if limit is not None and limit < 1:
        fail(f"--limit must be at least 1, got {limit}")
    if task is not None:
        try:
            task = str(uuid.UUID(task))
        except ValueError:
            fail(f"--task {task!r} is not a UUID")
    return dlq.Filters(
        reasons=tuple(reason or ()),
        types=tuple(type_ or ()),
        since=start,
        until=end,
        task=task,
        ids=tuple(ids or ()),
        limit=limit,
    )


def _settings() -> Settings:
    """Settings, and logging that leaves stderr to the one-line errors and the progress bar."""
    settings = load_settings()
    level = "WARNING" if settings.log_level.upper() == "INFO" else settings.log_level
    logs.configure(level, settings.log_json)
    for noisy in ("aiormq", "aio_pika"):  # their connection errors become our one-line error
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    return settings


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _cut(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _queue(settings: Settings) -> str:
    return Names(settings.prefix).dead


# --------------------------------------------------------------------------- summary, list, show


@app.command()
def summary(
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", help="Look at the first N only.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Group the dead letters by reason, event type and first line of error."""
    if limit is not None and limit < 1:
        fail(f"--limit must be at least 1, got {limit}")
    settings = _settings()
    result = run(dlq.summary(settings, limit=limit))
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"{_queue(settings)}: {result.total} dead letters", title_justify="left")
    for column in ("reason", "type", "error", "count", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for group in result.groups:
        table.add_row(
            escape(group.reason),
            escape(group.event_type or "-"),
            escape(_cut(group.error)),
            str(group.count),
            _when(group.oldest),
            _when(group.newest),
        )
    console.print(table)
    if result.scanned < result.total:
        console.print(f"looked at the first {result.scanned} of {result.total}")


@app.command("list")
def list_cmd(
    reason: ReasonOpt = None,
    type_: TypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    task: TaskOpt = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="At most N messages.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """List dead letters in queue order, with the id `show` and `replay --id` accept."""
    filters = build_filters(
        reason=reason, type_=type_, since=since, until=until, task=task, limit=limit
    )
    settings = _settings()
    listing = run(dlq.list_dead_letters(settings, filters))
    if json_out:
        print_json(listing.model_dump(mode="json"))
        return
    table = Table(title=f"{_queue(settings)}: {listing.total} dead letters", title_justify="left")
    for column in ("id", "type", "reason", "failed at", "task", "replays", "error"):
        # the id is what `show` and `replay --id` take: never cut or wrapped
        table.add_column(column, no_wrap=column in ("id", "failed at"), overflow="ellipsis")
    for item in listing.items:
        table.add_row(
            escape(item.id),
            escape(item.event_type or "-"),
            escape(item.reason),
            _when(item.failed_at),
            escape(item.subject or "-"),
            str(item.replay_count),
            escape(_cut(item.error, 50)),
        )
    console.print(table)
    shown = len(listing.items)
    more = " (the limit: there may be more, use --limit)" if shown == limit else ""
    console.print(f"{shown} shown{more}")


def _render_detail(detail: dlq.DeadLetterDetail) -> None:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    origin = (
        f"{detail.exchange or '(default)'} / {detail.routing_key} (from {detail.origin_from})"
        if detail.routing_key is not None
        else "unknown"
    )
    rows = [
        ("id", detail.id),
        ("fingerprint", detail.fingerprint),
        ("message_id", detail.message_id or "-"),
        ("type", detail.event_type or "-"),
        ("task", detail.subject or "-"),
        ("reason", detail.reason),
        ("failed at", _when(detail.failed_at)),
        ("source queue", detail.source_queue or "-"),
        ("replays to", origin),
        ("replayed", str(detail.replay_count)),
        ("size", f"{detail.size} bytes"),
    ]
    for key, value in rows:
        facts.add_row(key, escape(value))
    console.print(Panel(facts, title="dead letter", title_align="left"))
    if detail.error_full:
        console.print(Panel(escape(detail.error_full), title="error", title_align="left"))
    _render_headers(detail)
    body: Any = detail.body
    if detail.body_is_json:
        text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
        console.print(Panel(Syntax(text, "json", word_wrap=True), title="body", title_align="left"))
    else:
        console.print(Panel(escape(str(body)), title="body (not JSON)", title_align="left"))


def _render_headers(detail: dlq.DeadLetterDetail) -> None:
    headers = Table(title="headers and properties", title_justify="left")
    headers.add_column("name")
    headers.add_column("value", overflow="fold")
    for name, value in {**detail.properties, **detail.headers}.items():
        if name == "x-death":
            continue
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        headers.add_row(escape(name), escape(_cut(shown, 200)))
    console.print(headers)
    if not detail.deaths:
        return
    deaths = Table(title="death history (x-death, newest first)", title_justify="left")
    for column in ("queue", "reason", "exchange", "routing keys", "count", "time"):
        deaths.add_column(column)
    for death in detail.deaths:
        deaths.add_row(
            escape(str(death.get("queue", "-"))),
            escape(str(death.get("reason", "-"))),
            escape(str(death.get("exchange", "-")) or "(default)"),
            escape(", ".join(str(k) for k in death.get("routing-keys", []))),
            str(death.get("count", "-")),
            escape(str(death.get("time", "-"))),
        )
    console.print(deaths)


async def _show(settings: Settings, ident: str) -> list[dlq.DeadLetterDetail] | None:
    try:
        return await dlq.show(settings, ident)
    except dlq.DeadLetterNotFound:
        return None


@app.command()
def show(
    ident: Annotated[
        str, typer.Argument(metavar="ID", help="CloudEvent id, message_id or fingerprint.")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Show one dead letter: headers, death history, body pretty-printed."""
    settings = _settings()
    details = run(_show(settings, ident))
    if details is None:
        fail(f"no dead letter with id {ident!r} in {_queue(settings)}", EXIT_NOT_FOUND)
    if json_out:
        print_json([d.model_dump(mode="json") for d in details])
        return
    for detail in details:
        _render_detail(detail)


# --------------------------------------------------------------------------- replay


class _Bar:
    """A rich progress bar on stderr fed by :func:`dlq.replay`'s progress callback."""

    def __init__(self, enabled: bool) -> None:
        self.last: dlq.ReplayResult | None = None
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("replayed {task.fields[replayed]}  failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("replaying", total=None, replayed=0, failed=0)
        self._started = False

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, result: dlq.ReplayResult) -> None:
        self.last = result
        if not self._started:
            if not result.total:
                return  # started lazily: an early error prints one line, not a bar
            self._progress.start()
            self._started = True
        self._progress.update(
            self._task,
            total=result.total,
            completed=result.scanned,
            replayed=result.replayed,
            failed=result.failed,
        )


async def _replay(
    settings: Settings,
    filters: dlq.Filters,
    bar: _Bar,
    *,
    dry_run: bool,
    rate: float | None,
    to_queue: str | None,
) -> tuple[dlq.ReplayResult | None, bool]:
    """Run the replay; SIGINT cancels it cleanly. Returns (result, interrupted by Ctrl-C)."""
    loop = asyncio.get_running_loop()
    work = asyncio.create_task(
        dlq.replay(settings, filters, dry_run=dry_run, rate=rate, to_queue=to_queue, progress=bar)
    )
    loop.add_signal_handler(signal.SIGINT, work.cancel)
    try:
        return await work, False
    except asyncio.CancelledError:
        if not work.cancelled():
            raise
        return bar.last, True
    finally:
        with suppress(Exception):
            loop.remove_signal_handler(signal.SIGINT)


def _print_plan(result: dlq.ReplayResult) -> None:
    table = Table(title="would replay", title_justify="left")
    for column in ("id", "type", "reason", "to exchange", "routing key"):
        table.add_column(column, overflow="fold")
    for move in result.planned:
        table.add_row(
            escape(move.id),
            escape(move.event_type or "-"),
            escape(move.reason),
            escape(move.exchange or "(default)"),
            escape(move.routing_key),
        )
    console.print(table)
    console.print(
        f"dry run: would replay {len(result.planned)}, skip {result.skipped}, "
        f"cannot replay {result.failed} (looked at {result.scanned} of {result.total}); "
        "nothing was moved"
    )


def _print_counts(result: dlq.ReplayResult, queue: str) -> None:
    console.print(
        f"replayed {result.replayed}, skipped {result.skipped}, failed {result.failed}"
        + (f", in doubt {result.in_doubt}" if result.in_doubt else "")
        + f" (looked at {result.scanned} of {result.total} in {queue}, {result.elapsed_s:.1f} s)"
    )
    if result.status == "interrupted":
        console.print(
            f"[yellow]interrupted:[/yellow] the {result.replayed} replayed are out of {queue}; "
            "the rest are still in it. Run the same command again to continue."
        )
    if result.in_doubt:
        console.print(
            f"{result.in_doubt} were published but could not be removed from {queue}: "
            "they are in both places (the ledger ignores the duplicate)."
        )
    for error in result.errors:
        console.print(f"  - {escape(error)}", highlight=False)
    if result.action_id is not None:
        console.print(f"recorded as operator action #{result.action_id}")


@app.command()
def replay(
    reason: ReasonOpt = None,
    type_: TypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    task: TaskOpt = None,
    ids: IdOpt = None,
    limit: LimitOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; move nothing.")
    ] = False,
    rate: Annotated[
        float | None, typer.Option("--rate", metavar="N", help="At most N messages per second.")
    ] = None,
    to_queue: Annotated[
        str | None,
        typer.Option(
            "--to-queue", metavar="QUEUE", help="Send to this queue instead of the origin."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Republish dead letters to where they came from, then remove them from the dead queue.

    Each message is removed only after the broker confirmed the republish. Messages that
    do not match the filters stay, in order. Ctrl-C stops cleanly; running the command
    again continues. Exit 1 if some could not be replayed, 130 if interrupted.
    """
    filters = build_filters(
        reason=reason, type_=type_, since=since, until=until, task=task, ids=ids, limit=limit
    )
    if rate is not None and rate <= 0:
        fail(f"--rate must be positive, got {rate:g}")
    settings = _settings()
    with _Bar(enabled=not json_out and not dry_run) as bar:
        result, interrupted = run(
            _replay(settings, filters, bar, dry_run=dry_run, rate=rate, to_queue=to_queue)
        )
    if result is None:
        err_console.print("interrupted before anything was looked at")
        raise typer.Exit(EXIT_INTERRUPTED)
    if json_out:
        print_json(result.model_dump(mode="json"))
    elif dry_run:
        _print_plan(result)
    else:
        _print_counts(result, _queue(settings))
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.status == "interrupted":
        raise typer.Exit(EXIT_UNAVAILABLE)
    if result.failed or result.in_doubt:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- export, import


@app.command()
def export(
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="JSONL file to write (must not exist)."),
    ] = None,
    reason: ReasonOpt = None,
    type_: TypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    task: TaskOpt = None,
    ids: IdOpt = None,
    limit: LimitOpt = None,
    purge: Annotated[
        bool,
        typer.Option("--purge", help="Remove the exported messages once the file is on disk."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write dead letters (byte-exact body, headers, properties) to a JSONL file.

    The file is fsynced before anything is removed; `--purge` then removes exactly the
    exported messages. `taskledger dlq import FILE` puts them back.
    """
    if out is None:
        fail("--out FILE is required")
    filters = build_filters(
        reason=reason, type_=type_, since=since, until=until, task=task, ids=ids, limit=limit
    )
    settings = _settings()
    result = run(dlq.export(settings, filters, out, purge=purge))
    if json_out:
        print_json(result.model_dump(mode="json"))
    else:
        purged = f", removed {result.purged} from {_queue(settings)}" if purge else ""
        console.print(f"exported {result.exported} dead letters to {out}{purged}")
        for error in result.errors:
            console.print(f"  - {escape(error)}", highlight=False)
    if result.status == "interrupted":
        raise typer.Exit(EXIT_UNAVAILABLE)


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A file `dlq export` wrote.")],
    json_out: JsonOpt = False,
) -> None:
    """Put the messages of an export file back into the dead queue, exactly as they were."""
    settings = _settings()
    result = run(dlq.import_file(settings, file))
    if json_out:
        print_json(result.model_dump(mode="json"))
    else:
        console.print(f"imported {result.imported} of {result.read} into {_queue(settings)}")
        for error in result.errors:
            console.print(f"  - {escape(error)}", highlight=False)
    if result.status == "interrupted":
        raise typer.Exit(EXIT_UNAVAILABLE)
