"""Rendering of the console: the Jinja2 environment, the HTML error pages, the security headers.

Every console route is a :class:`ConsoleRoute`: whatever it raises (a bad query parameter,
an unknown task, a busy dead-letter queue, a database that does not answer) becomes an
HTML page with the right status, never a traceback nor the API's JSON body; every
response of it carries the console's headers (:data:`SECURITY_HEADERS`, among them a
``Content-Security-Policy`` that allows nothing but the console's own files).
Autoescape is on for every template: message bodies and headers are attacker-controlled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from consumer.core.errors import (
    DatabaseTimeout,
    InvalidArgument,
    TaskledgerError,
    TaskNotFound,
)
from consumer.core.settings import redact_text

__all__ = [
    "SECURITY_HEADERS",
    "ConsoleRoute",
    "Redirect",
    "error_page",
    "page",
    "templates",
]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

#: Sent with every console response: no script, style or frame from anywhere else, no
#: inline script (the console has none), forms post only to the console itself.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Redirect(Exception):
    """Raised by a console route to answer ``303 See Other`` to ``location``."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _when(value: datetime | None) -> str:
    """``2026-11-30 10:41:34Z`` (UTC, seconds), or an empty string."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _ago(value: datetime | None) -> str:
    """How long ago ``value`` was: ``42 s``, ``7 min``, ``3 h``, ``2 d``."""
    if value is None:
        return ""
    seconds = max(0.0, (datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _since(value: datetime | None, start: datetime | None) -> str:
    """``value`` as time after ``start``: ``+0 s``, ``+40 s``, ``+2 min 5 s``, ``+3 h 2 min``."""
    if value is None or start is None:
        return ""
    seconds = int((value - start).total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("+", seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 48:
        return f"{sign}{hours // 24} d {hours % 24} h"
    if hours:
        return f"{sign}{hours} h {minutes} min"
    return f"{sign}{minutes} min {secs} s" if minutes else f"{sign}{secs} s"


def _query(params: Mapping[str, Any]) -> str:
    """A query string of the set parameters (None and empty values left out)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(key, str(v)) for v in values if v is not None and v != ""]
    return urlencode(pairs)


def _slug(value: Any) -> str:
    """A value fit for a ``data-testid`` suffix: lower case, ``-`` for anything unusual."""
    text = str(value if value is not None else "none").lower()
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)[:80]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("consumer.ui", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["since"] = _since
    env.filters["query"] = _query
    env.filters["slug"] = _slug
    return env


templates = _environment()


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` with ``context`` plus what every page uses (the request, the
    session's login state and CSRF token, set by :mod:`consumer.ui.auth`)."""
    state = request.state
    html = templates.get_template(template).render(
        request=request,
        path=request.url.path,
        logged_in=getattr(state, "ui_logged_in", False),
        csrf=getattr(state, "ui_csrf", ""),
        token_configured=getattr(state, "ui_token_configured", False),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """The console's error page: the status and one line saying what is wrong."""
    titles = {
        400: "Bad request",
        401: "Login needed",
        403: "Forbidden",
        404: "Not found",
        409: "Busy",
        413: "Too large",
        500: "Internal error",
        503: "Unavailable",
    }
    return page(
        request,
        "error.html",
        status_code=status_code,
        title=titles.get(status_code, "Error"),
        status=status_code,
        message=message,
    )


def _status_of(exc: Exception) -> tuple[int, str]:
    """The status and message of a console error page for ``exc``."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return 400, f"invalid {where or 'request'}: {first.get('msg', '')}"
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, TaskNotFound) or type(exc).__name__ == "DeadLetterNotFound":
        return 404, str(exc)
    if isinstance(exc, InvalidArgument):
        return 400, str(exc)
    if type(exc).__name__.endswith("Busy"):
        return 409, str(exc)
    if isinstance(exc, DatabaseTimeout):
        return 503, redact_text(str(exc))
    if isinstance(exc, TaskledgerError):
        return 503, redact_text(str(exc))
    return 500, "internal error (see the API's log)"


class ConsoleRoute(APIRoute):
    """A console route: errors become HTML pages, every answer gets :data:`SECURITY_HEADERS`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler (which also raises the parameter validation errors)."""
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except Redirect as exc:
                response = Response(status_code=303, headers={"Location": exc.location})
            except Exception as exc:
                status, message = _status_of(exc)
                if status == 500:
                    log.exception(
                        "console error", extra={"action": "ui_error", "path": request.url.path}
                    )
                response = error_page(request, status, message)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return console_handler
