"""``taskledger audit ...``: the audit queries on the command line (tables or ``--json``).

Same filters and same query layer (:mod:`consumer.queries.reads`) as the HTTP API; the
filter options are declared once in :mod:`consumer.cli.options`, the tables drawn with
:mod:`consumer.cli.render`.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer
from rich.markup import escape
from rich.table import Table

from consumer.cli.common import console, fail, load_settings, open_pool, run, usage_errors
from consumer.cli.options import JsonOpt, LimitOpt, filter_options
from consumer.cli.render import counts_table, cut, emit, print_page, status, when
from consumer.queries import reads
from consumer.queries.filters import MAX_PAGE, TaskFilter
from consumer.queries.models import (
    FailureReport,
    FlushCount,
    OrphanEvent,
    Page,
    StaleTask,
    Summary,
    TaskDetail,
)
from consumer.queries.times import parse_duration, parse_time

__all__ = ["app"]

app = typer.Typer(
    help=(
        "Query the audit record: what changed, what failed, what a task did step by step, "
        "what is stuck. Tables by default, --json for machines."
    ),
    no_args_is_help=True,
)


def _seconds(value: str | None, option: str, default: float) -> float:
    """The duration option ``value`` in seconds (``default`` when not given); bad: exit 2."""
    if not value:
        return default
    with usage_errors():
        return parse_duration(value, name=option)


@app.command()
@filter_options()
def tasks(f: TaskFilter, as_json: JsonOpt = False) -> None:
    """List tasks matching the filters, newest first (e.g. --service kuma --since 7d)."""
    settings = load_settings()

    async def go() -> Page:
        async with open_pool(settings) as pool:
            return await reads.list_tasks(pool, f)

    page = run(go())
    if not emit(page, as_json):
        print_page(page.items, page.next_cursor, "tasks")


@app.command()
@filter_options(without=["status"])
def failures(f: TaskFilter, as_json: JsonOpt = False) -> None:
    """Failed tasks with counts by error cause (resource, application, ...) and error type."""
    settings = load_settings()

    async def go() -> FailureReport:
        async with open_pool(settings) as pool:
            return await reads.failures(pool, f)

    report = run(go())
    if emit(report, as_json):
        return
    console.print(f"{report.total} failed task(s)")
    if report.total:
        console.print(counts_table("by cause", report.by_cause))
        console.print(counts_table("by error type", report.by_type))
    print_page(report.items, report.next_cursor, "failed tasks")


@app.command("by-service")
@filter_options(without=["service", "all_services"])
def by_service(
    service_name: Annotated[str, typer.Argument(metavar="SERVICE", help="The service, e.g. kuma.")],
    f: TaskFilter,
    as_json: JsonOpt = False,
) -> None:
    """Tasks that touched SERVICE, newest first ("what changed kuma last week": --since 7d)."""
    settings = load_settings()

    async def go() -> Page:
        async with open_pool(settings) as pool:
            return await reads.by_service(pool, service_name, f)

    page = run(go())
    if not emit(page, as_json):
        print_page(page.items, page.next_cursor, f"tasks that touched {service_name}")


def _print_suggestions(detail: TaskDetail) -> None:
    """The task's suggestions (added after the fact) and what became of each."""
    if detail.task is None or not detail.task.suggestions:
        return
    table = Table(title="suggestions", title_justify="left")
    for name in ("time", "state", "suggestion", "reason", "from", "id"):
        table.add_column(name)
    for s in detail.task.suggestions:
        state = s.status if s.status == "open" else f"{s.status} by {s.resolved_by}"
        table.add_row(
            when(s.created_at),
            escape(state),
            escape(cut(s.suggestion, 60)),
            escape(cut(s.reason, 40)),
            escape(s.source),
            str(s.suggestion_id),
        )
    console.print(table)


