"""Outbox messages: what a decision writes into the ``outbox`` table, in its transaction.

A handler builds an :class:`Outgoing` (``dispatch.assigned`` for a release,
``task.recovery_requested`` for stale work) and :func:`enqueue` inserts it in the same
transaction as the decision; the relay (:mod:`consumer.outbox.relay`) publishes after
commit. Message ids are deterministic, so a decision taken twice writes one row and a
re-publish carries the same CloudEvents ``id``.

Wake-up: :func:`enqueue` also issues ``NOTIFY`` on :data:`NOTIFY_CHANNEL`, which
PostgreSQL delivers only when the writing transaction commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from consumer.broker import Names
from consumer.store.db import q
from contracts import (
    SERVICE_SOURCE,
    AgentType,
    DispatchAssigned,
    EventType,
    TaskRecoveryRequested,
    TriggerType,
    make_event,
)

#: AMQP ``content_type`` of everything taskledger sends: CloudEvents structured mode, so
#: a reader that auto-detects the mode (the CloudEvents SDKs) reads the body as the event.
CONTENT_TYPE = "application/cloudevents+json"

#: PostgreSQL NOTIFY channel that wakes the relays after a commit that wrote rows.
NOTIFY_CHANNEL = "taskledger_outbox"

#: Namespace of the deterministic ``dispatch.assigned`` ids: uuid5(namespace, "<task>:<n>").
DISPATCH_NAMESPACE = uuid.UUID("5d2f4c3e-8a61-4f0b-9c57-2b7e1d9a0c44")


@dataclass(frozen=True)
class Outgoing:
    """One message to put in the outbox."""

    message_id: uuid.UUID
    exchange: str
    routing_key: str
    event_type: EventType
    task_id: uuid.UUID | None
    body: bytes


def dispatch_message_id(task_id: uuid.UUID, n: int = 1) -> uuid.UUID:
    """The CloudEvents id of the ``n``-th dispatch of a task (deterministic).

    In contract v1 a task is dispatched at most once (a dispatch request is handled once
    per task), so ``n`` is 1; the number keeps ids distinct should re-dispatch come.
    """
    return uuid.uuid5(DISPATCH_NAMESPACE, f"{task_id}:{n}")


def dispatch_routing_key(agent_type: str, agent_id: str | None) -> str:
    """``dispatch.<agent_type>.<agent_id>``, or ``dispatch.<agent_type>.any`` with no agent."""
    return f"dispatch.{agent_type}.{agent_id or 'any'}"


def dispatch_assigned(
    names: Names,
    *,
    task_id: uuid.UUID,
    agent_type: str,
    agent_id: str | None,
    work_plan: Mapping[str, Any],
    trigger: TriggerType,
    n: int = 1,
) -> Outgoing:
    """Build the ``dispatch.assigned`` message of a release (source ``taskledger``).

    Raises:
        ValueError: the trigger is not a dispatch trigger, or the payload is invalid.
    """
    message_id = dispatch_message_id(task_id, n)
    data = DispatchAssigned(
        task_id=task_id, agent_id=agent_id, work_plan=dict(work_plan), trigger=trigger
    )
    body = make_event(EventType.DISPATCH_ASSIGNED, data, source=SERVICE_SOURCE, id=message_id)
    return Outgoing(
        message_id=message_id,
        exchange=names.dispatch,
        routing_key=dispatch_routing_key(agent_type, agent_id),
        event_type=EventType.DISPATCH_ASSIGNED,
        task_id=task_id,
        body=body,
    )


def recovery_message_id(task_id: uuid.UUID, n: int = 1) -> uuid.UUID:
    """The CloudEvents id of a task's ``n``-th ``task.recovery_requested`` (the first is
    ``uuid5(task_id, "recovery")``, later ones ``uuid5(task_id, "recovery:<n>")``)."""
    return uuid.uuid5(task_id, "recovery" if n == 1 else f"recovery:{n}")


def recovery_requested(
    names: Names,
    *,
    task_id: uuid.UUID,
    agent_id: str | None,
    agent_type: str | None,
    last_event_at: datetime,
    stale_seconds: float,
    attempt: int = 1,
    last_step: Mapping[str, Any] | None = None,
    n: int = 1,
) -> Outgoing:
    """Build the ``task.recovery_requested`` message of a stale task.

    Routed ``recovery.<agent_type>`` (``recovery.any`` when the type is unknown).

    Raises:
        ValueError: the payload is invalid.
    """
    message_id = recovery_message_id(task_id, n)
    known_type = agent_type if agent_type in {t.value for t in AgentType} else None
    data = TaskRecoveryRequested(
        task_id=task_id,
        agent_id=agent_id,
        agent_type=AgentType(known_type) if known_type else None,
        last_event_at=last_event_at,
        stale_seconds=max(0.0, float(stale_seconds)),
        attempt=attempt,
        last_step=dict(last_step) if last_step else None,
    )
    body = make_event(EventType.TASK_RECOVERY_REQUESTED, data, source=SERVICE_SOURCE, id=message_id)
    return Outgoing(
        message_id=message_id,
        exchange=names.dispatch,
        routing_key=f"recovery.{known_type or 'any'}",
        event_type=EventType.TASK_RECOVERY_REQUESTED,
        task_id=task_id,
        body=body,
    )


async def enqueue(conn: asyncpg.Connection, messages: Sequence[Outgoing]) -> list[uuid.UUID]:
    """Insert ``messages`` into the outbox inside the caller's transaction.

    A message id already in the outbox is skipped (the id is the message's identity).
    When anything was inserted, the relays are notified at commit. Returns the ids that
    were new.
    """
    if not messages:
        return []
    rows = await conn.fetch(
        q("outbox_insert"),
        [m.message_id for m in messages],
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.event_type.value for m in messages],
        [m.task_id for m in messages],
        [m.body for m in messages],
    )
    if rows:
        await conn.execute(q("outbox_notify"), NOTIFY_CHANNEL)
    return [r["message_id"] for r in rows]
