"""``taskledger dlq summary|list|show|replay|export|import``: the dead letters on the command line.

Every command reads ``<prefix>.dead`` without taking anything it does not mean to take
(see :mod:`consumer.dlq.scan` for how, and why order is kept). ``replay``, ``export`` (with or
without ``--purge``) and ``import`` are recorded as operator actions in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from consumer.broker import Names
from consumer.cli.common import (
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    console,
    err_console,
    fail,
    load_settings,
    print_json,
    run,
)
from consumer.cli.dlq_render import (
    BODY_PREVIEW,
    ReplayBar,
    print_counts,
    print_detail,
    print_listing,
    print_plan,
    print_summary,
)
from consumer.core import logs
from consumer.core.errors import InvalidArgument
from consumer.core.settings import Settings
from consumer.dlq import archive, replayer, views
from consumer.dlq.letters import Filters
from consumer.dlq.replayer import ReplayResult
from consumer.dlq.views import DeadLetterDetail, DeadLetterNotFound
from consumer.queries.times import parse_time

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
        help="Message key (as `list` shows), CloudEvent id, message_id or fingerprint; repeatable.",
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
) -> Filters:
    """Turn the command-line filters into :class:`Filters`; exits 2 with one line if bad."""
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
    return Filters(
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
    result = run(views.summary(settings, limit=limit))
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    print_summary(result, _queue(settings))


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
    """List dead letters in queue order, with the key `show` and `replay --id` accept."""
    filters = build_filters(
        reason=reason, type_=type_, since=since, until=until, task=task, limit=limit
    )
    settings = _settings()
    listing = run(views.list_dead_letters(settings, filters))
    if json_out:
        print_json(listing.model_dump(mode="json"))
        return
    print_listing(listing, _queue(settings), limit)


async def _show(settings: Settings, ident: str) -> list[DeadLetterDetail] | None:
    try:
        return await views.show(settings, ident)
    except DeadLetterNotFound:
        return None


@app.command()
def show(
    ident: Annotated[
        str,
        typer.Argument(
            metavar="KEY",
            help="Message key (as `list` shows), CloudEvent id, message_id or fingerprint.",
        ),
    ],
    full: Annotated[
        bool,
        typer.Option(
            "--full", help=f"Print the whole body (default: the first {BODY_PREVIEW:,} characters)."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show one dead letter: headers, death history, body pretty-printed.

    Every message with that key or id is shown (several can share an event id).
    """
    settings = _settings()
    details = run(_show(settings, ident))
    if details is None:
        fail(f"no dead letter with id {ident!r} in {_queue(settings)}", EXIT_NOT_FOUND)
    if json_out:
        print_json([d.model_dump(mode="json") for d in details])
        return
    for detail in details:
        print_detail(detail, full=full)


# --------------------------------------------------------------------------- replay


async def _replay(
    settings: Settings,
    filters: Filters,
    bar: ReplayBar,
    *,
    dry_run: bool,
    rate: float | None,
    to_queue: str | None,
) -> tuple[ReplayResult | None, bool]:
    """Run the replay; SIGINT cancels it cleanly. Returns (result, interrupted by Ctrl-C)."""
    loop = asyncio.get_running_loop()
    work = asyncio.create_task(
        replayer.replay(
            settings, filters, dry_run=dry_run, rate=rate, to_queue=to_queue, progress=bar
        )
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
    with ReplayBar(enabled=not json_out and not dry_run) as bar:
        result, interrupted = run(
            _replay(settings, filters, bar, dry_run=dry_run, rate=rate, to_queue=to_queue)
        )
    if result is None:
        err_console.print("interrupted before anything was looked at")
        raise typer.Exit(EXIT_INTERRUPTED)
    if json_out:
        print_json(result.model_dump(mode="json"))
    elif dry_run:
        print_plan(result)
    else:
        print_counts(result, _queue(settings))
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
    result = run(archive.export(settings, filters, out, purge=purge))
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
    result = run(archive.import_file(settings, file))
    if json_out:
        print_json(result.model_dump(mode="json"))
    else:
        console.print(f"imported {result.imported} of {result.read} into {_queue(settings)}")
        for error in result.errors:
            console.print(f"  - {escape(error)}", highlight=False)
    if result.status == "interrupted":
        raise typer.Exit(EXIT_UNAVAILABLE)
