"""Stale work: tasks stuck in ``executing`` with no event for too long.

A task is stale when its status is ``executing`` and its newest ledger event (by the
event's own ``time``; without any, the row's ``updated_at``) is older than the limit
(``settings.stale_after_s``, default 15 minutes). Each stale task is announced once,
ever, with ``task.recovery_requested`` through the outbox: the message id is
``uuid5(task_id, "recovery")`` and the outbox keeps one row per message id.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from prometheus_client import Counter

from consumer import outbox
from consumer.broker import Names
from consumer.db import q

log = logging.getLogger(__name__)

RECOVERY_ANNOUNCED = Counter(
    "taskledger_recovery_requested_total",
    "Stale executing tasks announced with task.recovery_requested (once per task).",
)


@dataclass(frozen=True)
class StaleTask:
    """An executing task that has been silent longer than the limit."""

    task_id: uuid.UUID
    agent_id: str | None
    agent_type: str | None
    started_at: datetime | None
    #: Time of its newest ledger event; None if the ledger holds none for it.
    last_event_at: datetime | None
    #: ``last_event_at``, or the row's ``updated_at`` when there is no ledger event.
    silent_since: datetime
    stale_seconds: float


async def find_stale(
    conn: asyncpg.Connection, older_than_s: float, limit: int = 1000
) -> list[StaleTask]:
    """Return executing tasks silent for more than ``older_than_s`` seconds.

    Most silent first, at most ``limit``. Raises asyncpg errors as they come (wrap the
    call in :func:`consumer.db.translate_errors` or use :func:`consumer.db.transaction`).
    """
    rows = await conn.fetch(q("stale_executing"), float(older_than_s), limit)
    return [
        StaleTask(
            task_id=r["task_id"],
            agent_id=r["agent_id"],
            agent_type=r["agent_type"],
            started_at=r["started_at"],
            last_event_at=r["last_event_at"],
            silent_since=r["silent_since"],
            stale_seconds=float(r["stale_seconds"]),
        )
        for r in rows
    ]


async def announce_stale(
    conn: asyncpg.Connection, names: Names, older_than_s: float, limit: int = 500
) -> list[uuid.UUID]:
    """Queue ``task.recovery_requested`` for stale tasks not announced before.

    Runs inside the caller's transaction; the relay publishes the messages to
    ``<prefix>.dispatch`` with routing key ``recovery.<agent_type>``. Returns the ids of
    the tasks announced now.
    """
    stale = await find_stale(conn, older_than_s, limit)
    if not stale:
        return []
    ids = {outbox.recovery_message_id(s.task_id): s for s in stale}
    known = {r["message_id"] for r in await conn.fetch(q("outbox_existing_ids"), list(ids))}
    messages = [
        outbox.recovery_requested(
            names,
            task_id=s.task_id,
            agent_id=s.agent_id,
            agent_type=s.agent_type,
            last_event_at=s.silent_since,
            stale_seconds=s.stale_seconds,
        )
        for message_id, s in ids.items()
        if message_id not in known
    ]
    new = set(await outbox.enqueue(conn, messages))
    announced = [ids[m].task_id for m in ids if m in new]
    for task_id in announced:
        log.info(
            "stale task announced for recovery",
            extra={"action": "recovery_requested", "task_id": str(task_id)},
        )
    RECOVERY_ANNOUNCED.inc(len(announced))
    return announced
