"""The transactional outbox: messages written with the decision behind them, published after.

A handler writes ``dispatch.assigned`` (and ``task.recovery_requested``) rows into the
``outbox`` table in the same transaction as the decision, then the relay publishes them
to ``<prefix>.dispatch`` with publisher confirms and marks them sent. A crash between
commit and publish loses nothing: the relay drains the outbox at start and continuously.

Delivery is at least once. A row is published from its stored body bytes, so a
re-publish (a crash after the broker confirmed but before the row was marked sent)
carries the same CloudEvents ``id``; downstream recognises it.

Several relays (one per handler process) may run at once: each claims rows with
``FOR UPDATE SKIP LOCKED``, so a row is published by one relay at a time.

Wake-up: :func:`enqueue` also issues ``NOTIFY`` on :data:`NOTIFY_CHANNEL`, which
PostgreSQL delivers only when the writing transaction commits; every relay LISTENs and
drains at once, and polls every ``outbox_interval_s`` besides (the listener is a
convenience, never needed for correctness).

Test hook: with ``TASKLEDGER_FAULT_CRASH_BEFORE_PUBLISH=1`` in its environment, the relay
kills its process (``os._exit(137)``, like ``kill -9``) right before its first publish,
after the rows it claimed were committed by the handler. The acceptance tests use it to
crash the handler deterministically between commit and publish. Never set it otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from prometheus_client import Counter, Gauge, Histogram

from consumer import broker, db
from consumer.broker import Names
from consumer.db import q
from consumer.exceptions import BrokerUnavailable, DatabaseUnavailable
from consumer.settings import Settings, redact_text
from contracts import (
    SERVICE_SOURCE,
    AgentType,
    DispatchAssigned,
    EventType,
    TaskRecoveryRequested,
    TriggerType,
    make_event,
)

log = logging.getLogger(__name__)

#: PostgreSQL NOTIFY channel that wakes the relays after a commit that wrote rows.
NOTIFY_CHANNEL = "taskledger_outbox"

#: Environment variable of the crash test hook (see the module docstring).
FAULT_CRASH_BEFORE_PUBLISH = "TASKLEDGER_FAULT_CRASH_BEFORE_PUBLISH"

#: Namespace of the deterministic ``dispatch.assigned`` ids: uuid5(namespace, "<task>:<n>").
DISPATCH_NAMESPACE = uuid.UUID("5d2f4c3e-8a61-4f0b-9c57-2b7e1d9a0c44")

#: Rows claimed and published per relay transaction.
RELAY_BATCH = 200

#: Longest pause between relay attempts while the broker or database is away.
MAX_BACKOFF_S = 5.0

OUTBOX_PUBLISHED = Counter(
    "taskledger_outbox_published_total",
    "Outbox messages confirmed by the broker.",
    ["event_type"],
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "taskledger_outbox_publish_errors_total",
    "Outbox publish attempts that failed (the message stays and is retried).",
)
OUTBOX_PENDING = Gauge(
    "taskledger_outbox_pending",
    "Outbox messages not yet confirmed by the broker (as of the last relay pass).",
)
OUTBOX_LATENCY = Histogram(
    "taskledger_outbox_publish_latency_seconds",
    "Time from an outbox row's commit to the broker's confirm of its message.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


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


def recovery_message_id(task_id: uuid.UUID) -> uuid.UUID:
    """The CloudEvents id of a task's ``task.recovery_requested``: one per task, ever."""
    return uuid.uuid5(task_id, "recovery")


