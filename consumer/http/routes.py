"""The ``/api/v1`` endpoints: audit reads, the pause queue and dispatch control, the DLQ.

Reads go through :mod:`consumer.queries.reads` (the same layer as the CLI), control through
:mod:`consumer.operations.control`. Mutating endpoints depend on :func:`require_token`:
``Authorization: Bearer <TASKLEDGER_API_TOKEN>``, and with no token configured they are
disabled (403), never open. :data:`router` is mounted by :func:`consumer.http.app.create_app`.
"""

from __future__ import annotations

import hmac
import importlib
import re
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError, WithJsonSchema
from starlette.exceptions import HTTPException

from consumer.core.errors import InvalidArgument
from consumer.core.settings import Settings
from consumer.http.limits import cap_depth
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
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE, MAX_TEXT, TaskFilter
from consumer.queries.models import (
    FailureReport,
    OperatorActionEntry,
    Page,
    PauseQueueView,
    TaskDetail,
)
from consumer.queries.times import TIME_SCHEMA, parse_time
from contracts import AgentType, ControlScope, ErrorCause, TaskStatus

__all__ = ["check_token", "require_token", "router"]

# --- dependencies --------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> Any:
    return request.app.state.pool


TimeParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="RFC 3339 with seconds and an offset, years 2000..9999 "
        "(2026-11-01T10:00:00Z, 2026-11-01T12:00:00+02:00), or relative: 1 to 5 digits "
        "and s, m, h, d or w (7d, 12h, 30m). Converted to UTC.",
    ),
    WithJsonSchema(TIME_SCHEMA),
]
#: What a page cursor looks like (any other string is refused with 422, and so is a
#: well-formed one this API did not issue): ``format: cursor``.
CURSOR_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "cursor",
    "pattern": "^[A-Za-z0-9_-]+$",
    "maxLength": 400,
}
#: ``verb_service`` (or ``verb:service``, ``verb service``), or a bare verb.
INTENT_PATTERN = r"^[A-Za-z][A-Za-z0-9]*(?:[_: ]+(?:[A-Za-z0-9][A-Za-z0-9._-]{0,199})?)?$"
#: Whitespace to Python's ``str.strip`` or to JavaScript's ``\s``, spelt out: a pattern
#: with ``\s`` would mean different things to the API and to a JSON Schema validator.
_BLANKS = "\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
#: A service name: up to 200 characters, no NUL, not only whitespace.
SERVICE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_TEXT,
    "pattern": "^[^\\x00]*[^\\x00" + _BLANKS + "][^\\x00]*$",
}
_SERVICE = re.compile(str(SERVICE_SCHEMA["pattern"]).strip("^$"))
_CURSOR = re.compile(str(CURSOR_SCHEMA["pattern"]).strip("^$"))


def _matches(regex: re.Pattern[str], value: str | None, what: str) -> None:
    """Refuse (422) what the documented pattern refuses, as JSON Schema reads it."""
    if value is not None and not regex.fullmatch(value):
        raise InvalidArgument(f"{what} {value[:80]!r} is not valid: see the OpenAPI document")


def _filter(
    since: TimeParam = None,
    until: TimeParam = None,
    services: Annotated[
        list[str] | None,
        Query(alias="service", description="A service touched; repeat for several."),
        WithJsonSchema({"type": "array", "items": SERVICE_SCHEMA}),
    ] = None,
    service_mode: Annotated[
        Literal["any", "all"], Query(description="Touched any of the services, or all.")
    ] = "any",
    agent_type: AgentType | None = None,
    error_cause: ErrorCause | None = None,
    intent: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=INTENT_PATTERN,
            description="verb_service, e.g. deploy_kuma or restart_dns; or a bare verb.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None,
        Query(max_length=400, description="next_cursor of the previous page."),
        WithJsonSchema(CURSOR_SCHEMA),
    ] = None,
    project_id: Annotated[UUID | None, Query(description="Tasks of this project.")] = None,
    has_suggestions: Annotated[
        bool | None, Query(description="Tasks with suggestions (true) or without (false).")
    ] = None,
) -> TaskFilter:
    if cursor == "":
        raise InvalidArgument("cursor is empty: leave it out for the first page")
    _matches(_CURSOR, cursor, "cursor")
    for service in services or []:
        _matches(_SERVICE, service, "service")
    try:
        return TaskFilter(
            since=parse_time(since, name="since", strict=True),
            until=parse_time(until, name="until", strict=True),
            services=services or [],
            service_mode=service_mode,
            agent_type=agent_type,
            error_cause=error_cause,
            intent=intent,
            project_id=project_id,
            has_suggestions=has_suggestions,
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


def check_token(settings: Settings, authorization: str | None) -> None:
    """Raise HTTPException 401/403 unless ``authorization`` is ``Bearer <the API token>``.

    With no token configured every guarded call is refused (403): disabled, never open.
    Called by :class:`~consumer.http.limits.RequestLimits` before the body is read, and
    again by :func:`require_token`.
    """
    token = settings.api_token
    if token is None or not token.get_secret_value():
        raise HTTPException(
            403,
            "mutating endpoints are disabled: no API token is configured (TASKLEDGER_API_TOKEN)",
        )
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPException(
            401, "missing bearer token", headers={"WWW-Authenticate": 'Bearer realm="taskledger"'}
        )
    secret = given.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(secret, token.get_secret_value().encode()):
        raise HTTPException(403, "invalid bearer token")


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with the configured bearer token (else 401/403)."""
    check_token(_settings(request), request.headers.get("authorization"))


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
async def audit_by_service(
    pool: Pool,
    service: Annotated[str, Path(), WithJsonSchema(SERVICE_SCHEMA)],
    f: StatusFilter,
) -> Page:
    """Tasks that touched ``service`` (and match the filters), newest first."""
    _matches(_SERVICE, service, "service")
    return await reads.by_service(pool, service, f)


@router.get(
    "/tasks/{task_id}",
    response_model=TaskDetail,
    responses={404: {"model": ErrorBody, "description": "No such task."}, **READ_ERRORS},
    tags=["audit"],
)
async def task(pool: Pool, task_id: UUID) -> TaskDetail:
    """One task with its full timeline: ledger events, steps and pause history by time.

    JSON documents (plan, outcome, step output...) nested deeper than 64 levels are cut
    there with the string ``"[nested deeper than 64 levels: cut]"``.
    """
    return cap_depth(await reads.task_detail(pool, task_id))


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
    responses={
        401: {"model": ErrorBody, "description": "No bearer token."},
        403: {"model": ErrorBody, "description": "Wrong token, or guarded endpoints disabled."},
        409: {"model": ErrorBody, "description": "Another operation holds the dead letters."},
        422: {"model": ErrorBody, "description": "Invalid parameters."},
        503: {"model": ErrorBody, "description": "Broker or DLQ tooling unavailable."},
    },
    dependencies=[Depends(require_token)],
    tags=["dlq"],
)
async def dlq_summary(
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, le=10000, description="Messages to inspect.")] = None,
) -> Any:
    """Dead-letter queue summary: counts by reason, source queue and event type (needs the
    token: reading the dead letters holds them from other readers for a while)."""
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
    return await reads.operator_actions(pool, parse_time(since, name="since", strict=True), limit)
