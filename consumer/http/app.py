"""The HTTP API (``taskledger api``): the audit queries and operator control over HTTP.

:func:`create_app` mounts the ``/api/v1`` endpoints of :mod:`consumer.http.routes` and
adds, here, what is not an endpoint of the API proper: the JSON error handlers (every
error is ``{"error": ..., "detail": ...}``), the request-duration middleware, the probes
``/healthz`` (process up), ``/readyz`` (database and broker reachable) and ``/metrics``
(Prometheus), the OpenAPI export and :func:`serve`. The OpenAPI document is checked in
as ``docs/openapi.json`` (:func:`export_openapi`; a test fails when it drifts):
``python -m consumer.http.app [PATH]`` writes it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from starlette.exceptions import HTTPException

from consumer import __version__, broker, ui
from consumer.core.errors import (
    BrokerUnavailable,
    DatabaseMisconfigured,
    DatabaseTimeout,
    InvalidArgument,
    TaskledgerError,
    TaskNotFound,
)
from consumer.core.settings import Settings, redact_text
from consumer.http import routes_dispatches, routes_plan
from consumer.http.docs import add_docs
from consumer.http.limits import BoundedPool, RequestLimits, token_paths
from consumer.http.routes import check_token, require_token, router
from consumer.http.schemas import ErrorBody, Health, error_response
from consumer.store.db import create_pool, q, translate_errors

__all__ = [
    "DEFAULT_OPENAPI_PATH",
    "create_app",
    "export_openapi",
    "openapi_document",
    "render_openapi",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_OPENAPI_PATH = Path("docs/openapi.json")
_READY_TIMEOUT_S = 3.0

REQUEST_SECONDS = Histogram(
    "taskledger_api_request_duration_seconds",
    "HTTP API request duration by route and status code.",
    ["method", "route", "status"],
)

# --- error handlers ------------------------------------------------------------------------


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return error_response(422, f"invalid request: {where}: {first['msg']}", detail)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _on_taskledger(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, TaskNotFound):
        return error_response(404, str(exc))
    if isinstance(exc, InvalidArgument):
        return error_response(422, str(exc))
    if type(exc).__name__.endswith("Busy"):  # e.g. DeadLettersBusy: another operation holds it
        return error_response(409, str(exc))
    if isinstance(exc, DatabaseTimeout):
        message = redact_text(str(exc))
        if "busy" not in message:
            message = (
                "the database did not answer within the API's statement timeout "
                f"(TASKLEDGER_API_STATEMENT_TIMEOUT_MS): narrow the filters or retry ({message})"
            )
        log.warning("database timeout", extra={"action": "api_timeout", "error": message})
        return error_response(503, message, headers={"Retry-After": "1"})
    # DatabaseUnavailable, BrokerUnavailable, ConfigurationError (e.g. an unmigrated
    # database): the service cannot answer now, which is not the caller's fault.
    log.warning("cannot serve", extra={"action": "api_unavailable", "error": redact_text(str(exc))})
    return error_response(503, redact_text(str(exc)))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled API error", extra={"action": "api_error", "path": request.url.path})
    return error_response(500, "internal error")


async def _timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    REQUEST_SECONDS.labels(request.method, route, str(response.status_code)).observe(
        time.perf_counter() - started
    )
    return response


# --- probes --------------------------------------------------------------------------------


async def _check_database(pool: Any) -> str:
    """``ok``; ``refused: ...`` when PostgreSQL refuses us (login, database name, schema:
    an operator must fix the URL or migrate); ``unavailable: ...`` otherwise."""
    try:
        with translate_errors():
            await asyncio.wait_for(pool.fetchval(q("ping")), _READY_TIMEOUT_S)
    except DatabaseMisconfigured as exc:
        return f"refused: {exc}"
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
            return error_response(503, "not ready", checks)
        return Health(status="ready", checks=checks)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics of this process (text exposition format)."""
        return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


# --- app -----------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """Build the API for ``settings``; the database pool opens with the app's lifespan.

    The pool starts empty, so the app starts (and ``/readyz`` says 503) while the
    database is down.
    """

    statement_ms = settings.api_statement_timeout_ms

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.dsn,
            min_size=0,
            max_size=8,
            # PostgreSQL cancels first (57014); the client's own limit is the backstop.
            command_timeout=statement_ms / 1000 + 1,
            server_settings={"statement_timeout": str(statement_ms)},
        )
        app.state.pool = BoundedPool(pool, settings.api_pool_timeout_ms / 1000)
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
            "are disabled; so is the DLQ summary (reading dead letters holds them). Request "
            'bodies are capped at 64 KiB (413). Errors are `{"error": ..., "detail": ...}`.'
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool = None
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(TaskledgerError, _on_taskledger)
    app.add_exception_handler(Exception, _on_unexpected)
    app.include_router(router)
    app.include_router(routes_plan.router)
    app.include_router(routes_dispatches.router)
    ui.mount(app)  # the ops console under /ui/ (not part of the OpenAPI document)
    _add_probes(app, settings)
    add_docs(app)
    # Added first, so inside the timing middleware: its receive wrapper raises the 413
    # straight into the route (through BaseHTTPMiddleware it would become a 400).
    app.add_middleware(
        RequestLimits,
        guarded_paths=token_paths(app.routes, require_token),
        check_token=lambda header: check_token(settings, header),
    )
    app.middleware("http")(_timed)
    return app


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


def _drop_colour(record: logging.LogRecord) -> bool:
    """Log filter: uvicorn attaches a ``color_message`` (ANSI escapes) to its records."""
    record.__dict__.pop("color_message", None)
    return True


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the API with uvicorn until interrupted (``taskledger api``); logs carry no
    colour escape codes."""
    import uvicorn

    from consumer.core import logs

    logs.configure(settings.log_level, settings.log_json)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(_drop_colour)
    log.info("API listening", extra={"action": "api_start", "host": host, "port": port})
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        use_colors=False,
    )


if __name__ == "__main__":  # python -m consumer.http.app [PATH]: export the OpenAPI document
    written = export_openapi(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OPENAPI_PATH)
    print(f"wrote {written}")
