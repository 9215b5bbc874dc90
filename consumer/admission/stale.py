"""Stale work: tasks stuck in ``executing`` with no event for too long.

A task is stale when its status is ``executing`` and its newest ledger event (by the
event's own ``time``; without any, the row's ``updated_at``) is older than the limit
(``settings.stale_after_s``, default 15 minutes). Each stale task is announced once,
ever, with ``task.recovery_requested`` through the outbox: the message id is
``uuid5(task_id, "recovery")`` and the outbox keeps one row per message id.

The query (``stale_executing``) and the model (:class:`~consumer.queries.models.StaleTask`)
are those of ``taskledger audit stale``.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from prometheus_client import Counter

from consumer import outbox
from consumer.broker import Names
from consumer.queries.models import StaleTask
from consumer.store.db import q

log = logging.getLogger(__name__)

RECOVERY_ANNOUNCED = Counter(
    "taskledger_recovery_requested_total",
    "Stale executing tasks announced with task.recovery_requested (once per task).",
)


async def find_stale(
    conn: asyncpg.Connection, older_than_s: float, limit: int = 1000
) -> list[StaleTask]:
    """Return executing tasks silent for more than ``older_than_s`` seconds.

    Most silent first, at most ``limit``. Raises asyncpg errors as they come (wrap the
    call in :func:`consumer.store.db.translate_errors` or use :func:`consumer.store.db.transaction`).
    """
    rows = await conn.fetch(q("stale_executing"), float(older_than_s), limit)
    return [StaleTask.model_validate(dict(r.items())) for r in rows]


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
