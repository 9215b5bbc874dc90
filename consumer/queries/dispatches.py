"""What happened to each dispatch request: the ``audit dispatches`` query (CLI and API).

One line per task with a ``dispatch.requested`` in the ledger, newest request first,
with its state and latest decision from ``pause_history`` (statement ``audit_dispatches``
in ``consumer/store/sql/queries.sql``): waiting, assigned (agent and trigger: immediate,
capacity, timeout, manual), cancelled, or requested (no decision recorded). Paged by
keyset on (requested_at, task_id), with the cursor format of the task lists.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final, Literal

import asyncpg

from consumer.core.errors import InvalidArgument
from consumer.queries.filters import DEFAULT_PAGE, MAX_PAGE, decode_cursor, encode_cursor
from consumer.queries.models import DispatchEntry, DispatchPage
from consumer.queries.reads import _read
from consumer.store.db import q

__all__ = [
    "AGENT_MAX",
    "AGENT_PATTERN",
    "DISPATCH_STATES",
    "DispatchState",
    "check_agent",
    "dispatches",
]

#: The states ``--status`` / ``status=`` filter on.
DispatchState = Literal["waiting", "assigned", "cancelled", "requested"]
DISPATCH_STATES: Final = ("waiting", "assigned", "cancelled", "requested")
#: Longest agent id accepted as a filter.
AGENT_MAX: Final = 200
_BLANKS = (
    "\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029"
    "\\u202f\\u205f\\u3000\\ufeff"
)
#: An agent id filter as a JSON Schema (and Python) pattern: no NUL, not only whitespace.
AGENT_PATTERN: Final = "^[^\\x00]*[^\\x00" + _BLANKS + "][^\\x00]*$"
_AGENT = re.compile(AGENT_PATTERN)


def check_agent(agent: str | None) -> str | None:
    """``agent`` as given (None: any); raises :class:`InvalidArgument` for an empty,
    overlong or NUL-bearing agent id."""
    if agent is None:
        return None
    if len(agent) > AGENT_MAX or not _AGENT.fullmatch(agent):
        raise InvalidArgument(
            f"agent {agent[:40]!r} is not valid: 1 to {AGENT_MAX} characters, no NUL, not blank"
        )
    return agent


async def dispatches(
    pool: asyncpg.Pool,
    *,
    status: str | None = None,
    agent: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
) -> DispatchPage:
    """Return one page of dispatch requests, newest first, with what became of each.

    ``status`` one of :data:`DISPATCH_STATES` (None: any); ``agent`` the agent assigned;
    ``since`` requested at or after. Raises :class:`InvalidArgument` for a bad status,
    agent, limit or cursor, :class:`DatabaseUnavailable`.
    """
    if status is not None and status not in DISPATCH_STATES:
        raise InvalidArgument(f"status {status[:40]!r} is not one of {', '.join(DISPATCH_STATES)}")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be 1 to {MAX_PAGE}")
    after_at, after_task = decode_cursor(cursor) if cursor else (None, None)
    args = (status, check_agent(agent), since, after_at, after_task, limit + 1)
    (records,) = await _read(pool, (q("audit_dispatches"), args))
    items = [DispatchEntry.model_validate(dict(r.items())) for r in records[:limit]]
    more = len(records) > limit and items
    last = items[-1] if items else None
    next_cursor = encode_cursor(last.requested_at, last.task_id) if more and last else None
    return DispatchPage(items=items, next_cursor=next_cursor)
