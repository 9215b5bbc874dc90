"""``taskledger audit ...``: the audit queries on the command line (tables or ``--json``).

Same filters and same query layer (:mod:`consumer.queries`) as the HTTP API.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

import asyncpg
import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from consumer import queries
from consumer.cli_common import console, fail, load_settings, parse_time, print_json, run
from consumer.db import create_pool
from consumer.exceptions import DatabaseUnavailable, InvalidArgument
from consumer.queries import TaskFilter
from consumer.settings import Settings, redact_url
from contracts import AgentType, ErrorCause, TaskStatus

__all__ = ["app", "build_filter", "open_pool", "parse_duration", "when"]

app = typer.Typer(
    help=(
        "Query the audit record: what changed, what failed, what a task did step by step, "
        "what is stuck. Tables by default, --json for machines."
    ),
    no_args_is_help=True,
)

E = TypeVar("E", TaskStatus, AgentType, ErrorCause)

# --- shared options ------------------------------------------------------------------------

StatusOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        metavar="STATUS",
        show_default=False,
        help="Task status: pending, approved, executing, completed, failed, rejected. "
        "Repeat for several (any of them).",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        metavar="TIME",
        help="Created at or after: RFC 3339 (2026-11-01T10:00:00Z) or relative (7d, 12h, 30m).",
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="Created before: RFC 3339 or relative (1d = a day ago)."),
]
ServiceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--service",
        metavar="SERVICE",
        show_default=False,
        help="Touched this service. Repeat for several: any of them (all: --all-services).",
    ),
]
AllServicesOpt = Annotated[
    bool, typer.Option("--all-services", help="With several --service: touched all of them.")
]
AgentTypeOpt = Annotated[
    str | None,
    typer.Option(
        metavar="TYPE", help="Agent type that ran it: orchestrator, infra, desktop, code, research."
    ),
]
CauseOpt = Annotated[
    str | None,
    typer.Option(
        "--cause", metavar="CAUSE", help="Error cause: resource, application, dependency, unknown."
    ),
]
IntentOpt = Annotated[
    str | None,
    typer.Option(
        metavar="VERB_SERVICE",
        help="e.g. deploy_kuma, restart_dns: the request, plan or steps carry the verb (or a "
        "synonym: install, rollout; reboot, bounce; ...) and the task touched the service.",
    ),
]
LimitOpt = Annotated[
    int, typer.Option(min=1, max=queries.MAX_PAGE, metavar="N", help="Rows per page (1..500).")
]
CursorOpt = Annotated[
    str | None,
    typer.Option(metavar="CURSOR", help="Continue after a previous page (its printed cursor)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _enum(kind: type[E], value: str, option: str) -> E:
    try:
        return kind(value.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        fail(f"{option} {value!r} is not one of: {choices}")


def _time(value: str | None, option: str) -> datetime | None:
    try:
        return parse_time(value, name=option)
    except InvalidArgument as exc:
        fail(str(exc))
    except (ValueError, OverflowError):
        fail(f"{option} {value!r} is out of range")


def build_filter(
    *,
    status: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    service: list[str] | None = None,
    all_services: bool = False,
    agent_type: str | None = None,
    cause: str | None = None,
    intent: str | None = None,
    limit: int = queries.DEFAULT_PAGE,
    cursor: str | None = None,
) -> TaskFilter:
    """Build the :class:`TaskFilter` of the command-line options; bad values exit 2."""
    try:
        return TaskFilter(
            statuses=[_enum(TaskStatus, s, "--status") for s in status or []],
            since=_time(since, "--since"),
            until=_time(until, "--until"),
            services=service or [],
            service_mode="all" if all_services else "any",
            agent_type=_enum(AgentType, agent_type, "--agent-type") if agent_type else None,
            error_cause=_enum(ErrorCause, cause, "--cause") if cause else None,
            intent=intent,
            limit=limit,
            cursor=cursor,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "filter"
        option = _OPTION_OF.get(field, "--" + field.replace("_", "-"))
        fail(f"{option}: {first['msg'].removeprefix('Value error, ')}")


_OPTION_OF = {"services": "--service", "statuses": "--status", "error_cause": "--cause"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str, option: str) -> float:
    """Seconds in ``value`` (``90``, ``90s``, ``15m``, ``2h``, ``1d``); bad values exit 2."""
    match = _DURATION.match(value)
    if not match or float(match[1]) <= 0:
        fail(f"{option} {value!r} is not a positive duration like 600, 90s, 15m, 2h or 1d")
    return float(match[1]) * _SECONDS[match[2]]


@asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A small pool for one command; an unreachable database says where it looked."""
    try:
        pool = await create_pool(settings.dsn, min_size=1, max_size=2)
    except DatabaseUnavailable as exc:
        where = redact_url(settings.dsn)
        raise DatabaseUnavailable(f"cannot reach PostgreSQL at {where}: {exc}") from exc
    try:
        yield pool
    finally:
        await pool.close()


