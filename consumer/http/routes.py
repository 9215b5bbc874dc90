"""The ``/api/v1`` endpoints: audit reads, the pause queue and dispatch control, the DLQ.

Reads go through :mod:`consumer.queries.reads` (the same layer as the CLI), control through
:mod:`consumer.operations.control`. Mutating endpoints depend on :func:`require_token`:
``Authorization: Bearer <TASKLEDGER_API_TOKEN>``, and with no token configured they are
disabled (403), never open. :data:`router` is mounted by :func:`consumer.http.app.create_app`.
"""

from __future__ import annotations

import hmac
import importlib
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from consumer.core.errors import InvalidArgument
from consumer.core.settings import Settings
from consumer.http.schemas import (
    READ_ERRORS,
    WRITE_ERRORS,
    ControlAccepted,
    ErrorBody,
    PauseRequest,
    ResumeRequest,
    error_response,
)
from consumer.operations import control
from consumer.queries import reads
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE, TaskFilter
from consumer.queries.models import (
    FailureReport,
    OperatorActionEntry,
    Page,
    PauseQueueView,
    TaskDetail,
)
from consumer.queries.times import parse_time
from contracts import AgentType, ControlScope, ErrorCause, TaskStatus

__all__ = ["require_token", "router"]

# --- dependencies --------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> Any:
    return request.app.state.pool


TimeParam = Annotated[
    str | None,
    Query(max_length=64, description="RFC 3339 (2026-11-01T10:00:00Z) or relative (7d, 12h, 30m)."),
]


