"""The HTTP API (``taskledger api``): the audit queries and operator control over HTTP.

Everything under ``/api/v1`` reads through :mod:`consumer.queries` (the same layer as
the CLI) and controls dispatch through :mod:`consumer.control`. Mutating calls need
``Authorization: Bearer <TASKLEDGER_API_TOKEN>``; with no token configured they are
disabled (403), never open. Every error is JSON ``{"error": ..., "detail": ...}``.
Plus ``/healthz`` (process up), ``/readyz`` (database and broker reachable) and
``/metrics`` (Prometheus). The OpenAPI document is checked in as ``docs/openapi.json``
(:func:`export_openapi`; a test fails when it drifts).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException

from consumer import __version__, broker, control, queries
from consumer.cli_common import parse_time
from consumer.db import create_pool
from consumer.exceptions import (
    BrokerUnavailable,
    InvalidArgument,
    TaskledgerError,
    TaskNotFound,
)
from consumer.settings import Settings, redact_text
from contracts import AgentType, ControlScope, ErrorCause, TaskStatus

__all__ = ["DEFAULT_OPENAPI_PATH", "create_app", "export_openapi", "openapi_document", "serve"]

log = logging.getLogger(__name__)

DEFAULT_OPENAPI_PATH = Path("docs/openapi.json")
_READY_TIMEOUT_S = 3.0

REQUEST_SECONDS = Histogram(
    "taskledger_api_request_duration_seconds",
    "HTTP API request duration by route and status code.",
    ["method", "route", "status"],
)


# --- bodies --------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """Every error response: a one-line message and, where useful, details."""

    error: str
    detail: Any = None


class PauseRequest(BaseModel):
    """Hold dispatch of all work (``scope=all``) or of one task (``scope=task``)."""

    model_config = ConfigDict(extra="forbid")

    scope: ControlScope
    task_id: UUID | None = Field(default=None, description="Required with scope=task.")
    reason: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")
    resume_after: AwareDatetime | None = Field(
        default=None, description="Lift the hold by itself at this time."
    )

    @model_validator(mode="after")
    def _scope_matches_task(self) -> PauseRequest:
        _check_scope(self.scope, self.task_id)
        return self


class ResumeRequest(BaseModel):
    """Lift the hold on all dispatch (``scope=all``) or on one task (``scope=task``)."""

    model_config = ConfigDict(extra="forbid")

    scope: ControlScope
    task_id: UUID | None = Field(default=None, description="Required with scope=task.")

    @model_validator(mode="after")
    def _scope_matches_task(self) -> ResumeRequest:
        _check_scope(self.scope, self.task_id)
        return self


def _check_scope(scope: ControlScope, task_id: UUID | None) -> None:
    if scope is ControlScope.TASK and task_id is None:
        raise ValueError("scope 'task' needs a task_id")
    if scope is ControlScope.ALL and task_id is not None:
        raise ValueError("scope 'all' takes no task_id")


class ControlAccepted(BaseModel):
    """A control event was published (the capacity handlers apply it) and recorded."""

    event_id: UUID
    action: Literal["pause", "resume", "force"]
    scope: ControlScope
    task_id: UUID | None = None
    actor: str


class Health(BaseModel):
    """Liveness or readiness, with the result of each check."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)


# --- dependencies --------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> Any:
    return request.app.state.pool


def _time(value: str | None, name: str) -> datetime | None:
    try:
        return parse_time(value, name=name)
    except (ValueError, OverflowError):  # e.g. "²d", "99999999999d"
        raise InvalidArgument(f"{name} {value!r} is out of range") from None


Text = Annotated[str | None, Query(max_length=200)]
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
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = queries.DEFAULT_PAGE,
    cursor: Annotated[
        str | None, Query(max_length=400, description="next_cursor of the previous page.")
    ] = None,
) -> queries.TaskFilter:
    try:
        return queries.TaskFilter(
            since=_time(since, "since"),
            until=_time(until, "until"),
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
    base: Annotated[queries.TaskFilter, Depends(_filter)],
    status: Annotated[
        list[TaskStatus] | None, Query(description="A status; repeat for several.")
    ] = None,
) -> queries.TaskFilter:
    return base.model_copy(update={"statuses": list(status or [])})


