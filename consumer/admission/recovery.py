"""Recovery that acts: a silent executing task is asked, then re-dispatched or failed.

The plan: after a restart (or any silence) check the agent's status, then resume or
retry. Each step is appended to ``task_recoveries`` (shown on the task's timeline) and
what it sends goes through the outbox in the same transaction:

1. **requested** — the task is silent past ``stale_after_s``: ``task.recovery_requested``
   with the task, the attempt and the last step recorded (routed ``recovery.<type>``).
2. **resumed** — an agent's ``task.started``/``task.step`` for the task arrived after the
   request (or the re-dispatch): the task runs again; nothing else happens.
3. **redispatched** — no answer within ``recovery_timeout_s``: ``dispatch.assigned`` again
   (attempt n+1, trigger ``timeout``, any agent of the type), while the attempts so far
   are fewer than ``recovery_max_attempts``. A re-dispatch nobody starts within
   ``stale_after_s`` is asked again (1.).
4. **failed** — past the limit: ``task.failed`` (source ``taskledger``, cause
   ``agent_lost``) to the events exchange; the audit side records and projects it.

An operator does 3. or 4. by hand (``taskledger recover TASK --redispatch|--fail``, the
API), or asks now (1.), trigger ``manual``. One pass at a time across processes (an
advisory lock); message ids are deterministic, so a pass taken twice sends once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import orjson
from prometheus_client import Counter

from consumer import outbox
from consumer.broker import Names
from consumer.core.errors import InvalidArgument, TaskNotFound
from consumer.core.settings import Settings
from consumer.store.db import q
from contracts import (
    SERVICE_SOURCE,
    AgentType,
    ErrorCause,
    EventType,
    TaskFailed,
    TriggerType,
    make_event,
)

log = logging.getLogger(__name__)

RECOVERY_STEPS = Counter(
    "taskledger_recovery_steps_total",
    "Recovery steps of silent executing tasks, by action and trigger.",
    ["action", "trigger"],
)

Action = Literal["requested", "resumed", "redispatched", "failed"]
ManualAction = Literal["request", "redispatch", "fail"]


@dataclass(frozen=True)
class Step:
    """One recovery step decided for a task."""

    task_id: uuid.UUID
    attempt: int
    action: Action
    trigger: TriggerType | None
    message: outbox.Outgoing | None = None
    details: Mapping[str, Any] | None = None


def decide(row: Mapping[str, Any], settings: Settings) -> Action | None:
    """The next step for one candidate row of ``recovery_candidates`` (pure), or None."""
    action, attempt = row["action"], row["attempt"] or 1
    if action in ("requested", "redispatched") and row["answered"]:
        return "resumed"
    if action == "failed":
        return None
    if action == "requested":
        if row["action_age_s"] < settings.recovery_timeout_s:
            return None
        return "redispatched" if attempt < settings.recovery_max_attempts else "failed"
    if row["stale_seconds"] < settings.stale_after_s:
        return None
    if action == "redispatched" and row["action_age_s"] < settings.stale_after_s:
        return None
    return "requested"


def _last_step(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row["last_step_number"] is None:
        return None
    return {
        "step_number": row["last_step_number"],
        "action": row["last_step_action"],
        "status": row["last_step_status"],
        "at": row["last_step_at"].astimezone(UTC).isoformat(),
    }


def _agent_type(row: Mapping[str, Any]) -> str:
    known = {t.value for t in AgentType}
    return row["agent_type"] if row["agent_type"] in known else AgentType.INFRA.value


def agent_lost(names: Names, row: Mapping[str, Any], attempt: int, why: str) -> outbox.Outgoing:
    """The ``task.failed`` taskledger sends for a task whose agent never answered."""
    started: datetime | None = row["started_at"]
    seconds = int((datetime.now(UTC) - started).total_seconds()) if started else 0
    data = TaskFailed.model_validate(
        {
            "services_touched": [],
            "actual_resources": {"duration_seconds": max(0, seconds), "cpu_time_ms": 0,
                                 "gpu_vram_mb_used": 0, "peak_memory_mb": 0,
                                 "agent_load_pct": 0},
            "outcome": {"success": False, "error_type": "AgentLost",
                        "error_cause": ErrorCause.AGENT_LOST.value,
                        "error_message": why, "last_lines": []},
            "failed_step": row["last_step_number"],
        }
    )  # fmt: skip
    task_id: uuid.UUID = row["task_id"]
    message_id = uuid.uuid5(task_id, "agent_lost")
    body = make_event(
        EventType.TASK_FAILED, data, source=SERVICE_SOURCE, subject=task_id, id=message_id
    )
    return outbox.Outgoing(
        message_id=message_id,
        exchange=names.events,
        routing_key=EventType.TASK_FAILED.value,
        event_type=EventType.TASK_FAILED,
        task_id=task_id,
        body=body,
    )


def build(
    names: Names, row: Mapping[str, Any], action: Action, trigger: TriggerType | None
) -> Step:
    """The step ``action`` for the candidate ``row``, with the message it sends."""
    task_id: uuid.UUID = row["task_id"]
    attempt: int = row["attempt"] or 1
    if action == "resumed":
        return Step(task_id, attempt, action, None)
    if action == "requested":
        message = outbox.recovery_requested(
            names,
            task_id=task_id,
            agent_id=row["agent_id"],
            agent_type=row["agent_type"],
            last_event_at=row["silent_since"],
            stale_seconds=row["stale_seconds"],
            attempt=attempt,
            last_step=_last_step(row),
            n=int(row["requests"]) + 1,
        )
        return Step(task_id, attempt, action, trigger, message)
    if action == "redispatched":
        plan = row["work_plan"] or {"request_text": row["request_text"], **(row["plan"] or {})}
        message = outbox.dispatch_assigned(
            names,
            task_id=task_id,
            agent_type=_agent_type(row),
            agent_id=None,
            work_plan=plan,
            trigger=trigger or TriggerType.TIMEOUT,
            n=attempt + 1,
        )
        return Step(task_id, attempt + 1, action, trigger, message, {"previous": row["agent_id"]})
    why = (
        f"agent {row['agent_id'] or '?'} lost: no answer to recovery after attempt {attempt}"
        if trigger != TriggerType.MANUAL
        else f"failed by an operator after attempt {attempt} (agent {row['agent_id'] or '?'})"
    )
    return Step(task_id, attempt, action, trigger, agent_lost(names, row, attempt, why))


async def _apply(conn: asyncpg.Connection, steps: list[Step], actor: str | None) -> None:
    messages = [s.message for s in steps if s.message is not None]
    if messages:
        await outbox.enqueue(conn, messages)
    await conn.execute(
        q("recovery_record"),
        [s.task_id for s in steps],
        [s.attempt for s in steps],
        [s.action for s in steps],
        [s.trigger.value if s.trigger else None for s in steps],
        [s.message.message_id if s.message else None for s in steps],
        [actor] * len(steps),
        [orjson.dumps(s.details).decode() if s.details else None for s in steps],
    )
    for s in steps:
        trigger = s.trigger.value if s.trigger else "answer"
        RECOVERY_STEPS.labels(s.action, trigger).inc()
        log.info(
            "task recovery: %s (attempt %d)",
            s.action,
            s.attempt,
            extra={"action": f"recovery_{s.action}", "task_id": str(s.task_id)},
        )


async def recover(
    conn: asyncpg.Connection, names: Names, settings: Settings, limit: int = 500
) -> list[Step]:
    """One policy pass inside the caller's transaction; returns the steps taken."""
    if not await conn.fetchval(q("recovery_lock")):
        return []
    rows = await conn.fetch(q("recovery_candidates"), settings.stale_after_s, limit, None)
    steps: list[Step] = []
    for row in rows:
        action = decide(row, settings)
        if action is not None:
            trigger = None if action == "resumed" else TriggerType.TIMEOUT
            steps.append(build(names, row, action, trigger))
    if steps:
        await _apply(conn, steps, None)
    return steps


async def recover_by_hand(
    conn: asyncpg.Connection, names: Names, task_id: uuid.UUID, what: ManualAction, actor: str
) -> Step:
    """An operator's recovery step for one executing task (trigger ``manual``).

    Raises :class:`TaskNotFound` (no such task) or :class:`InvalidArgument` (not executing,
    or already failed by recovery).
    """
    await conn.execute(q("recovery_lock_wait"))
    rows = await conn.fetch(q("recovery_candidates"), 0.0, 1, task_id)
    if not rows:
        status = await conn.fetchval(q("recovery_task_status"), task_id)
        if status is None:
            raise TaskNotFound(f"no task {task_id} is recorded")
        raise InvalidArgument(f"task {task_id} is {status}: only executing tasks recover")
    row = rows[0]
    if row["action"] == "failed":
        raise InvalidArgument(f"task {task_id} was already failed by recovery")
    action: Action = {"request": "requested", "redispatch": "redispatched", "fail": "failed"}[what]  # type: ignore[assignment]
    step = build(names, row, action, TriggerType.MANUAL)
    await _apply(conn, [step], actor)
    return step
