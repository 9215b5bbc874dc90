"""Console pages that only read the database: overview, tasks, one task, failures, actions.

They call the query layer the API and the CLI use (:mod:`consumer.queries.reads`); the
task search takes the API's filters (service, status, intent, since/until, agent type,
error cause) from a GET form and pages with the API's keyset cursor.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.datastructures import QueryParams

from consumer.core.errors import InvalidArgument
from consumer.queries import reads
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE, MAX_TEXT, TaskFilter
from consumer.queries.times import parse_time
from consumer.ui import data
from consumer.ui.auth import require_read
from consumer.ui.render import ConsoleRoute, page
from consumer.ui.routes_dlq import dlq_reasons
from contracts import AgentType, ErrorCause, TaskStatus

__all__ = ["WINDOWS", "router", "task_filter"]

router = APIRouter(route_class=ConsoleRoute, dependencies=[Depends(require_read)])

#: The failure page's windows (query parameter ``window``).
WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "all": timedelta(0),
}
_RELATIVE = re.compile(r"[1-9][0-9]{0,4}[smhdw]")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,400}")
FILTER_FIELDS = ("service", "status", "intent", "since", "until", "agent_type", "error_cause")


def _pool(request: Request) -> Any:
    return request.app.state.pool


def _one(params: QueryParams, name: str) -> str | None:
    """The last non-empty value of ``name`` (a GET form sends empty fields as ``""``)."""
    values = [v.strip() for v in params.getlist(name) if v.strip()]
    return values[-1] if values else None


def _enum(kind: Any, value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise InvalidArgument(f"{name} {value[:40]!r} is not one of {allowed}") from None


def _limit(params: QueryParams) -> int:
    raw = _one(params, "limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidArgument(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def task_filter(params: QueryParams) -> TaskFilter:
    """The task filter of a console query string (the API's filters; empty fields unset).

    Raises :class:`InvalidArgument` (the page answers 400) for a value the API refuses.
    """
    services = [v.strip() for v in params.getlist("service") if v.strip()]
    for service in services:
        if len(service) > MAX_TEXT or "\x00" in service:
            raise InvalidArgument(f"service names are 1..{MAX_TEXT} characters, without NUL")
    intent = _one(params, "intent")
    if intent is not None and len(intent) > 200:
        raise InvalidArgument("intent is at most 200 characters (verb_service: deploy_kuma)")
    cursor = _one(params, "cursor")
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise InvalidArgument("cursor is not one this console issued")
    statuses = [
        _enum(TaskStatus, v.strip(), "status") for v in params.getlist("status") if v.strip()
    ]
    try:
        return TaskFilter(
            statuses=statuses,
            since=parse_time(_one(params, "since"), name="since"),
            until=parse_time(_one(params, "until"), name="until"),
            services=services,
            agent_type=_enum(AgentType, _one(params, "agent_type"), "agent_type"),
            error_cause=_enum(ErrorCause, _one(params, "error_cause"), "error_cause"),
            intent=intent,
            limit=_limit(params),
            cursor=cursor,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "filter"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidArgument(f"{where}: {message}") from None


@router.get("/ui/", response_class=HTMLResponse, include_in_schema=False)
async def overview(request: Request) -> HTMLResponse:
    """Health, throughput, queue depths, tasks by status, pause queue, chain head."""
    settings = request.app.state.settings
    view, (reasons, note) = await asyncio.gather(
        data.overview(_pool(request), settings), dlq_reasons(request)
    )
    return page(
        request,
        "overview.html",
        title="Overview",
        view=view,
        dlq_reasons=reasons,
        dlq_note=note,
        window_s=int(data.RATE_WINDOW_S),
        statuses=[s.value for s in TaskStatus],
    )


@router.get("/ui/tasks", response_class=HTMLResponse, include_in_schema=False)
async def tasks(request: Request) -> HTMLResponse:
    """Search tasks with the API's combined filters, newest first, keyset pages."""
    f = task_filter(request.query_params)
    result = await reads.list_tasks(_pool(request), f)
    current = {k: request.query_params.getlist(k) for k in FILTER_FIELDS}
    current["limit"] = [str(f.limit)] if f.limit != DEFAULT_PAGE else []
    return page(
        request,
        "tasks.html",
        title="Tasks",
        result=result,
        current=current,
        form={k: (_one(request.query_params, k) or "") for k in FILTER_FIELDS},
        statuses=[s.value for s in TaskStatus],
        agent_types=[a.value for a in AgentType],
        causes=[c.value for c in ErrorCause],
        first_page=f.cursor is None,
    )


@router.get("/ui/tasks/{task_id}", response_class=HTMLResponse, include_in_schema=False)
async def task(request: Request, task_id: UUID) -> HTMLResponse:
    """One task's timeline, outcome, services, resources, suggestions; its dead letters."""
    detail = await reads.task_detail(_pool(request), task_id)
    durations = [
        e.step.duration_ms for e in detail.timeline if e.step is not None and e.step.duration_ms
    ]
    return page(
        request,
        "task.html",
        title=f"Task {task_id}",
        task_id=task_id,
        detail=detail,
        steps_ms=sum(durations),
    )


@router.get("/ui/failures", response_class=HTMLResponse, include_in_schema=False)
async def failures(request: Request) -> HTMLResponse:
    """Failed tasks in a window by cause, error type and service; rows link to the tasks."""
    window = _one(request.query_params, "window") or "24h"
    if window in WINDOWS:
        since = datetime.now(UTC) - WINDOWS[window] if WINDOWS[window] else None
    elif _RELATIVE.fullmatch(window):
        since = parse_time(window, name="window")
    else:
        raise InvalidArgument(
            f"window must be one of {', '.join(WINDOWS)} or a duration like 12h or 3d"
        )
    f = TaskFilter(since=since, limit=20)
    pool = _pool(request)
    report = await reads.failures(pool, f)
    services, types = await data.failure_breakdown(pool, f)
    since_param = window if window != "all" else None
    return page(
        request,
        "failures.html",
        title="Failures",
        window=window,
        windows=list(WINDOWS) if window in WINDOWS else [*WINDOWS, window],
        report=report,
        services=services,
        types=types,
        since=since_param,
    )


@router.get("/ui/actions", response_class=HTMLResponse, include_in_schema=False)
async def actions(request: Request) -> HTMLResponse:
    """The operator-actions log, newest first, keyset pages."""
    cursor = _one(request.query_params, "cursor")
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise InvalidArgument("cursor is not one this console issued")
    result = await data.action_page(_pool(request), cursor, _limit(request.query_params))
    return page(request, "actions.html", title="Operator actions", result=result)
