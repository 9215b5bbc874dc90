"""``recover``: an operator's recovery step for a silent executing task.

Ask the agent now (``request``), re-dispatch (``redispatch``: attempt n+1) or fail the
task as ``agent_lost`` (``fail``), trigger ``manual``: the step is appended to
``task_recoveries``, its message queued in the outbox (the capacity service's relay
publishes it) and the action recorded in ``operator_actions``, in one transaction.
Shared by ``taskledger recover`` and ``POST /api/v1/tasks/{task_id}/recover``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from consumer.admission import recovery
from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.operations.actions import record_action
from consumer.store import db

__all__ = ["recover_task"]


async def recover_task(
    pool: asyncpg.Pool,
    settings: Settings,
    task_id: UUID,
    what: recovery.ManualAction,
    actor: str,
) -> dict[str, Any]:
    """Take the recovery step ``what`` for ``task_id`` by hand; returns what was done.

    Raises :class:`TaskNotFound`, :class:`InvalidArgument` (the task is not executing, or
    recovery already failed it) or :class:`DatabaseUnavailable`.
    """
    async with db.transaction(pool) as conn:
        step = await recovery.recover_by_hand(conn, Names(settings.prefix), task_id, what, actor)
        message_id = step.message.message_id if step.message else None
        result = {
            "task_id": str(task_id),
            "action": step.action,
            "attempt": step.attempt,
            "message_id": str(message_id) if message_id else None,
            "message_type": step.message.event_type.value if step.message else None,
        }
        await record_action(conn, "recover", actor, {"task_id": str(task_id), "what": what}, result)
    return result