# --- rendering -----------------------------------------------------------------------------

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "rejected": "magenta",
    "executing": "cyan",
    "approved": "blue",
    "pending": "yellow",
}


def when(value: datetime | None) -> str:
    """A time for tables: UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _cut(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _status(value: str) -> str:
    style = _STATUS_STYLE.get(value, "white")
    return f"[{style}]{value}[/{style}]"


def _emit(result: BaseModel | list[Any], as_json: bool) -> bool:
    """Print ``result`` as JSON when asked; return True if it was printed."""
    if not as_json:
        return False
    if isinstance(result, BaseModel):
        print_json(result.model_dump(mode="json"))
    else:
        print_json([r.model_dump(mode="json") for r in result])
    return True


def _tasks_table(items: list[queries.TaskSummary], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("created")
    table.add_column("task", no_wrap=True)
    table.add_column("status")
    table.add_column("agent")
    table.add_column("services")
    table.add_column("cause")
    table.add_column("request")
    for t in items:
        table.add_row(
            when(t.created_at),
            str(t.task_id),
            _status(t.status.value),
            t.agent_type or "-",
            ", ".join(t.services_touched) or "-",
            t.error_cause or "-",
            _cut(t.request_text),
        )
    return table


def _print_page(items: list[queries.TaskSummary], next_cursor: str | None, title: str) -> None:
    if not items:
        console.print("no matching tasks")
        return
    console.print(_tasks_table(items, title))
    if next_cursor:
        console.print(f"more: add --cursor {next_cursor}", highlight=False, soft_wrap=True)


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column("tasks", justify="right")
    for key, n in counts.items():
        table.add_row(key, str(n))
    return table


# --- commands ------------------------------------------------------------------------------


@app.command()
def tasks(
    status: StatusOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    service: ServiceOpt = None,
    all_services: AllServicesOpt = False,
    agent_type: AgentTypeOpt = None,
    cause: CauseOpt = None,
    intent: IntentOpt = None,
    limit: LimitOpt = queries.DEFAULT_PAGE,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tasks matching the filters, newest first (e.g. --service kuma --since 7d)."""
    f = build_filter(
        status=status,
        since=since,
        until=until,
        service=service,
        all_services=all_services,
        agent_type=agent_type,
        cause=cause,
        intent=intent,
        limit=limit,
        cursor=cursor,
    )
    settings = load_settings()

    async def go() -> queries.Page:
        async with open_pool(settings) as pool:
            return await queries.list_tasks(pool, f)

    page = run(go())
    if not _emit(page, as_json):
        _print_page(page.items, page.next_cursor, "tasks")


