"""Releasing pause-queue entries: to one agent, to every usable agent, and their history.

A release deletes the entries, reserves what they need on the agent, writes their
``dispatch.assigned`` into the outbox and appends ``pause_history``, all in the
caller's transaction (the relay publishes after commit). Entries are taken most urgent
first, then oldest, first fit (an entry too large for what is left is passed over, not
waited for), ``FOR UPDATE SKIP LOCKED``, so concurrent releases take disjoint entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import asyncpg
import orjson

from consumer.admission.policy import (
    CLAIM_CHUNK,
    RELEASE_LIMIT,
    Policy,
    Room,
    TriggerFor,
    requirements,
)
from consumer.core.metrics import RELEASED, WAIT_SECONDS
from consumer.outbox.messages import Outgoing, dispatch_assigned, enqueue
from consumer.store.db import q
from contracts import TriggerType

#: ``pause_history`` trigger of an entry whose task ended while it waited (not on the wire).
CANCELLED: Final = "cancelled"


@dataclass
class History:
    """One ``pause_history`` row to append."""

    task_id: uuid.UUID | None
    action: str
    reason: str | None = None
    trigger: TriggerType | Literal["cancelled"] | None = None
    agent_id: str | None = None
    event_id: uuid.UUID | None = None
    details: dict[str, Any] = field(default_factory=dict)


async def append_history(conn: asyncpg.Connection, rows: Sequence[History]) -> None:
    """Append ``rows`` to ``pause_history`` in one statement (inside the caller's transaction)."""
    if not rows:
        return
    await conn.execute(
        q("capacity_insert_history"),
        [r.task_id for r in rows],
        [r.action for r in rows],
        [r.reason for r in rows],
        [str(r.trigger) if r.trigger else None for r in rows],
        [r.agent_id for r in rows],
        [r.event_id for r in rows],
        [orjson.dumps(r.details, default=str).decode() for r in rows],
    )


async def dispatch_entries(
    conn: asyncpg.Connection,
    policy: Policy,
    entries: Sequence[Mapping[str, Any]],
    *,
    agent_type: str,
    agent_id: str | None,
    trigger_for: TriggerFor,
    event_id: uuid.UUID | None,
    delete: bool = True,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Release ``entries`` to one agent (or to none): delete, reserve, outbox, history.

    Runs inside the caller's transaction; the entries must be locked (or already
    deleted, ``delete=False``) by it. Returns how many were released.
    """
    if not entries:
        return 0
    if delete:
        await conn.execute(q("capacity_delete_entries"), [e["id"] for e in entries])
    if agent_id is not None:
        gpu = sum(requirements(e)[0] for e in entries)
        cpu = sum(requirements(e)[1] for e in entries)
        mem = sum(requirements(e)[2] for e in entries)
        await conn.execute(q("capacity_reserve"), agent_id, gpu, cpu, mem)
    now = datetime.now(UTC)
    messages: list[Outgoing] = []
    history: list[History] = []
    for entry in entries:
        trigger = trigger_for(entry)
        message = dispatch_assigned(
            policy.names,
            task_id=entry["task_id"],
            agent_type=agent_type,
            agent_id=agent_id,
            work_plan=entry["work_plan_json"],
            trigger=trigger,
        )
        messages.append(message)
        waited = max(0.0, (now - entry["paused_at"]).total_seconds())
        history.append(
            History(
                task_id=entry["task_id"],
                action="released",
                reason=entry["reason"],
                trigger=trigger,
                agent_id=agent_id,
                event_id=event_id,
                details={
                    "message_id": str(message.message_id),
                    "waited_s": round(waited, 3),
                    "priority": entry["priority"],
                    **(details or {}),
                },
            )
        )
        RELEASED.labels(trigger.value).inc()
        WAIT_SECONDS.observe(waited)
    await enqueue(conn, messages)
    await append_history(conn, history)
    return len(entries)


async def release_to_agent(
    conn: asyncpg.Connection,
    policy: Policy,
    agent: Mapping[str, Any],
    *,
    trigger_for: TriggerFor,
    event_id: uuid.UUID | None,
    task_ids: Sequence[uuid.UUID] | None = None,
    limit: int = RELEASE_LIMIT,
) -> int:
    """Release the waiting entries that fit what ``agent`` (a locked row) has left.

    Most urgent first, then oldest, first fit; only among ``task_ids`` when given; at
    most ``limit``. Candidates are locked ``FOR UPDATE SKIP LOCKED`` a chunk at a time
    (only entries that fit what is left at that moment), so concurrent releases take
    disjoint entries and few rows are locked without being released. Returns how many
    were released.
    """
    room = Room.of(agent)
    seen: list[int] = []
    taken: list[asyncpg.Record] = []
    while len(taken) < limit:
        want = min(CLAIM_CHUNK, limit - len(taken))
        chunk = await conn.fetch(
            q("capacity_release_candidates"),
            agent["agent_type"],
            room.gpu_vram_mb,
            room.cpu_cores,
            room.memory_mb,
            want,
            list(task_ids) if task_ids is not None else None,
            seen,
        )
        seen += [c["id"] for c in chunk]
        taken += [c for c in chunk if room.take(c)]
        if len(chunk) < want:
            break
    return await dispatch_entries(
        conn,
        policy,
        taken,
        agent_type=agent["agent_type"],
        agent_id=agent["agent_id"],
        trigger_for=trigger_for,
        event_id=event_id,
    )


async def admit_waiting(
    conn: asyncpg.Connection,
    policy: Policy,
    *,
    trigger_for: TriggerFor,
    event_id: uuid.UUID | None = None,
    agent_types: Iterable[str] | None = None,
    task_ids: Sequence[uuid.UUID] | None = None,
) -> int:
    """Release waiting entries (optionally only ``task_ids``) to every usable agent with room.

    Agents another transaction holds are skipped (their own report releases for them).
    Returns how many were released.
    """
    types = sorted(set(agent_types)) if agent_types is not None else None
    if types == [] or task_ids == []:
        return 0
    agents = await conn.fetch(
        q("capacity_usable_agents"),
        types,
        policy.threshold_pct,
        policy.freshness_s,
        list(task_ids) if task_ids is not None else None,
    )
    released = 0
    for agent in agents:
        released += await release_to_agent(
            conn, policy, agent, trigger_for=trigger_for, event_id=event_id, task_ids=task_ids
        )
        if task_ids is not None and released >= len(task_ids):
            break
    return released