def _filter(
    since: TimeParam = None,
    until: TimeParam = None,
    services: Annotated[
        list[str] | None,
        Query(alias="service", description="A service touched; repeat for several."),
    ] = None,
    service_mode: Annotated[
        Literal["any", "all"], Query(description="Touched any of the services, or all.")
    ] = "any",
    agent_type: AgentType | None = None,
    error_cause: ErrorCause | None = None,
    intent: Annotated[
        str | None,
        Query(max_length=200, description="verb_service, e.g. deploy_kuma or restart_dns."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None, Query(max_length=400, description="next_cursor of the previous page.")
    ] = None,
) -> TaskFilter:
    try:
        return TaskFilter(
            since=parse_time(since, name="since"),
            until=parse_time(until, name="until"),
            services=services or [],
            service_mode=service_mode,
            agent_type=agent_type,
            error_cause=error_cause,
            intent=intent,
            limit=limit,
            cursor=cursor,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"{where}: {first['msg']}") from None


def _filter_with_status(
    base: Annotated[TaskFilter, Depends(_filter)],
    status: Annotated[
        list[TaskStatus] | None, Query(description="A status; repeat for several.")
    ] = None,
) -> TaskFilter:
    return base.model_copy(update={"statuses": list(status or [])})


_bearer = HTTPBearer(auto_error=False, description="TASKLEDGER_API_TOKEN")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with the configured bearer token (else 401/403)."""
    token = _settings(request).api_token
    if token is None or not token.get_secret_value():
        raise HTTPException(
            403,
            "mutating endpoints are disabled: no API token is configured (TASKLEDGER_API_TOKEN)",
        )
    if credentials is None:
        raise HTTPException(
            401, "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="taskledger"'}
        )
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise HTTPException(403, "invalid bearer token")


def _actor(settings: Settings) -> str:
    return settings.operator or "api"


# --- routes --------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1")
Pool = Annotated[Any, Depends(_pool)]
Filter = Annotated[TaskFilter, Depends(_filter)]
StatusFilter = Annotated[TaskFilter, Depends(_filter_with_status)]
SettingsDep = Annotated[Settings, Depends(_settings)]


@router.get("/audit/tasks", response_model=Page, responses=READ_ERRORS, tags=["audit"])
async def audit_tasks(pool: Pool, f: StatusFilter) -> Page:
    """Tasks matching the filters, newest first, one page at a time."""
    return await reads.list_tasks(pool, f)


@router.get("/audit/failures", response_model=FailureReport, responses=READ_ERRORS, tags=["audit"])
async def audit_failures(pool: Pool, f: Filter) -> FailureReport:
    """Failed tasks matching the filters, with counts by error cause and by error type."""
    return await reads.failures(pool, f)


@router.get(
    "/audit/by-service/{service}",
    response_model=Page,
    responses=READ_ERRORS,
    tags=["audit"],
)
async def audit_by_service(pool: Pool, service: str, f: StatusFilter) -> Page:
    """Tasks that touched ``service`` (and match the filters), newest first."""
    return await reads.by_service(pool, service, f)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskDetail,
    responses={404: {"model": ErrorBody, "description": "No such task."}, **READ_ERRORS},
    tags=["audit"],
)
async def task(pool: Pool, task_id: UUID) -> TaskDetail:
    """One task with its full timeline: ledger events, steps and pause history by time."""
    return await reads.task_detail(pool, task_id)


@router.get("/pause-queue", response_model=PauseQueueView, responses=READ_ERRORS, tags=["control"])
async def pause_queue(pool: Pool) -> PauseQueueView:
    """What waits and why: entries most urgent first, with what they need; holds in force."""
    return await reads.pause_queue(pool)


@router.post(
    "/pause-queue/pause",
    status_code=202,
    response_model=ControlAccepted,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_token)],
    tags=["control"],
)
async def pause(settings: SettingsDep, body: PauseRequest) -> ControlAccepted:
    """Hold dispatch of all work or of one task (publishes ``control.pause``)."""
    actor = _actor(settings)
    event_id = await control.pause(
        settings, task_id=body.task_id, until=body.resume_after, reason=body.reason, actor=actor
    )
    return ControlAccepted(
        event_id=event_id, action="pause", scope=body.scope, task_id=body.task_id, actor=actor
    )


@router.post(
    "/pause-queue/resume",
    status_code=202,
    response_model=ControlAccepted,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_token)],
    tags=["control"],
)
async def resume(settings: SettingsDep, body: ResumeRequest) -> ControlAccepted:
    """Lift the hold on all dispatch or on one task (publishes ``control.resume``)."""
    actor = _actor(settings)
    event_id = await control.resume(settings, task_id=body.task_id, force=False, actor=actor)
    return ControlAccepted(
        event_id=event_id, action="resume", scope=body.scope, task_id=body.task_id, actor=actor
    )


@router.post(
    "/pause-queue/{task_id}/force",
    status_code=202,
    response_model=ControlAccepted,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_token)],
    tags=["control"],
)
async def force(settings: SettingsDep, task_id: UUID) -> ControlAccepted:
    """Dispatch one waiting task now, capacity or not (``control.resume`` with force)."""
    actor = _actor(settings)
    event_id = await control.resume(settings, task_id=task_id, force=True, actor=actor)
    return ControlAccepted(
        event_id=event_id, action="force", scope=ControlScope.TASK, task_id=task_id, actor=actor
    )


@router.get(
    "/dlq/summary",
    response_model=dict[str, Any],
    responses={503: {"model": ErrorBody, "description": "Broker or DLQ tooling unavailable."}},
    tags=["dlq"],
)
async def dlq_summary(
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=10000, description="Messages to inspect.")] = None,
) -> Any:
    """Dead-letter queue summary: counts by reason, source queue and event type."""
    try:
        dlq = importlib.import_module("consumer.dlq")
    except ModuleNotFoundError as exc:
        if exc.name != "consumer.dlq":
            raise
        return error_response(503, "dead-letter tooling is not installed in this build")
    result = await dlq.summary(settings, limit=limit)
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


@router.get(
    "/operator-actions",
    response_model=list[OperatorActionEntry],
    responses=READ_ERRORS,
    tags=["control"],
)
async def operator_actions(
    pool: Pool,
    since: TimeParam = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> list[OperatorActionEntry]:
    """What operators did (pauses, resumes, forces, replays), newest first."""
    return await reads.operator_actions(pool, parse_time(since, name="since"), limit)
