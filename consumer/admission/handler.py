"""The capacity handler: applies ``capacity.reported``, ``dispatch.requested``, ``control.*``.

It consumes ``<prefix>.capacity`` through the generic runner, which records each event
in the ledger once and calls :meth:`CapacityHandler.apply` with the new ones inside its
transaction. Every decision writes its ``dispatch.assigned`` into the outbox in that
same transaction (:mod:`consumer.outbox`); the relay publishes after commit.

Rules (DESIGN §4 "Capacity handler"):

- A report older than the stored one (by event time) changes nothing. A report of a
  usable agent releases, in its transaction, the waiting entries of the agent's type
  that fit what it has left (:func:`~consumer.admission.release.release_to_agent`), at
  most :data:`~consumer.admission.policy.RELEASE_LIMIT`. Entries held by an operator
  (``manual_pause``) are not released by capacity.
- A dispatch request is admitted at once (trigger ``immediate``) when a usable agent of
  its type has room for ``required``, no hold applies and ``not_before`` has passed; the
  agent with the most memory left wins (then the smallest ``agent_id``). Otherwise it
  waits in ``pause_queue``, once per task: reason ``manual_pause`` when a hold applies,
  else ``insufficient_capacity`` (also when only ``not_before`` holds it back). A task
  whose dispatch is already in the outbox is not admitted again. An immediate admission
  is recorded in ``pause_history`` too (action ``released``, trigger ``immediate``, the
  agent), so every dispatch decision is on the task's timeline.
- ``control.pause`` / ``control.resume``: :mod:`consumer.admission.holds`.
- Background: the outbox relay and the timers (:mod:`consumer.admission.timers`).

Several handler processes may run at once: entries are claimed with ``SKIP LOCKED``,
agents that a batch reports on are locked in ``agent_id`` order, and the runner's
ledger insert serialises the events of one task with advisory locks. A deadlock that
still happens (a control statement waiting on entries another batch holds) is turned
into :class:`DatabaseUnavailable`, so the runner retries the batch as is.

Metrics (:mod:`consumer.core.metrics`) are counted when a decision is made inside the
transaction: a batch rolled back and retried counts twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import asyncpg

from consumer.admission import holds, timers
from consumer.admission.policy import Policy, always
from consumer.admission.release import History, append_history, release_to_agent
from consumer.broker import Names
from consumer.core.errors import DatabaseUnavailable
from consumer.core.metrics import ADMITTED, PAUSED, RELEASE_LATENCY, REPORTS_SUPERSEDED
from consumer.core.settings import Settings, get_settings
from consumer.outbox.messages import dispatch_assigned, dispatch_message_id, enqueue
from consumer.outbox.relay import OutboxRelay
from consumer.runtime.handler import ServiceContext
from consumer.store.db import q
from contracts import (
    CapacityReported,
    DispatchRequested,
    Event,
    EventType,
    PauseReason,
    TriggerType,
)

log = logging.getLogger(__name__)

#: The event types this handler applies (others are logged and ignored).
HANDLED_TYPES = frozenset(
    {
        EventType.DISPATCH_REQUESTED,
        EventType.CAPACITY_REPORTED,
        EventType.CONTROL_PAUSE,
        EventType.CONTROL_RESUME,
    }
)


class CapacityHandler:
    """Admission and the pause queue; hosted by the runner on ``<prefix>.capacity``."""

    name = "capacity"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        """``settings`` default to the service's (given to :meth:`background`), else the
        environment's. ``before_publish`` is handed to the outbox relay (tests only, see
        :mod:`consumer.runtime.faults`)."""
        self._settings = settings
        self._before_publish = before_publish
        self._policy = Policy.from_settings(settings) if settings is not None else None

    @property
    def settings(self) -> Settings:
        """The settings the handler decides with."""
        if self._settings is None:
            self._adopt(get_settings())
        assert self._settings is not None
        return self._settings

    @property
    def policy(self) -> Policy:
        """Freshness, threshold and names, from :attr:`settings`."""
        if self._policy is None:
            self._policy = Policy.from_settings(self.settings)
        return self._policy

    def _adopt(self, settings: Settings) -> None:
        self._settings = settings
        self._policy = Policy.from_settings(settings)

    def queue(self, names: Names) -> str:
        """The capacity queue."""
        return names.capacity

    # --- events ----------------------------------------------------------------------

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Apply newly recorded capacity events in delivery order, in the caller's transaction.

        Raises :class:`DatabaseUnavailable` on a deadlock or serialization failure with
        another process (the batch may simply be retried as is).
        """
        try:
            await self._apply(conn, events)
        except asyncpg.TransactionRollbackError as exc:  # deadlock, serialization failure
            raise DatabaseUnavailable(f"transient conflict with another process: {exc}") from exc

    async def _apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        agents = sorted(
            {
                e.payload(CapacityReported).agent_id
                for e in events
                if e.type is EventType.CAPACITY_REPORTED
            }
        )
        if agents:
            await conn.execute(q("capacity_lock_agents"), agents)
        for event in events:
            if event.type is EventType.CAPACITY_REPORTED:
                await self._on_report(conn, event)
            elif event.type is EventType.DISPATCH_REQUESTED:
                await self._on_request(conn, event)
            elif event.type is EventType.CONTROL_PAUSE:
                await holds.apply_pause(conn, event)
            elif event.type is EventType.CONTROL_RESUME:
                await holds.apply_resume(conn, self.policy, event)
            else:
                log.warning(
                    "capacity handler ignores %s",
                    event.type.value,
                    extra={"action": "ignored", "event_id": str(event.id)},
                )

    async def _on_report(self, conn: asyncpg.Connection, event: Event) -> None:
        data = event.payload(CapacityReported)
        agent = await conn.fetchrow(
            q("capacity_upsert_report"),
            data.agent_id,
            data.agent_type.value,
            data.free.gpu_vram_mb,
            data.free.cpu_cores,
            data.free.memory_mb,
            data.load_pct,
            data.accepting,
            event.time,
            event.id,
            self.policy.threshold_pct,
            self.policy.freshness_s,
        )
        if agent is None:
            REPORTS_SUPERSEDED.inc()
            log.debug(
                "older capacity report ignored",
                extra={"action": "report_superseded", "agent_id": data.agent_id},
            )
            return
        if not agent["usable"]:
            return
        released = await release_to_agent(
            conn,
            self.policy,
            agent,
            trigger_for=always(TriggerType.CAPACITY),
            event_id=event.id,
        )
        if released:
            RELEASE_LATENCY.observe(max(0.0, (datetime.now(UTC) - event.time).total_seconds()))
            log.info(
                "capacity report released waiting work",
                extra={"action": "released", "agent_id": data.agent_id, "count": released},
            )

    async def _on_request(self, conn: asyncpg.Connection, event: Event) -> None:
        data = event.payload(DispatchRequested)
        task_id = event.task_id
        assert task_id is not None  # decode guarantees a subject for dispatch.*
        state = await conn.fetchrow(
            q("capacity_request_state"), task_id, dispatch_message_id(task_id)
        )
        if state["waiting"] or state["dispatched"]:
            log.debug(
                "dispatch request for a task already handled",
                extra={"action": "duplicate_request", "task_id": str(task_id)},
            )
            return
        held = state["holds"] > 0
        deferred = data.not_before is not None and data.not_before > datetime.now(UTC)
        if not held and not deferred and await self._admit_now(conn, event, data, task_id):
            return
        reason = PauseReason.MANUAL_PAUSE if held else PauseReason.INSUFFICIENT_CAPACITY
        resume_after = state["hold_until"] if held and not state["open_ended"] else None
        required = data.required
        entry_id = await conn.fetchval(
            q("capacity_pause_request"),
            task_id,
            data.work_plan,
            reason.value,
            resume_after,
            data.priority,
            data.agent_type.value,
            required.gpu_vram_mb,
            required.cpu_cores,
            required.memory_mb,
            data.not_before,
            event.id,
        )
        if entry_id is None:
            return
        PAUSED.labels(reason.value).inc()
        details = {
            "priority": data.priority,
            "agent_type": data.agent_type.value,
            "required": required.model_dump(),
            "not_before": data.not_before,
            "resume_after": resume_after,
        }
        await append_history(
            conn,
            [History(task_id, "paused", reason=reason.value, event_id=event.id, details=details)],
        )
        log.debug(
            "dispatch request paused",
            extra={"action": "paused", "task_id": str(task_id), "reason": reason.value},
        )

    async def _admit_now(
        self, conn: asyncpg.Connection, event: Event, data: DispatchRequested, task_id: uuid.UUID
    ) -> bool:
        """Dispatch at once if a usable agent has room; returns whether it did."""
        req = data.required
        agent = await conn.fetchrow(
            q("capacity_pick_agent"),
            data.agent_type.value,
            self.policy.threshold_pct,
            self.policy.freshness_s,
            req.gpu_vram_mb,
            req.cpu_cores,
            req.memory_mb,
        )
        if agent is None:
            return False
        await conn.execute(
            q("capacity_reserve"), agent["agent_id"], req.gpu_vram_mb, req.cpu_cores, req.memory_mb
        )
        message = dispatch_assigned(
            self.policy.names,
            task_id=task_id,
            agent_type=data.agent_type.value,
            agent_id=agent["agent_id"],
            work_plan=data.work_plan,
            trigger=TriggerType.IMMEDIATE,
        )
        await enqueue(conn, [message])
        details = {
            "message_id": str(message.message_id),
            "waited_s": 0.0,
            "priority": data.priority,
            "agent_type": data.agent_type.value,
            "required": req.model_dump(),
        }
        await append_history(
            conn,
            [
                History(
                    task_id,
                    "released",
                    trigger=TriggerType.IMMEDIATE,
                    agent_id=agent["agent_id"],
                    event_id=event.id,
                    details=details,
                )
            ],
        )
        ADMITTED.labels(data.agent_type.value).inc()
        log.debug(
            "dispatch request admitted",
            extra={"action": "admitted", "task_id": str(task_id), "agent_id": agent["agent_id"]},
        )
        return True

    # --- timers (consumer.admission.timers) --------------------------------------------

    async def expire_holds(self, pool: asyncpg.Pool) -> int:
        """Lift expired holds and re-admit their entries; see :func:`timers.expire_holds`."""
        return await timers.expire_holds(pool, self.policy)

    async def sweep(self, pool: asyncpg.Pool) -> int:
        """Release waiting entries that fit usable agents now; see :func:`timers.sweep`."""
        return await timers.sweep(pool, self.policy)

    async def cancel_finished(self, pool: asyncpg.Pool) -> int:
        """Take out entries of finished tasks; see :func:`timers.cancel_finished`."""
        return await timers.cancel_finished(pool)

    async def announce_stale(self, pool: asyncpg.Pool) -> int:
        """Queue ``task.recovery_requested`` for newly stale tasks; returns how many."""
        return await timers.announce_stale(pool, self.policy.names, self.settings.stale_after_s)

    async def tick(self, pool: asyncpg.Pool, *, slow: bool = False) -> int:
        """One timer pass; see :func:`timers.tick`. Returns how many entries were released."""
        return await timers.tick(pool, self.policy, self.settings, slow=slow)

    async def run_timer(self, ctx: ServiceContext) -> None:
        """Run :meth:`tick` every ``timer_interval_s`` until ``ctx.stopping``; survives outages."""
        await timers.run_timer(ctx, self.policy, self.settings)

    def background(self, ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
        """The outbox relay and the timer (adopting ``ctx.settings`` if none were given)."""
        if self._settings is None:
            self._adopt(ctx.settings)
        relay = OutboxRelay(self.settings, ctx.pool, before_publish=self._before_publish)

        async def relay_loop() -> None:
            await relay.run(ctx.stopping, burst=ctx.burst, busy=ctx.busy)

        async def timer_loop() -> None:
            await self.run_timer(ctx)

        return [relay_loop, timer_loop]
