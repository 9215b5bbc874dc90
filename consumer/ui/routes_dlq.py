"""Console pages of the dead-letter queue: groups, a group's messages, one message, actions.

Everything goes through :mod:`consumer.dlq`, the functions behind ``taskledger dlq ...`` and
``/api/v1/dlq/summary``: ``summary`` (groups by reason, event type and error pattern),
``list_dead_letters``, ``show``, ``replay`` (a dry run is the confirmation page's preview;
the real one records ``dlq.replay`` in ``operator_actions``) and ``export`` (recorded as
``dlq.export``). Like the API's DLQ endpoint every page here needs the login: reading the
dead letters holds them from other readers for a moment (the lease); a page that finds
them held waits a little, then says so (409).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from consumer import dlq
from consumer.core.errors import InvalidArgument
from consumer.core.settings import Settings, redact_text
from consumer.ui.auth import check_post, require_login
from consumer.ui.jobs import jobs_of
from consumer.ui.render import ConsoleRoute, page

__all__ = ["BODY_LIMIT", "dlq_reasons", "router"]

router = APIRouter(route_class=ConsoleRoute)
guarded = APIRouter(route_class=ConsoleRoute, dependencies=[Depends(require_login)])

#: A message body is shown up to this many characters (then cut, with a note).
BODY_LIMIT = 64 * 1024
#: Groups mixing error patterns under one reason and type are replayed by message key,
#: at most this many per confirmation.
MAX_KEYS = 1000
#: Messages the groups page and the overview look at.
SCAN_LIMIT = 5000
_BUSY_WAIT_S = 5.0
#: The overview reads the dead letters by reason at most this often (seconds).
REASONS_TTL_S = 30.0
#: How long the replay POST waits for its job before showing the progress page.
REPLAY_WAIT_S = 3.0
_IDENT = re.compile(r"[^\x00-\x1f\x7f]{1,200}")

T = TypeVar("T")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _actor(settings: Settings) -> str:
    return settings.operator or "console"


async def _leased(call: Callable[[], Awaitable[T]]) -> T:
    """Run a dead-letter operation; while another holds the lease, retry for a few seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _BUSY_WAIT_S
    while True:
        try:
            return await call()
        except dlq.DeadLettersBusy:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


async def dlq_reasons(request: Request) -> tuple[dict[str, int] | None, str]:
    """Dead letters by reason for the overview (None and why when it cannot show them).

    Read at most every :data:`REASONS_TTL_S` seconds per process (a replay from the
    console forgets it), and without waiting for the lease: the overview refreshes
    itself, and must not keep the dead letters from ``taskledger dlq`` commands.
    """
    if not request.state.ui_token_configured:
        return None, "Set TASKLEDGER_API_TOKEN and log in to see the dead letters."
    if not request.state.ui_logged_in:
        return None, "Log in to see the dead letters by reason (reading them needs the token)."
    loop = asyncio.get_running_loop()
    cached = getattr(request.app.state, "ui_dlq_reasons", None)
    if cached is not None and loop.time() - cached[0] < REASONS_TTL_S:
        return cached[1], cached[2]
    try:
        result = await dlq.summary(_settings(request), limit=SCAN_LIMIT)
    except dlq.DeadLettersBusy:
        return None, dlq.BUSY
    except Exception as exc:  # the overview shows the rest anyway
        return None, f"dead letters unavailable: {redact_text(str(exc)) or type(exc).__name__}"
    reasons: dict[str, int] = {}
    for group in result.groups:
        reasons[group.reason] = reasons.get(group.reason, 0) + group.count
    note = "" if result.scanned >= result.total else f"first {result.scanned} of {result.total}"
    note += f"{'; ' if note else ''}read at {datetime.now(UTC):%H:%M:%S}Z (every {REASONS_TTL_S:g} s at most)"
    ordered = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    request.app.state.ui_dlq_reasons = (loop.time(), ordered, note)
    return ordered, note