def recovery_requested(
    names: Names,
    *,
    task_id: uuid.UUID,
    agent_id: str | None,
    agent_type: str | None,
    last_event_at: datetime,
    stale_seconds: float,
) -> Outgoing:
    """Build the ``task.recovery_requested`` message of a stale task.

    Routed ``recovery.<agent_type>`` (``recovery.any`` when the type is unknown).

    Raises:
        ValueError: the payload is invalid.
    """
    message_id = recovery_message_id(task_id)
    known_type = agent_type if agent_type in {t.value for t in AgentType} else None
    data = TaskRecoveryRequested(
        task_id=task_id,
        agent_id=agent_id,
        agent_type=AgentType(known_type) if known_type else None,
        last_event_at=last_event_at,
        stale_seconds=max(0.0, float(stale_seconds)),
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


def _message(row: Mapping[str, Any]) -> aio_pika.Message:
    """The AMQP message of an outbox row: its stored body, persistent, id as message_id."""
    return aio_pika.Message(
        body=bytes(row["body"]),
        message_id=str(row["message_id"]),
        content_type="application/json",
        type=row["event_type"],
        app_id=SERVICE_SOURCE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class OutboxRelay:
    """Publishes unsent outbox rows with publisher confirms and marks them sent."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        batch_size: int = RELAY_BATCH,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.batch_size = batch_size
        #: Set to make the relay drain now (the NOTIFY listener sets it too).
        self.wake = wake or asyncio.Event()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._listener: asyncpg.Connection | None = None
        #: Set after each successful pass of :meth:`run` (tests wait on it).
        self.passed = asyncio.Event()

    # --- broker side ------------------------------------------------------------------

    async def _exchange(self, name: str) -> AbstractExchange:
        """The exchange ``name`` on a confirm channel, connecting if need be."""
        if self._channel is None or self._channel.is_closed:
            await self.close_broker()
            self._connection = await broker.connect(self.settings.amqp)
            self._channel = await self._connection.channel(publisher_confirms=True)
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            self._exchanges[name] = exchange
        return exchange

    async def close_broker(self) -> None:
        """Close the relay's broker connection (it reconnects on the next publish)."""
        connection, self._connection, self._channel = self._connection, None, None
        self._exchanges.clear()
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:  # already broken: nothing more to release
                log.debug("closing the relay connection failed", exc_info=True)

    async def _publish(self, row: Mapping[str, Any]) -> None:
        exchange = await self._exchange(row["exchange"])
        await broker.publish_confirmed(exchange, _message(row), row["routing_key"])

    # --- database side ----------------------------------------------------------------

    async def publish_batch(self) -> int:
        """Claim up to ``batch_size`` unsent rows, publish them, mark what was confirmed.

        Returns how many were confirmed. Raises :class:`BrokerUnavailable` after
        recording the failure on the rows that were not confirmed (they stay unsent),
        :class:`DatabaseUnavailable` when PostgreSQL is away.
        """
        failure: BaseException | None = None
        async with db.transaction(self.pool) as conn:
            rows = await conn.fetch(q("outbox_claim"), self.batch_size)
            if not rows:
                return 0
            if os.environ.get(FAULT_CRASH_BEFORE_PUBLISH) == "1":
                log.critical("fault injection: crashing before publish", extra={"action": "fault"})
                os._exit(137)
            try:
                await self._exchange(rows[0]["exchange"])
                results = await asyncio.gather(
                    *(self._publish(r) for r in rows), return_exceptions=True
                )
            except Exception as exc:  # broker unreachable: nothing of the batch went out
                results = [exc] * len(rows)
            sent = [r for r, res in zip(rows, results, strict=True) if res is None]
            failed = [
                (r, res)
                for r, res in zip(rows, results, strict=True)
                if isinstance(res, BaseException)
            ]
            if sent:
                await conn.execute(q("outbox_mark_sent"), [r["id"] for r in sent])
            if failed:
                failure = failed[0][1]
                error = redact_text(f"{type(failure).__name__}: {failure}")[:1000]
                await conn.execute(q("outbox_mark_failed"), [r["id"] for r, _ in failed], error)
        self._account(sent)
        if failure is not None:
            OUTBOX_PUBLISH_ERRORS.inc(len(failed))
            await self.close_broker()
            if isinstance(failure, asyncio.CancelledError):
                raise failure
            raise BrokerUnavailable(f"publishing the outbox failed: {redact_text(str(failure))}")
        return len(sent)

    @staticmethod
    def _account(sent: Sequence[Mapping[str, Any]]) -> None:
        now = datetime.now(UTC)
        for row in sent:
            OUTBOX_PUBLISHED.labels(row["event_type"]).inc()
            OUTBOX_LATENCY.observe(max(0.0, (now - row["created_at"]).total_seconds()))
        if sent:
            log.debug("outbox published", extra={"action": "outbox_published", "count": len(sent)})

    async def drain(self) -> int:
        """Publish until no unsent row is left (or the rest is locked by another relay).

        Returns how many messages were confirmed; raises like :meth:`publish_batch`.
        """
        total = 0
        while True:
            n = await self.publish_batch()
            total += n
            if n < self.batch_size:
                break
        await self.refresh_pending()
        return total

    async def refresh_pending(self) -> int:
        """Count unsent rows into the pending gauge; returns the count."""
        async with db.transaction(self.pool) as conn:
            pending = int(await conn.fetchval(q("outbox_pending")))
        OUTBOX_PENDING.set(pending)
        return pending

    # --- listener ---------------------------------------------------------------------

    def _notified(self, *_args: object) -> None:
        self.wake.set()

    async def _ensure_listener(self) -> None:
        """LISTEN on the outbox channel (best effort: polling covers a missing listener)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = None
        try:
            conn = await db.connect(self.settings.dsn)
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        except Exception as exc:
            log.debug("outbox listener unavailable: %s", redact_text(str(exc)))
            return
        self._listener = conn

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()

    # --- the loop ---------------------------------------------------------------------

    async def run(
        self, stopping: asyncio.Event, *, burst: bool = False, busy: dict[str, bool] | None = None
    ) -> None:
        """Drain at start, then whenever woken or every ``outbox_interval_s``, until stopped.

        Survives broker and database outages (logs, backs off, tries again). Once
        ``stopping`` is set it makes a last pass; with ``burst`` it keeps draining until
        nothing is left (or the caller cancels it). ``busy["outbox"]`` says whether
        unsent rows remain.
        """
        busy = busy if busy is not None else {}
        backoff = 0.0
        try:
            while not stopping.is_set():
                await self._ensure_listener()
                self.wake.clear()
                backoff = await self._pass(busy, backoff)
                await _wait_any(
                    stopping, self.wake, seconds=backoff or self.settings.outbox_interval_s
                )
            await self._final_pass(busy, burst)
        finally:
            await self._close_listener()
            await self.close_broker()

    async def _pass(self, busy: dict[str, bool], backoff: float) -> float:
        """One drain; returns the back-off to wait before the next (0 after success)."""
        try:
            await self.drain()
        except (BrokerUnavailable, DatabaseUnavailable) as exc:
            busy["outbox"] = True
            backoff = min(MAX_BACKOFF_S, max(0.2, backoff * 2))
            log.warning(
                "outbox relay: %s; retrying in %.1fs",
                exc,
                backoff,
                extra={"action": "outbox_retry"},
            )
            return backoff
        busy["outbox"] = False
        self.passed.set()
        return 0.0

    async def _final_pass(self, busy: dict[str, bool], burst: bool) -> None:
        """The last drain after ``stopping``: once, or in burst mode until empty."""
        backoff = 0.0
        while True:
            backoff = await self._pass(busy, backoff)
            if not backoff or not burst:
                return
            await asyncio.sleep(backoff)


async def _wait_any(*events: asyncio.Event, seconds: float) -> None:
    """Return when any of ``events`` is set or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