@app.command()
def failures(
    since: SinceOpt = None,
    until: UntilOpt = None,
    service: ServiceOpt = None,
    all_services: AllServicesOpt = False,
    agent_type: AgentTypeOpt = None,
    cause: CauseOpt = None,
    intent: IntentOpt = None,
    limit: LimitOpt = queries.DEFAULT_PAGE,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Failed tasks with counts by error cause (resource, application, ...) and error type."""
    f = build_filter(
        since=since,
        until=until,
        service=service,
        all_services=all_services,
        agent_type=agent_type,
        cause=cause,
        intent=intent,
        limit=limit,
        cursor=cursor,
    )
    settings = load_settings()

    async def go() -> queries.FailureReport:
        async with open_pool(settings) as pool:
            return await queries.failures(pool, f)

    report = run(go())
    if _emit(report, as_json):
        return
    console.print(f"{report.total} failed task(s)")
    if report.total:
        console.print(_counts_table("by cause", report.by_cause))
        console.print(_counts_table("by error type", report.by_type))
    _print_page(report.items, report.next_cursor, "failed tasks")


@app.command("by-service")
def by_service(
    service_name: Annotated[str, typer.Argument(metavar="SERVICE", help="The service, e.g. kuma.")],
    status: StatusOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    agent_type: AgentTypeOpt = None,
    cause: CauseOpt = None,
    intent: IntentOpt = None,
    limit: LimitOpt = queries.DEFAULT_PAGE,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tasks that touched SERVICE, newest first ("what changed kuma last week": --since 7d)."""
    f = build_filter(
        status=status,
        since=since,
        until=until,
        agent_type=agent_type,
        cause=cause,
        intent=intent,
        limit=limit,
        cursor=cursor,
    )
    settings = load_settings()

    async def go() -> queries.Page:
        async with open_pool(settings) as pool:
            return await queries.by_service(pool, service_name, f)

    page = run(go())
    if not _emit(page, as_json):
        _print_page(page.items, page.next_cursor, f"tasks that touched {service_name}")


@app.command()
def timeline(
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's UUID.")],
    as_json: JsonOpt = False,
) -> None:
    """What task TASK_ID did, step by step: ledger events, steps and pause history by time."""
    try:
        uid = UUID(task_id)
    except ValueError:
        fail(f"TASK_ID {task_id!r} is not a UUID")
    settings = load_settings()

    async def go() -> queries.TaskDetail:
        async with open_pool(settings) as pool:
            return await queries.task_detail(pool, uid)

    detail = run(go())
    if _emit(detail, as_json):
        return
    t = detail.task
    console.print(
        f"[bold]{t.task_id}[/bold]  {_status(t.status.value)}  {_cut(t.request_text, 100)}"
    )
    services = ", ".join(t.services_touched) or "-"
    console.print(
        f"agent {t.agent_type or '-'} {t.agent_id or ''}  services {services}"
        f"  cost ${t.cost_usd or 0:.4f}",
        highlight=False,
    )
    if t.error_cause or t.error_message:
        console.print(
            f"[red]{t.error_cause or '?'} / {t.error_type or '?'}:[/red] {t.error_message}"
        )
    if detail.waiting:
        w = detail.waiting
        console.print(f"waiting in the pause queue since {when(w.paused_at)}: {w.reason}")
    table = Table(title="timeline", title_justify="left")
    table.add_column("time")
    table.add_column("kind")
    table.add_column("what")
    table.add_column("detail")
    for e in detail.timeline:
        extra = "-"
        if e.step is not None:
            extra = _cut(e.step.output_summary, 50)
            if e.step.duration_ms is not None:
                extra += f" ({e.step.duration_ms} ms)"
        elif e.event is not None:
            extra = str(e.event.event_id)
        elif e.pause is not None and e.pause.agent_id:
            extra = f"agent {e.pause.agent_id}"
        table.add_row(when(e.at), e.kind, e.title, extra)
    console.print(table)


@app.command()
def orphans(
    older_than: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Unapplied longer than this (600, 10m, 2h). Default: TASKLEDGER_ORPHAN_AFTER_S.",
        ),
    ] = None,
    limit: LimitOpt = queries.MAX_PAGE,
    as_json: JsonOpt = False,
) -> None:
    """Task events recorded but never applied (stuck past the orphan limit).

    Their task was never requested, or a terminal event waits for requested/approved/started.
    """
    settings = load_settings()
    seconds = parse_duration(older_than, "--older-than") if older_than else settings.orphan_after_s

    async def go() -> list[queries.OrphanEvent]:
        async with open_pool(settings) as pool:
            return await queries.orphans(pool, seconds, limit=limit)

    found = run(go())
    if _emit(found, as_json):
        return
    if not found:
        console.print(f"no orphan events older than {seconds:g} s")
        return
    table = Table(title=f"orphan events (older than {seconds:g} s)", title_justify="left")
    for name in ("received", "task", "event", "source", "kind", "missing"):
        table.add_column(name)
    for o in found:
        table.add_row(
            when(o.received_at),
            str(o.task_id),
            o.event_type,
            o.source,
            o.kind,
            ", ".join(o.missing),
        )
    console.print(table)


@app.command()
def stale(
    after: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Silent for longer than this (900, 15m, 1h). Default: TASKLEDGER_STALE_AFTER_S.",
        ),
    ] = None,
    limit: LimitOpt = queries.MAX_PAGE,
    as_json: JsonOpt = False,
) -> None:
    """Tasks executing with no event for longer than the stale limit, most silent first."""
    settings = load_settings()
    seconds = parse_duration(after, "--after") if after else settings.stale_after_s

    async def go() -> list[queries.StaleTask]:
        async with open_pool(settings) as pool:
            return await queries.stale(pool, seconds, limit=limit)

    found = run(go())
    if _emit(found, as_json):
        return
    if not found:
        console.print(f"no executing task silent for more than {seconds:g} s")
        return
    table = Table(title=f"stale tasks (silent > {seconds:g} s)", title_justify="left")
    for name in ("silent since", "task", "agent", "started", "request"):
        table.add_column(name)
    for s in found:
        table.add_row(
            when(s.silent_since),
            str(s.task_id),
            f"{s.agent_type or '-'} {s.agent_id or ''}".strip(),
            when(s.started_at),
            _cut(s.request_text, 50),
        )
    console.print(table)


@app.command()
def summary(
    status: StatusOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    service: ServiceOpt = None,
    all_services: AllServicesOpt = False,
    agent_type: AgentTypeOpt = None,
    cause: CauseOpt = None,
    intent: IntentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts over the matching tasks: by status, failures by cause, busiest services, cost."""
    f = build_filter(
        status=status,
        since=since,
        until=until,
        service=service,
        all_services=all_services,
        agent_type=agent_type,
        cause=cause,
        intent=intent,
    )
    settings = load_settings()

    async def go() -> queries.Summary:
        async with open_pool(settings) as pool:
            return await queries.summary(pool, f)

    result = run(go())
    if _emit(result, as_json):
        return
    console.print(f"{result.total} task(s), cost ${result.cost_usd:.4f}", highlight=False)
    console.print(_counts_table("by status", result.by_status))
    if result.failures_by_cause:
        console.print(_counts_table("failures by cause", result.failures_by_cause))
    if result.busiest_services:
        console.print(
            _counts_table("busiest services", {b.service: b.tasks for b in result.busiest_services})
        )