def _print_failure(detail: TaskDetail) -> None:
    """What was captured when the task failed: step, agent, resources, plan, stack trace."""
    failure = next((e.failure for e in detail.timeline if e.failure is not None), None)
    if failure is None:
        return
    console.print(
        f"failed at step {failure.failed_step or '-'} ({failure.failed_action or '-'})"
        f" on {failure.agent_type or '-'} agent {failure.agent_id or '-'}",
        markup=False,
    )
    if failure.resource_state:
        state = ", ".join(f"{k}={v}" for k, v in failure.resource_state.items())
        console.print(f"resource state at failure: {cut(state, 200)}", markup=False)
    if failure.plan and failure.plan.get("steps"):
        steps = " / ".join(map(str, failure.plan["steps"]))
        console.print(f"plan: {cut(steps, 200)}", markup=False)
    if failure.stack_trace:
        console.print("stack trace:", highlight=False)
        for line in failure.stack_trace.splitlines()[-12:]:
            console.print(f"  {cut(line, 200)}", highlight=False, markup=False)


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

    async def go() -> TaskDetail:
        async with open_pool(settings) as pool:
            return await reads.task_detail(pool, uid)

    detail = run(go())
    if emit(detail, as_json):
        return
    t = detail.task
    if t is None:
        console.print(f"[bold]{uid}[/bold]  dispatch requested, no task.requested recorded yet")
        _print_table(detail)
        return
    console.print(f"[bold]{t.task_id}[/bold]  {status(t.status.value)}  {cut(t.request_text, 100)}")
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
    _print_failure(detail)
    _print_suggestions(detail)
    if detail.waiting:
        w = detail.waiting
        console.print(f"waiting in the pause queue since {when(w.paused_at)}: {w.reason}")
    _print_table(detail)


def _print_table(detail: TaskDetail) -> None:
    """The timeline of ``detail`` as a table."""
    table = Table(title="timeline", title_justify="left")
    for name in ("time", "kind", "what", "detail"):
        table.add_column(name)
    for e in detail.timeline:
        extra = "-"
        if e.step is not None:
            extra = cut(e.step.output_summary, 50)
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
    limit: LimitOpt = MAX_PAGE,
    as_json: JsonOpt = False,
) -> None:
    """Task events recorded but never applied (stuck past the orphan limit).

    Their task was never requested, or a terminal event waits for requested/approved/started.
    """
    settings = load_settings()
    seconds = _seconds(older_than, "--older-than", settings.orphan_after_s)

    async def go() -> list[OrphanEvent]:
        async with open_pool(settings) as pool:
            return await reads.orphans(pool, seconds, limit=limit)

    found = run(go())
    if emit(found, as_json):
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
    limit: LimitOpt = MAX_PAGE,
    as_json: JsonOpt = False,
) -> None:
    """Tasks executing with no event for longer than the stale limit, most silent first."""
    settings = load_settings()
    seconds = _seconds(after, "--after", settings.stale_after_s)

    async def go() -> list[StaleTask]:
        async with open_pool(settings) as pool:
            return await reads.stale(pool, seconds, limit=limit)

    found = run(go())
    if emit(found, as_json):
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
            cut(s.request_text, 50),
        )
    console.print(table)


@app.command()
@filter_options(without=["limit", "cursor"])
def summary(f: TaskFilter, as_json: JsonOpt = False) -> None:
    """Counts over the matching tasks: by status, failures by cause, busiest services, cost."""
    settings = load_settings()

    async def go() -> Summary:
        async with open_pool(settings) as pool:
            return await reads.summary(pool, f)

    result = run(go())
    if emit(result, as_json):
        return
    console.print(f"{result.total} task(s), cost ${result.cost_usd:.4f}", highlight=False)
    console.print(counts_table("by status", result.by_status))
    if result.failures_by_cause:
        console.print(counts_table("failures by cause", result.failures_by_cause))
    if result.busiest_services:
        console.print(
            counts_table("busiest services", {b.service: b.tasks for b in result.busiest_services})
        )


@app.command()
def flushes(
    since: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Since: RFC 3339 or relative (7d, 12h, 30m)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write batches by why they were flushed: count (full), timeout (linger), end_of_source."""
    with usage_errors():
        start = parse_time(since, name="--since")
    settings = load_settings()

    async def go() -> list[FlushCount]:
        async with open_pool(settings) as pool:
            return await reads.flushes(pool, start)

    result = run(go())
    if emit(result, as_json):
        return
    table = Table(title="write batches by flush trigger", title_justify="left")
    for name in ("trigger", "batches", "events", "latest"):
        table.add_column(name)
    for r in result:
        table.add_row(r.trigger, str(r.batches), str(r.events), when(r.latest))
    console.print(table)