def forget_reasons(request: Request) -> None:
    """Drop the overview's cached dead letters by reason (after a replay)."""
    request.app.state.ui_dlq_reasons = None


# --- choosing a group ------------------------------------------------------------------


def _literal(value: str) -> str:
    """A shell pattern (as :class:`dlq.Filters` takes) matching exactly ``value``."""
    return re.sub(r"([*?\[])", r"[\1]", value)


def _group_params(params: QueryParams | dict[str, str]) -> dict[str, str | None]:
    reason = (params.get("reason") or "").strip()
    if not reason or len(reason) > 200:
        raise InvalidArgument("reason is required (1..200 characters)")
    kind = params.get("type") or None
    error = params.get("error") or None
    if (kind and len(kind) > 300) or (error and len(error) > 1000):
        raise InvalidArgument("type or error is too long")
    return {"reason": reason, "type": kind, "error": error}


async def _group(settings: Settings, g: dict[str, str | None]) -> tuple[dlq.Filters, list[Any]]:
    """The filters that select exactly the group ``g``, and its messages (queue order)."""
    reason, kind, error = g["reason"], g["type"], g["error"]
    assert reason is not None
    wide = dlq.Filters(reasons=(_literal(reason),), types=(_literal(kind),) if kind else ())
    listing = await _leased(lambda: dlq.list_dead_letters(settings, wide))
    members, others = [], 0
    for item in listing.items:
        if item.event_type == kind and dlq.error_pattern(item.error) == error:
            members.append(item)
        else:
            others += 1
    if not others:
        return wide, members
    if len(members) > MAX_KEYS:
        members = members[:MAX_KEYS]
    return dlq.Filters(ids=tuple(m.key for m in members) or ("-",)), members


def _target(form: QueryParams | dict[str, str]) -> tuple[str | None, dict[str, str | None]]:
    """``(key, {})`` for one message, ``(None, group)`` for a group."""
    key = (form.get("key") or "").strip()
    if key:
        if not _IDENT.fullmatch(key):
            raise InvalidArgument("key is not a dead-letter key")
        return key, {}
    return None, _group_params(form)


# --- pages -----------------------------------------------------------------------------


@guarded.get("/ui/dead-letters", response_class=HTMLResponse, include_in_schema=False)
async def groups(request: Request) -> HTMLResponse:
    """The dead letters grouped (reason, type, error pattern); ``?task=`` lists one task's."""
    settings = _settings(request)
    task = (request.query_params.get("task") or "").strip()
    if task:
        try:
            UUID(task)
        except ValueError:
            raise InvalidArgument(f"task {task[:60]!r} is not a task id") from None
        listing = await _leased(
            lambda: dlq.list_dead_letters(settings, dlq.Filters(task=task, limit=SCAN_LIMIT))
        )
        return page(
            request, "dlq_messages.html", title=f"Dead letters of task {task}",
            listing=listing.items, total=listing.total, group=None, task=task,
        )  # fmt: skip
    summary = await _leased(lambda: dlq.summary(settings, limit=SCAN_LIMIT))
    return page(request, "dlq_groups.html", title="Dead letters", summary=summary)


@guarded.get("/ui/dead-letters/group", response_class=HTMLResponse, include_in_schema=False)
async def group(request: Request) -> HTMLResponse:
    """The messages of one group, with its actions (replay, export)."""
    settings = _settings(request)
    g = _group_params(request.query_params)
    _, members = await _group(settings, g)
    return page(
        request, "dlq_messages.html", title=f"Dead letters: {g['reason']}",
        listing=members, total=None, group=g, task=None,
    )  # fmt: skip


@guarded.get("/ui/dead-letters/replay", response_class=HTMLResponse, include_in_schema=False)
async def confirm_replay(request: Request) -> HTMLResponse:
    """Confirmation of a replay: the dry run's preview (what would move, where to)."""
    settings = _settings(request)
    key, g = _target(request.query_params)
    filters = dlq.Filters(ids=(key,)) if key else (await _group(settings, g))[0]
    preview = await _leased(lambda: dlq.replay(settings, filters, dry_run=True))
    return page(
        request, "dlq_confirm.html", title="Replay dead letters?",
        key=key, group=g, preview=preview,
    )  # fmt: skip