_bearer = HTTPBearer(auto_error=False, description="TASKLEDGER_API_TOKEN")


def _require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
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


# --- error handlers ------------------------------------------------------------------------


def _error(status: int, message: str, detail: Any = None, **kw: Any) -> JSONResponse:
    return JSONResponse(ErrorBody(error=message, detail=detail).model_dump(), status, **kw)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return _error(422, f"invalid request: {where}: {first['msg']}", detail)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, str(exc.detail), headers=exc.headers)


async def _on_taskledger(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, TaskNotFound):
        return _error(404, str(exc))
    if isinstance(exc, InvalidArgument):
        return _error(422, str(exc))
    # DatabaseUnavailable, BrokerUnavailable, ConfigurationError (e.g. an unmigrated
    # database): the service cannot answer now, which is not the caller's fault.
    log.warning("cannot serve", extra={"action": "api_unavailable", "error": redact_text(str(exc))})
    return _error(503, redact_text(str(exc)))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled API error", extra={"action": "api_error", "path": request.url.path})
    return _error(500, "internal error")


# --- routes --------------------------------------------------------------------------------

_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid parameters."},
    503: {"model": ErrorBody, "description": "Database unavailable."},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No bearer token."},
    403: {"model": ErrorBody, "description": "Wrong token, or mutating endpoints disabled."},
    422: {"model": ErrorBody, "description": "Invalid body or parameters."},
    503: {"model": ErrorBody, "description": "Database or broker unavailable."},
}

router = APIRouter(prefix="/api/v1")
Pool = Annotated[Any, Depends(_pool)]
Filter = Annotated[queries.TaskFilter, Depends(_filter)]
StatusFilter = Annotated[queries.TaskFilter, Depends(_filter_with_status)]
SettingsDep = Annotated[Settings, Depends(_settings)]


@router.get("/audit/tasks", response_model=queries.Page, responses=_READ_ERRORS, tags=["audit"])
async def audit_tasks(pool: Pool, f: StatusFilter) -> queries.Page:
    """Tasks matching the filters, newest first, one page at a time."""
    return await queries.list_tasks(pool, f)


@router.get(
    "/audit/failures", response_model=queries.FailureReport, responses=_READ_ERRORS, tags=["audit"]
)
async def audit_failures(pool: Pool, f: Filter) -> queries.FailureReport:
    """Failed tasks matching the filters, with counts by error cause and by error type."""
    return await queries.failures(pool, f)


@router.get(
    "/audit/by-service/{service}",
    response_model=queries.Page,
    responses=_READ_ERRORS,
    tags=["audit"],
)
async def audit_by_service(pool: Pool, service: str, f: StatusFilter) -> queries.Page:
    """Tasks that touched ``service`` (and match the filters), newest first."""
    return await queries.by_service(pool, service, f)


@router.get(
    "/tasks/{task_id}",
    response_model=queries.TaskDetail,
    responses={404: {"model": ErrorBody, "description": "No such task."}, **_READ_ERRORS},
    tags=["audit"],
)
async def task(pool: Pool, task_id: UUID) -> queries.TaskDetail:
    """One task with its full timeline: ledger events, steps and pause history by time."""
    return await queries.task_detail(pool, task_id)


@router.get(
    "/pause-queue", response_model=queries.PauseQueueView, responses=_READ_ERRORS, tags=["control"]
)
async def pause_queue(pool: Pool) -> queries.PauseQueueView:
    """What waits and why: entries most urgent first, with what they need; holds in force."""
    return await queries.pause_queue(pool)


