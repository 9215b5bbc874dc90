"""Console login/logout, and the pause queue with its actions (hold, resume, force).

Holds and releases go through :mod:`consumer.operations.control`, as ``taskledger pause``
and ``resume`` and the API's ``/api/v1/pause-queue/...`` do: a ``control.pause`` or
``control.resume`` event published with a confirm, recorded in ``operator_actions``.
Every action has a confirmation page; the POST needs the login and the form's CSRF value.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

from consumer.core.errors import InvalidArgument
from consumer.core.settings import Settings
from consumer.operations import control
from consumer.queries import reads
from consumer.queries.times import parse_time
from consumer.ui.auth import (
    PRE_COOKIE,
    SESSION_COOKIE,
    check_post,
    login_csrf,
    require_login,
    require_read,
    safe_next,
    session_value,
    set_cookie,
    token_matches,
)
from consumer.ui.render import ConsoleRoute, page

__all__ = ["router"]

router = APIRouter(route_class=ConsoleRoute)
Action = Literal["hold", "resume", "force"]
_ACTIONS: tuple[str, ...] = ("hold", "resume", "force")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _actor(settings: Settings) -> str:
    return settings.operator or "console"


# --- login -----------------------------------------------------------------------------


@router.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form(request: Request) -> HTMLResponse:
    """The login form (the API token), with its pre-session CSRF cookie."""
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
    response = page(
        request,
        "login.html",
        title="Log in",
        next=safe_next(request.query_params.get("next")),
        login_csrf=login_csrf(pre),
    )
    set_cookie(request, response, PRE_COOKIE, pre)
    return response


@router.post("/ui/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the token; on success set the session cookie and go to ``next``."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_post(request, form, login=True)
    settings = _settings(request)
    value = session_value(settings)
    if value is None:
        raise HTTPException(
            403, "login is disabled: no API token is configured (set TASKLEDGER_API_TOKEN)"
        )
    if not token_matches(settings, form.get("token", "")):
        raise HTTPException(403, "wrong token")
    response = Response(status_code=303, headers={"Location": safe_next(form.get("next"))})
    set_cookie(request, response, SESSION_COOKIE, value)
    return response


@router.post("/ui/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """Forget the session cookie."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_post(request, form)
    response = Response(status_code=303, headers={"Location": "/ui/"})
    response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


# --- pause queue -----------------------------------------------------------------------


@router.get(
    "/ui/pause-queue",
    response_class=HTMLResponse,
    include_in_schema=False,
    dependencies=[Depends(require_read)],
)
async def pause_queue(request: Request) -> HTMLResponse:
    """What waits and why (most urgent first), what it needs, and the holds in force."""
    view = await reads.pause_queue(request.app.state.pool)
    return page(request, "pause_queue.html", title="Pause queue", view=view)


def _task_id(value: str | None) -> UUID | None:
    if not value or not value.strip():
        return None
    try:
        return UUID(value.strip())
    except ValueError:
        raise InvalidArgument(f"task_id {value[:60]!r} is not a task id") from None


def _action(value: str | None) -> str:
    if value not in _ACTIONS:
        raise InvalidArgument(f"action must be one of {', '.join(_ACTIONS)}")
    return value


@router.get(
    "/ui/pause-queue/confirm",
    response_class=HTMLResponse,
    include_in_schema=False,
    dependencies=[Depends(require_login)],
)
async def confirm(request: Request) -> HTMLResponse:
    """Confirmation page of hold / resume / force, for all dispatch or one task."""
    action = _action(request.query_params.get("action"))
    task_id = _task_id(request.query_params.get("task_id"))
    if action == "force" and task_id is None:
        raise InvalidArgument("force needs a task: give task_id")
    return page(
        request, "pause_confirm.html", title=f"Confirm {action}", action=action, task_id=task_id
    )


@router.post("/ui/pause-queue/{action}", response_class=HTMLResponse, include_in_schema=False)
async def act(request: Request, action: str) -> HTMLResponse:
    """Publish the confirmed hold, resume or force; show what was sent."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_post(request, form)
    action = _action(action)
    settings = _settings(request)
    actor = _actor(settings)
    task_id = _task_id(form.get("task_id"))
    event_id: Any
    if action == "hold":
        reason = form.get("reason", "").strip() or None
        until = parse_time(form.get("until", "").strip() or None, name="until", ahead=True)
        event_id = await control.pause(
            settings, task_id=task_id, until=until, reason=reason, actor=actor
        )
    else:
        event_id = await control.resume(
            settings, task_id=task_id, force=action == "force", actor=actor
        )
    return page(
        request,
        "pause_result.html",
        title=f"{action.capitalize()} sent",
        action=action,
        task_id=task_id,
        event_id=event_id,
        actor=actor,
    )