@guarded.post("/ui/dead-letters/replay", include_in_schema=False)
async def replay(request: Request) -> Response:
    """Start the confirmed replay (message or group), wait a moment for it, then go to its
    page (the result, or its progress while it runs)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_post(request, form)
    settings = _settings(request)
    key, g = _target(form)
    filters = dlq.Filters(ids=(key,)) if key else (await _group(settings, g))[0]
    actor = _actor(settings)

    async def run(progress: Callable[[dlq.ReplayResult], None]) -> dlq.ReplayResult:
        return await _leased(lambda: dlq.replay(settings, filters, actor=actor, progress=progress))

    registry = jobs_of(request.app)
    job = registry.start({"key": key, "group": g}, run)
    forget_reasons(request)
    await registry.wait(job, REPLAY_WAIT_S)
    return Response(status_code=303, headers={"Location": f"/ui/dead-letters/replays/{job.id}"})


@guarded.get(
    "/ui/dead-letters/replays/{job_id}", response_class=HTMLResponse, include_in_schema=False
)
async def replay_job(request: Request, job_id: str) -> HTMLResponse:
    """A replay's progress (refreshing every second while it runs), then its result."""
    job = jobs_of(request.app).get(job_id)
    if job is None:
        raise HTTPException(404, "no such replay in this API process (it may have restarted)")
    return page(
        request,
        "dlq_result.html",
        title="Replay running" if job.running else "Replay result",
        job=job,
        result=job.result,
        key=job.what.get("key"),
        group=job.what.get("group"),
        refresh=1 if job.running else 0,
    )


@guarded.post("/ui/dead-letters/export", include_in_schema=False)
async def export(request: Request) -> Response:
    """Download a group (or one message) as JSONL (``taskledger dlq export``'s format)."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    check_post(request, form)
    settings = _settings(request)
    key, g = _target(form)
    filters = dlq.Filters(ids=(key,)) if key else (await _group(settings, g))[0]
    with tempfile.TemporaryDirectory(prefix="taskledger-ui-") as tmp:
        out = Path(tmp) / "dead-letters.jsonl"
        await _leased(lambda: dlq.export(settings, filters, out, actor=_actor(settings)))
        body = await asyncio.to_thread(out.read_bytes)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", key or str(g["reason"]))[:60]
    return Response(
        body,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="dead-letters-{name}.jsonl"'},
    )


@guarded.get("/ui/dead-letters/{key}", response_class=HTMLResponse, include_in_schema=False)
async def message(request: Request, key: str) -> HTMLResponse:
    """One dead letter: properties, headers, death history, body (pretty JSON, cut)."""
    if not _IDENT.fullmatch(key):
        raise InvalidArgument("not a dead-letter key")
    settings = _settings(request)
    found = await _leased(lambda: dlq.show(settings, key))
    shown = []
    for detail in found:
        if detail.body_is_json:
            text = orjson.dumps(detail.body, option=orjson.OPT_INDENT_2).decode()
        else:
            text = str(detail.body)
        task_id = None
        try:
            task_id = UUID(detail.subject) if detail.subject else None
        except ValueError:
            task_id = None
        shown.append(
            {
                "d": detail,
                "body": text[:BODY_LIMIT],
                "cut": max(0, len(text) - BODY_LIMIT),
                "headers": orjson.dumps(detail.headers, option=orjson.OPT_INDENT_2).decode(),
                "properties": orjson.dumps(detail.properties, option=orjson.OPT_INDENT_2).decode(),
                "task_id": task_id,
                "group": {
                    "reason": detail.reason,
                    "type": detail.event_type,
                    "error": dlq.error_pattern(detail.error),
                },
            }
        )
    return page(request, "dlq_message.html", title=f"Dead letter {key}", shown=shown)


router.include_router(guarded)
