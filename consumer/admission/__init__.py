"""The capacity handler: admission, the pause queue in and out, operator holds, timers.

It consumes ``<prefix>.capacity`` (``dispatch.requested``, ``capacity.reported``,
``control.pause``, ``control.resume``) through the generic runner, which records each
event in the ledger once and calls :meth:`CapacityHandler.apply` with the new ones inside
its transaction. Every decision writes its ``dispatch.assigned`` into the outbox in that
same transaction (:mod:`consumer.outbox`); the relay publishes after commit.

Rules (DESIGN §4 "Capacity handler"):

- An agent is *usable* while its last report is fresh (``capacity_freshness_s``), it
  accepts work and its load is under ``pause_threshold_pct``. What it has left is what
  it reported free minus what was reserved on it since; a new report resets the
  reservations. A report older than the stored one (by event time) changes nothing.
- A dispatch request is admitted at once (trigger ``immediate``) when a usable agent of
  its type has room for ``required``, no hold applies and ``not_before`` has passed; the
  agent with the most memory left wins (then the smallest ``agent_id``). Otherwise it
  waits in ``pause_queue``, once per task: reason ``manual_pause`` when a hold applies,
  else ``insufficient_capacity`` (also when only ``not_before`` holds it back). A task
  whose dispatch is already in the outbox is not admitted again. An immediate admission
  writes no pause history (it never waited); its outbox row is its record.
- A capacity report releases, in its transaction, the waiting entries of the agent's
  type that fit what the agent has left: most urgent first, then oldest, first fit (an
  entry too large for what is left is passed over, not waited for), at most
  :data:`RELEASE_LIMIT` per report, taken ``FOR UPDATE SKIP LOCKED``. Entries held by an
  operator (``manual_pause``) are not released by capacity.
- ``control.pause`` puts a hold (``all``, or ``task:<id>``) and marks the entries it
  covers ``manual_pause``; ``control.resume`` lifts it and re-admits those entries by
  normal admission (trigger ``manual``; those that do not fit wait for capacity).
  ``force`` (scope task) also dispatches that task's waiting entry now, to a usable
  agent with room if there is one, else to ``dispatch.<agent_type>.any`` with no agent.
  A force for a task that does not wait dispatches nothing; it is recorded as the
  ``unheld`` history row of the resume, with ``details.waiting = false``.
- A timer (every ``timer_interval_s``) lifts holds whose ``resume_after`` passed and
  re-admits their entries (trigger ``timeout``), and sweeps the waiting entries against
  usable agents: entries whose ``not_before`` passed go with trigger ``timeout``, others
  (left over by the per-report limit or skipped while another transaction held them)
  with ``capacity``. Less often (:func:`slow_interval`) it takes out entries whose task
  already finished (``released``, trigger ``cancelled``) and announces stale work.

Several handler processes may run at once: entries are claimed with ``SKIP LOCKED``,
agents that a batch reports on are locked in ``agent_id`` order, and the runner's
ledger insert serialises the events of one task with advisory locks. A deadlock that
still happens (a control statement waiting on entries another batch holds) is turned
into :class:`DatabaseUnavailable`, so the runner retries the batch as is.

Metrics (``taskledger_capacity_*``, ``taskledger_pause_wait_seconds``; the outbox's are
in :mod:`consumer.outbox`) are counted when a decision is made inside the transaction:
a batch rolled back and retried counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from prometheus_client import Counter, Histogram

from consumer import db, outbox, stale
from consumer.broker import Names
from consumer.db import q
from consumer.exceptions import DatabaseUnavailable
from consumer.handlers import ServiceContext
from consumer.settings import Settings, get_settings
from contracts import (
    CapacityReported,
    ControlPause,
    ControlResume,
    ControlScope,
    DispatchRequested,
    Event,
    EventType,
    PauseReason,
    TriggerType,
)

log = logging.getLogger(__name__)

#: Most entries one capacity report (or one agent in one timer sweep) releases.
RELEASE_LIMIT = 500

#: Candidates locked per round while releasing to one agent.
CLAIM_CHUNK = 100

#: Most finished tasks' entries taken out per timer pass.
CANCEL_LIMIT = 500

#: Tolerance when comparing CPU cores (floats that were added and subtracted).
CPU_EPSILON = 1e-9

ADMITTED = Counter(
    "taskledger_capacity_admitted_total",
    "Dispatch requests admitted on arrival (trigger immediate).",
    ["agent_type"],
)
PAUSED = Counter(
    "taskledger_capacity_paused_total",
    "Dispatch requests that entered the pause queue.",
    ["reason"],
)
RELEASED = Counter(
    "taskledger_capacity_released_total",
    "Pause-queue entries released, by trigger (cancelled: taken out, not dispatched).",
    ["trigger"],
)
REPORTS_SUPERSEDED = Counter(
    "taskledger_capacity_reports_superseded_total",
    "Capacity reports older than the one already stored (ignored).",
)
RELEASE_LATENCY = Histogram(
    "taskledger_capacity_release_latency_seconds",
    "Time from a capacity report's event time to the transaction releasing entries for it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WAIT_SECONDS = Histogram(
    "taskledger_pause_wait_seconds",
    "Time released entries waited in the pause queue.",
    buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)

#: The event types this handler applies (others are logged and ignored).
HANDLED_TYPES = frozenset(
    {
        EventType.DISPATCH_REQUESTED,
        EventType.CAPACITY_REPORTED,
        EventType.CONTROL_PAUSE,
        EventType.CONTROL_RESUME,
    }
)

#: Failures of a timer pass that need no traceback: they pass by themselves.
TRANSIENT: tuple[type[BaseException], ...] = (DatabaseUnavailable, asyncpg.TransactionRollbackError)

TriggerFor = Callable[[Mapping[str, Any]], TriggerType]


def hold_key(scope: ControlScope, task_id: uuid.UUID | None) -> str:
    """The ``dispatch_holds`` key of a hold: ``all`` or ``task:<uuid>``."""
    if scope is ControlScope.ALL:
        return "all"
    return f"task:{task_id}"


def slow_interval(settings: Settings) -> float:
    """Seconds between the timer's slow passes (stale work, finished tasks' entries).

    At most 30 s, a quarter of the stale limit when that is shorter (tests use small
    limits), never faster than the timer itself.
    """
    return max(settings.timer_interval_s, min(30.0, settings.stale_after_s / 4))


def _always(trigger: TriggerType) -> TriggerFor:
    return lambda _entry: trigger


def _timer_trigger(entry: Mapping[str, Any]) -> TriggerType:
    """Sweep trigger: ``timeout`` when a ``not_before`` held the entry back, else capacity."""
    return TriggerType.TIMEOUT if entry["not_before"] is not None else TriggerType.CAPACITY


@dataclass
class Room:
    """What an agent has left for new work."""

    gpu_vram_mb: int
    cpu_cores: float
    memory_mb: int

    @classmethod
    def of(cls, agent: Mapping[str, Any]) -> Room:
        """The room of an agent row (``rem_*`` columns)."""
        return cls(
            int(agent["rem_gpu_vram_mb"]),
            float(agent["rem_cpu_cores"]),
            int(agent["rem_memory_mb"]),
        )

    def take(self, entry: Mapping[str, Any]) -> bool:
        """Subtract what ``entry`` requires if it fits; returns whether it did."""
        gpu, cpu, mem = _required(entry)
        if gpu > self.gpu_vram_mb or cpu > self.cpu_cores + CPU_EPSILON or mem > self.memory_mb:
            return False
        self.gpu_vram_mb -= gpu
        self.cpu_cores -= cpu
        self.memory_mb -= mem
        return True


def _required(entry: Mapping[str, Any]) -> tuple[int, float, int]:
    return (
        int(entry["required_gpu_vram_mb"]),
        float(entry["required_cpu_cores"]),
        int(entry["required_memory_mb"]),
    )


@dataclass
class History:
    """One ``pause_history`` row to append."""

    task_id: uuid.UUID | None
    action: str
    reason: str | None = None
    trigger: TriggerType | None = None
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
        [r.trigger.value if r.trigger else None for r in rows],
        [r.agent_id for r in rows],
        [r.event_id for r in rows],
        [orjson.dumps(r.details, default=str).decode() for r in rows],
    )


@dataclass(frozen=True)
class Policy:
    """The settings admission decisions depend on."""

    names: Names
    freshness_s: float
    threshold_pct: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The policy of ``settings``."""
        return cls(
            names=Names(settings.prefix),
            freshness_s=settings.capacity_freshness_s,
            threshold_pct=settings.pause_threshold_pct,
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
        gpu = sum(_required(e)[0] for e in entries)
        cpu = sum(_required(e)[1] for e in entries)
        mem = sum(_required(e)[2] for e in entries)
        await conn.execute(q("capacity_reserve"), agent_id, gpu, cpu, mem)
    now = datetime.now(UTC)
    messages: list[outbox.Outgoing] = []
    history: list[History] = []
    for entry in entries:
        trigger = trigger_for(entry)
        message = outbox.dispatch_assigned(
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
    await outbox.enqueue(conn, messages)
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


class CapacityHandler:
    """Admission and the pause queue; hosted by the runner on ``<prefix>.capacity``."""

    name = "capacity"

    def __init__(self, settings: Settings | None = None) -> None:
        """``settings`` default to the service's (given to :meth:`background`), else the
        environment's."""
        self._settings = settings
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
                await self._on_pause(conn, event)
            elif event.type is EventType.CONTROL_RESUME:
                await self._on_resume(conn, event)
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
            trigger_for=_always(TriggerType.CAPACITY),
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
            q("capacity_request_state"), task_id, outbox.dispatch_message_id(task_id)
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
        message = outbox.dispatch_assigned(
            self.policy.names,
            task_id=task_id,
            agent_type=data.agent_type.value,
            agent_id=agent["agent_id"],
            work_plan=data.work_plan,
            trigger=TriggerType.IMMEDIATE,
        )
        await outbox.enqueue(conn, [message])
        ADMITTED.labels(data.agent_type.value).inc()
        log.debug(
            "dispatch request admitted",
            extra={"action": "admitted", "task_id": str(task_id), "agent_id": agent["agent_id"]},
        )
        return True

    async def _on_pause(self, conn: asyncpg.Connection, event: Event) -> None:
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

    async def _on_resume(self, conn: asyncpg.Connection, event: Event) -> None:
        data = event.payload(ControlResume)
        key = hold_key(data.scope, data.task_id)
        lifted = await conn.fetchrow(q("capacity_delete_hold"), key)
        unheld = await self._unhold(conn, data.task_id)
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
                self.policy,
                trigger_for=_always(TriggerType.MANUAL),
                event_id=event.id,
                agent_types={r["agent_type"] for r in unheld},
                task_ids=[r["task_id"] for r in unheld],
            )
        elif entry is not None:
            dispatched = await self._force(conn, event, entry)
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

    @staticmethod
    async def _unhold(conn: asyncpg.Connection, task_id: uuid.UUID | None) -> list[asyncpg.Record]:
        """Re-mark entries after holds changed; returns those no longer held."""
        changed = await conn.fetch(q("capacity_apply_holds"), task_id)
        return [r for r in changed if r["new_reason"] == PauseReason.INSUFFICIENT_CAPACITY]

    async def _force(self, conn: asyncpg.Connection, event: Event, entry: Mapping[str, Any]) -> int:
        """Dispatch a task's entry (already taken out) now, capacity or not; returns 1."""
        gpu, cpu, mem = _required(entry)
        agent = await conn.fetchrow(
            q("capacity_pick_agent"),
            entry["agent_type"],
            self.policy.threshold_pct,
            self.policy.freshness_s,
            gpu,
            cpu,
            mem,
        )
        return await dispatch_entries(
            conn,
            self.policy,
            [entry],
            agent_type=entry["agent_type"],
            agent_id=agent["agent_id"] if agent is not None else None,
            trigger_for=_always(TriggerType.MANUAL),
            event_id=event.id,
            delete=False,
            details={"forced": True},
        )

    # --- timers ----------------------------------------------------------------------

    async def expire_holds(self, pool: asyncpg.Pool) -> int:
        """Lift holds whose ``resume_after`` passed and re-admit their entries (timeout).

        Returns how many entries were released. Raises :class:`DatabaseUnavailable`.
        """
        async with db.transaction(pool) as conn:
            expired = await conn.fetch(q("capacity_expired_holds"))
            if not expired:
                return 0
            scopes = {h["task_id"] for h in expired}
            if any(h["scope"] == ControlScope.ALL for h in expired):
                scopes = {None}
            unheld: list[asyncpg.Record] = []
            for task_id in scopes:
                unheld += await self._unhold(conn, task_id)
            rows = [
                History(
                    h["task_id"],
                    "unheld",
                    trigger=TriggerType.TIMEOUT,
                    details={"scope": h["scope"], "resume_after": h["resume_after"]},
                )
                for h in expired
            ]
            rows += [
                History(
                    r["task_id"], "unheld", trigger=TriggerType.TIMEOUT, details={"expired": True}
                )
                for r in unheld
                if r["task_id"] not in scopes
            ]
            await append_history(conn, rows)
            released = await admit_waiting(
                conn,
                self.policy,
                trigger_for=_always(TriggerType.TIMEOUT),
                agent_types={r["agent_type"] for r in unheld},
                task_ids=[r["task_id"] for r in unheld],
            )
        log.info(
            "holds expired",
            extra={"action": "holds_expired", "holds": len(expired), "released": released},
        )
        return released

    async def sweep(self, pool: asyncpg.Pool) -> int:
        """Release waiting entries that fit usable agents now; returns how many.

        Entries whose ``not_before`` held them back go with trigger ``timeout``, the others
        with ``capacity``. Raises :class:`DatabaseUnavailable`.
        """
        async with db.transaction(pool) as conn:
            if not await conn.fetchval(q("capacity_waiting_exists")):
                return 0
            return await admit_waiting(conn, self.policy, trigger_for=_timer_trigger)

    async def cancel_finished(self, pool: asyncpg.Pool) -> int:
        """Take out waiting entries whose task already finished (trigger cancelled).

        Returns how many. Raises :class:`DatabaseUnavailable`.
        """
        async with db.transaction(pool) as conn:
            taken = await conn.fetch(q("capacity_cancel_finished"), CANCEL_LIMIT)
            await append_history(
                conn,
                [
                    History(
                        r["task_id"], "released", reason=r["reason"], trigger=TriggerType.CANCELLED
                    )
                    for r in taken
                ],
            )
        RELEASED.labels(TriggerType.CANCELLED.value).inc(len(taken))
        return len(taken)

    async def announce_stale(self, pool: asyncpg.Pool) -> int:
        """Queue ``task.recovery_requested`` for newly stale tasks; returns how many."""
        async with db.transaction(pool) as conn:
            announced = await stale.announce_stale(
                conn, self.policy.names, self.settings.stale_after_s
            )
        return len(announced)

    async def tick(self, pool: asyncpg.Pool, *, slow: bool = False) -> int:
        """One timer pass (holds, sweep; with ``slow`` also finished tasks and stale work).

        Returns how many entries were released. Raises :class:`DatabaseUnavailable`.
        """
        released = await self.expire_holds(pool)
        released += await self.sweep(pool)
        if slow:
            await self.cancel_finished(pool)
            await self.announce_stale(pool)
        return released

    async def run_timer(self, ctx: ServiceContext) -> None:
        """Run :meth:`tick` every ``timer_interval_s`` until ``ctx.stopping``; survives outages."""
        next_slow = 0.0
        backoff = 0.0
        while not ctx.stopping.is_set():
            slow = time.monotonic() >= next_slow
            try:
                await self.tick(ctx.pool, slow=slow)
            except Exception as exc:  # outages, deadlocks: log, back off, try again
                backoff = min(outbox.MAX_BACKOFF_S, max(0.2, backoff * 2))
                log.warning(
                    "capacity timer pass failed: %s",
                    exc,
                    extra={"action": "timer_retry"},
                    exc_info=not isinstance(exc, TRANSIENT),
                )
            else:
                backoff = 0.0
                if slow:
                    next_slow = time.monotonic() + slow_interval(self.settings)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    ctx.stopping.wait(), timeout=backoff or self.settings.timer_interval_s
                )

    def background(self, ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
        """The outbox relay and the timer (adopting ``ctx.settings`` if none were given)."""
        if self._settings is None:
            self._adopt(ctx.settings)
        relay = outbox.OutboxRelay(self.settings, ctx.pool)

        async def relay_loop() -> None:
            await relay.run(ctx.stopping, burst=ctx.burst, busy=ctx.busy)

        async def timer_loop() -> None:
            await self.run_timer(ctx)

        return [relay_loop, timer_loop]
