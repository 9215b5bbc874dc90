"""``taskledger audit dispatches``: what happened to each dispatch request.

Registered on the ``audit`` group by :func:`register`; the query is
:func:`consumer.queries.dispatches.dispatches`, the same as ``GET /api/v1/dispatches``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from consumer.cli.common import console, load_settings, open_pool, run, usage_errors
from consumer.cli.options import JsonOpt, LimitOpt
from consumer.cli.render import emit, when
from consumer.queries.dispatches import check_agent, dispatches
from consumer.queries.filters import DEFAULT_PAGE, decode_cursor
from consumer.queries.models import DispatchPage
from consumer.queries.times import parse_time

__all__ = ["DispatchStatus", "register"]


class DispatchStatus(StrEnum):
    """What became of a dispatch request."""

    waiting = "waiting"
    assigned = "assigned"
    cancelled = "cancelled"
    requested = "requested"


def dispatches_cmd(
    status: Annotated[
        DispatchStatus | None,
        typer.Option(help="waiting (paused), assigned (to an agent), cancelled, requested."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(metavar="AGENT_ID", help="Assigned to this agent.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Requested since: RFC 3339 or relative (7d, 12h)."),
    ] = None,
    limit: LimitOpt = DEFAULT_PAGE,
    cursor: Annotated[
        str | None,
        typer.Option(metavar="CURSOR", help="Continue after a previous page (its printed cursor)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Dispatch requests, newest first: waiting (and why), assigned (agent, trigger), cancelled."""
    with usage_errors():
        start = parse_time(since, name="--since")
        who = check_agent(agent)
        if cursor:
            decode_cursor(cursor)
    settings = load_settings()

    async def go() -> DispatchPage:
        async with open_pool(settings) as pool:
            return await dispatches(
                pool,
                status=status.value if status else None,
                agent=who,
                since=start,
                limit=limit,
                cursor=cursor,
            )

    page = run(go())
    if emit(page, as_json):
        return
    if not page.items:
        console.print("no matching dispatch requests")
        return
    table = Table(title="dispatch requests", title_justify="left")
    for name in ("requested", "task", "type", "prio", "status", "reason", "trigger", "agent"):
        table.add_column(name)
    for d in page.items:
        table.add_row(
            when(d.requested_at),
            str(d.task_id),
            escape(d.agent_type or "-"),
            str(d.priority),
            d.status,
            escape(d.reason or "-"),
            escape(d.trigger or "-"),
            escape(d.agent_id or "-"),
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: add --cursor {page.next_cursor}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``dispatches`` to the ``audit`` command group ``app``."""
    app.command("dispatches")(dispatches_cmd)
