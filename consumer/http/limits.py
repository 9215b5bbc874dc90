"""Limits the API enforces before doing work: auth and body size first, bounded database use.

- :class:`RequestLimits` is a pure ASGI middleware. For a route that needs the token it
  checks ``Authorization`` before a byte of the body is read (401/403), then refuses a
  body above :data:`MAX_BODY_BYTES` with 413: at once from ``Content-Length``, and while
  streaming for a chunked body.
- :class:`BoundedPool` is the API's view of the database pool: a connection is waited
  for at most ``api_pool_timeout_ms``, then the call answers 503 instead of queueing
  behind a slow query (statements themselves stop at ``api_statement_timeout_ms``).
- :func:`cap_depth` cuts JSON values nested deeper than :data:`MAX_JSON_DEPTH` with a
  marker, so a pathological stored document cannot break the response encoder.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import HTTPException as RouteHTTPException
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, compile_path

from consumer.core.errors import DatabaseTimeout
from consumer.http.schemas import error_response

__all__ = [
    "DEEP_MARKER",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "BoundedPool",
    "RequestLimits",
    "cap_depth",
    "flat_routes",
    "guarded",
    "token_paths",
]

#: Largest request body the API takes (its bodies are a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024
#: JSON nesting kept in responses; deeper values become :data:`DEEP_MARKER`.
MAX_JSON_DEPTH = 64
DEEP_MARKER = f"[nested deeper than {MAX_JSON_DEPTH} levels: cut]"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Checks the ``Authorization`` header value (or None); raises HTTPException 401/403.
TokenCheck = Callable[[str | None], None]


def guarded(route: APIRoute, dependency: Callable[..., Any]) -> bool:
    """True if ``route`` depends (directly) on ``dependency`` (e.g. ``require_token``)."""
    return any(d.call is dependency for d in route.dependant.dependencies)


def flat_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(full path, route) of every route, routers included with ``include_router``
    walked into (FastAPI keeps them as one entry that holds the router)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from flat_routes(included.routes, prefix + getattr(context, "prefix", ""))
        else:
            yield prefix + getattr(route, "path", ""), route


def token_paths(
    routes: Iterable[BaseRoute], dependency: Callable[..., Any]
) -> list[tuple[frozenset[str], re.Pattern[str]]]:
    """(methods, path regex) of every API route that depends on ``dependency``."""
    found = []
    for path, route in flat_routes(routes):
        if isinstance(route, APIRoute) and guarded(route, dependency):
            found.append((frozenset(route.methods or ()), compile_path(path)[0]))
    return found


def _too_large() -> RouteHTTPException:
    # FastAPI's own class: its body reader passes it on as is (any other error becomes 400)
    return RouteHTTPException(413, f"request body larger than {MAX_BODY_BYTES} bytes")


class RequestLimits:
    """ASGI middleware: token check before the body, body size cap (413)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        guarded_paths: list[tuple[frozenset[str], re.Pattern[str]]],
        check_token: TokenCheck,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self._guarded = guarded_paths
        self._check_token = check_token
        self._max_body = max_body

    def _needs_token(self, scope: Scope) -> bool:
        path, method = scope["path"], scope["method"]
        return any(method in m and regex.match(path) for m, regex in self._guarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse early (401/403/413/400) or pass the request on with a capped body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if self._needs_token(scope):
                self._check_token(headers.get("authorization"))
            length = headers.get("content-length")
            if length is not None:
                if not length.strip().isdigit():
                    raise HTTPException(400, "Content-Length is not a number")
                if int(length) > self._max_body:
                    raise _too_large()
        except HTTPException as exc:
            response = error_response(exc.status_code, str(exc.detail), headers=exc.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, self._capped(receive), send)

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max_body:
                    raise _too_large()  # answered by the app's HTTPException handler
            return message

        return capped


class BoundedPool:
    """The API's database pool: :meth:`acquire` waits at most ``timeout`` seconds.

    Everything else is the wrapped asyncpg pool's. A wait that runs out raises
    :class:`DatabaseTimeout` (503): the API answers rather than queue behind slow calls.
    """

    def __init__(self, pool: Any, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """A connection of the pool, released on exit; raises :class:`DatabaseTimeout`."""
        wait = self._timeout if timeout is None else timeout
        try:
            conn = await self._pool.acquire(timeout=wait)
        except TimeoutError:
            raise DatabaseTimeout(
                f"every database connection of the API is busy (waited {wait:g} s): "
                "retry shortly (TASKLEDGER_API_POOL_TIMEOUT_MS)"
            ) from None
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def fetchval(self, query: str, *args: Any) -> Any:
        """``SELECT`` one value on a connection acquired within the timeout."""
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def close(self) -> None:
        """Close the wrapped pool."""
        await self._pool.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _cap(value: Any, left: int) -> Any:
    if isinstance(value, dict):
        return DEEP_MARKER if left <= 0 else {k: _cap(v, left - 1) for k, v in value.items()}
    if isinstance(value, list):
        return DEEP_MARKER if left <= 0 else [_cap(v, left - 1) for v in value]
    return value


M = TypeVar("M", bound=BaseModel)


def cap_depth(model: M, limit: int = MAX_JSON_DEPTH) -> M:
    """A copy of ``model`` whose JSON values (dicts, lists) nest at most ``limit`` deep.

    Nested models are capped field by field; a value nested deeper is replaced by
    :data:`DEEP_MARKER`.
    """
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            updates[name] = cap_depth(value, limit)
        elif isinstance(value, list) and any(isinstance(v, BaseModel) for v in value):
            updates[name] = [
                cap_depth(v, limit) if isinstance(v, BaseModel) else _cap(v, limit) for v in value
            ]
        elif isinstance(value, dict | list):
            updates[name] = _cap(value, limit)
    return model.model_copy(update=updates) if updates else model
