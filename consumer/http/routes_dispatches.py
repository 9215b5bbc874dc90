"""``GET /api/v1/dispatches``: what happened to each dispatch request (issue 14, item 6).

Newest request first, one page at a time (keyset, the cursor format of the task lists),
filtered by state, assigned agent and request time; the query is
:func:`consumer.queries.dispatches.dispatches`, the same as ``taskledger audit dispatches``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import WithJsonSchema

from consumer.core.errors import InvalidArgument
from consumer.http.routes import CURSOR_SCHEMA, TimeParam
from consumer.http.schemas import READ_ERRORS
from consumer.queries.dispatches import AGENT_MAX, AGENT_PATTERN, dispatches
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE
from consumer.queries.models import DispatchPage
from consumer.queries.times import parse_time

__all__ = ["router"]

#: An agent id filter: 1 to 200 characters, no NUL, not only whitespace.
AGENT_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": AGENT_MAX,
    "pattern": AGENT_PATTERN,
}


def _pool(request: Request) -> Any:
    return request.app.state.pool


router = APIRouter(prefix="/api/v1")


@router.get("/dispatches", response_model=DispatchPage, responses=READ_ERRORS, tags=["audit"])
async def list_dispatches(
    pool: Annotated[Any, Depends(_pool)],
    status: Annotated[
        Literal["waiting", "assigned", "cancelled", "requested"] | None,
        Query(description="waiting (paused), assigned (to an agent), cancelled, requested."),
    ] = None,
    agent: Annotated[
        str | None,
        Query(max_length=AGENT_MAX, description="Assigned to this agent id."),
        WithJsonSchema(AGENT_SCHEMA),
    ] = None,
    since: TimeParam = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[
        str | None,
        Query(max_length=400, description="next_cursor of the previous page."),
        WithJsonSchema(CURSOR_SCHEMA),
    ] = None,
) -> DispatchPage:
    """Dispatch requests, newest first, with what became of each: waiting (and why),
    assigned (agent and trigger: immediate, capacity, timeout, manual) or cancelled."""
    if cursor == "":
        raise InvalidArgument("cursor is empty: leave it out for the first page")
    return await dispatches(
        pool,
        status=status,
        agent=agent,
        since=parse_time(since, name="since", strict=True),
        limit=limit,
        cursor=cursor,
    )
