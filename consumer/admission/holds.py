"""Operator holds: applying ``control.pause`` and ``control.resume`` (with ``force``).

``control.pause`` puts a hold (``all``, or ``task:<id>``) and marks the entries it
covers ``manual_pause``; ``control.resume`` lifts it and re-admits those entries by
normal admission (trigger ``manual``; those that do not fit wait for capacity).
``force`` (scope task) also dispatches that task's waiting entry now, to a usable agent
with room if there is one, else to ``dispatch.<agent_type>.any`` with no agent. A force
for a task that does not wait dispatches nothing; it is recorded as the ``unheld``
history row of the resume, with ``details.waiting = false``.

Everything runs inside the runner's transaction, called by
:class:`consumer.admission.handler.CapacityHandler`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from consumer.admission.policy import Policy, always, hold_key, requirements
from consumer.admission.release import History, admit_waiting, append_history, dispatch_entries
from consumer.store.db import q
from contracts import ControlPause, ControlResume, ControlScope, Event, PauseReason, TriggerType

log = logging.getLogger(__name__)


async def unhold(conn: asyncpg.Connection, task_id: uuid.UUID | None) -> list[asyncpg.Record]:
    """Re-mark entries after holds changed; returns those no longer held."""
    changed = await conn.fetch(q("capacity_apply_holds"), task_id)
    return [r for r in changed if r["new_reason"] == PauseReason.INSUFFICIENT_CAPACITY]


async def apply_pause(conn: asyncpg.Connection, event: Event) -> None:
    """Apply a ``control.pause``: put the hold, mark the entries it covers, record history."""
    data = event.payload(ControlPause)
    key = hold_key(data.scope, data.task_id)
    await conn.execute(
        q("capacity_upsert_hold"),
        key,
        data.scope.value,
        data.task_id,
        data.reason,
        data.resume_after,
        event.id,
    )
    changed = await conn.fetch(q("capacity_apply_holds"), data.task_id)
    held = [r for r in changed if r["new_reason"] == PauseReason.MANUAL_PAUSE]
    details = {
        "scope": data.scope.value,
        "reason": data.reason,
        "resume_after": data.resume_after,
        "entries": len(held),
    }
    rows = [
        History(
            data.task_id,
            "held",
            reason=PauseReason.MANUAL_PAUSE.value,
            trigger=TriggerType.MANUAL,
            event_id=event.id,
            details=details,
        )
    ]
    if data.scope is ControlScope.ALL:
        rows += [
            History(
                r["task_id"],
                "held",
                reason=PauseReason.MANUAL_PAUSE.value,
                trigger=TriggerType.MANUAL,
                event_id=event.id,
                details={"scope": "all", "hold": key},
            )
            for r in held
        ]
    await append_history(conn, rows)
    log.info(
        "dispatch held",
        extra={"action": "hold", "hold": key, "entries": len(held), "event_id": str(event.id)},
    )


async def apply_resume(conn: asyncpg.Connection, policy: Policy, event: Event) -> None:
    """Apply a ``control.resume``: lift the hold, re-admit (or force) what it held."""
    data = event.payload(ControlResume)
    key = hold_key(data.scope, data.task_id)
    lifted = await conn.fetchrow(q("capacity_delete_hold"), key)
    unheld = await unhold(conn, data.task_id)
    entry = None
    if data.force:  # the contract allows force with scope task only
        entry = await conn.fetchrow(q("capacity_take_entry"), data.task_id)
    details: dict[str, Any] = {
        "scope": data.scope.value,
        "lifted": lifted is not None,
        "entries": len(unheld),
        "force": data.force,
    }
    if data.force:
        details["waiting"] = entry is not None
    rows = [
        History(
            data.task_id,
            "unheld",
            trigger=TriggerType.MANUAL,
            event_id=event.id,
            details=details,
        )
    ]
    if data.scope is ControlScope.ALL:
        rows += [
            History(
                r["task_id"],
                "unheld",
                trigger=TriggerType.MANUAL,
                event_id=event.id,
                details={"scope": "all"},
            )
            for r in unheld
        ]
    await append_history(conn, rows)
    if not data.force:
        dispatched = await admit_waiting(
            conn,
            policy,
            trigger_for=always(TriggerType.MANUAL),
            event_id=event.id,
            agent_types={r["agent_type"] for r in unheld},
            task_ids=[r["task_id"] for r in unheld],
        )
    elif entry is not None:
        dispatched = await force(conn, policy, event, entry)
    else:
        dispatched = 0
        log.warning(
            "force for a task that does not wait: nothing dispatched",
            extra={"action": "force_not_waiting", "task_id": str(data.task_id)},
        )
    log.info(
        "dispatch resumed",
        extra={
            "action": "force" if data.force else "resume",
            "hold": key,
            "entries": len(unheld),
            "dispatched": dispatched,
            "event_id": str(event.id),
        },
    )


async def force(
    conn: asyncpg.Connection, policy: Policy, event: Event, entry: Mapping[str, Any]
) -> int:
    """Dispatch a task's entry (already taken out) now, capacity or not; returns 1."""
    gpu, cpu, mem = requirements(entry)
    agent = await conn.fetchrow(
        q("capacity_pick_agent"),
        entry["agent_type"],
        policy.threshold_pct,
        policy.freshness_s,
        gpu,
        cpu,
        mem,
    )
    return await dispatch_entries(
        conn,
        policy,
        [entry],
        agent_type=entry["agent_type"],
        agent_id=agent["agent_id"] if agent is not None else None,
        trigger_for=always(TriggerType.MANUAL),
        event_id=event.id,
        delete=False,
        details={"forced": True},
    )