@router.post(
    "/pause-queue/pause",
    status_code=202,
    response_model=ControlAccepted,
    responses=_WRITE_ERRORS,
    dependencies=[Depends(_require_token)],
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
    responses=_WRITE_ERRORS,
    dependencies=[Depends(_require_token)],
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
    responses=_WRITE_ERRORS,
    dependencies=[Depends(_require_token)],
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
        return _error(503, "dead-letter tooling is not installed in this build")
    result = await dlq.summary(settings, limit=limit)
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


@router.get(
    "/operator-actions",
    response_model=list[queries.OperatorActionEntry],
    responses=_READ_ERRORS,
    tags=["control"],
)
async def operator_actions(
    pool: Pool,
    since: TimeParam = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE)] = queries.DEFAULT_PAGE,
) -> list[queries.OperatorActionEntry]:
    """What operators did (pauses, resumes, forces, replays), newest first."""
    return await queries.operator_actions(pool, _time(since, "since"), limit)


# --- app -----------------------------------------------------------------------------------


async def _check_database(pool: Any) -> str:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), _READY_TIMEOUT_S)
    except Exception as exc:  # any failure means "not ready"; the message says which
        return f"unavailable: {redact_text(str(exc)) or type(exc).__name__}"
    return "ok"


async def _check_broker(settings: Settings) -> str:
    try:
        connection = await asyncio.wait_for(broker.connect(settings.amqp), _READY_TIMEOUT_S)
    except (BrokerUnavailable, TimeoutError) as exc:
        return f"unavailable: {redact_text(str(exc)) or type(exc).__name__}"
    await connection.close()
    return "ok"


def _add_probes(app: FastAPI, settings: Settings) -> None:
    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """The process is up (no dependency is checked)."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": ErrorBody, "description": "Database or broker unreachable."}},
        tags=["ops"],
    )
    async def readyz(request: Request) -> Any:
        """Ready to serve: the database answers ``SELECT 1`` and the broker accepts a connection."""
        database, amqp = await asyncio.gather(
            _check_database(request.app.state.pool), _check_broker(settings)
        )
        checks = {"database": database, "broker": amqp}
        if database != "ok" or amqp != "ok":
            return _error(503, "not ready", checks)
        return Health(status="ready", checks=checks)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics of this process (text exposition format)."""
        return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings``; the database pool opens with the app's lifespan.

    The pool starts empty, so the app starts (and ``/readyz`` says 503) while the
    database is down.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.dsn, min_size=0, max_size=8)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(
        title="taskledger",
        version=__version__,
        summary="Audit record and dispatch control of the agent platform.",
        description=(
            "Read the audit record (tasks, failures, timelines), see what waits in the pause "
            "queue and why, and pause or resume dispatch. POST endpoints need "
            "`Authorization: Bearer <TASKLEDGER_API_TOKEN>`; without a configured token they "
            'are disabled. Errors are `{"error": ..., "detail": ...}`.'
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = None
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(TaskledgerError, _on_taskledger)
    app.add_exception_handler(Exception, _on_unexpected)
    app.middleware("http")(_timed)
    app.include_router(router)
    _add_probes(app, settings)
    return app


async def _timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    REQUEST_SECONDS.labels(request.method, route, str(response.status_code)).observe(
        time.perf_counter() - started
    )
    return response


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document (independent of the settings' values)."""
    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


def render_openapi() -> str:
    """The OpenAPI document as the checked-in text (indented JSON, trailing newline)."""
    return orjson.dumps(openapi_document(), option=orjson.OPT_INDENT_2).decode() + "\n"


def export_openapi(path: Path | str = DEFAULT_OPENAPI_PATH) -> Path:
    """Write the OpenAPI document to ``path`` (default ``docs/openapi.json``); return it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_openapi(), encoding="utf-8")
    return target


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the API with uvicorn until interrupted (``taskledger api``)."""
    import uvicorn

    from consumer import logs

    logs.configure(settings.log_level, settings.log_json)
    log.info("API listening", extra={"action": "api_start", "host": host, "port": port})
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


if __name__ == "__main__":  # python -m consumer.api [PATH]: export the OpenAPI document
    written = export_openapi(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OPENAPI_PATH)
    print(f"wrote {written}")
