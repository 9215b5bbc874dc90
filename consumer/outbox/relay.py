"""The outbox relay: publishes committed outbox rows with publisher confirms, marks them sent.

A crash between a handler's commit and the publish loses nothing: the relay drains the
outbox at start and continuously. Delivery is at least once. A row is published from
its stored body bytes, so a re-publish (a crash after the broker confirmed but before
the row was marked sent) carries the same CloudEvents ``id``; downstream recognises it.

Several relays (one per handler process) may run at once: each claims rows with
``FOR UPDATE SKIP LOCKED``, so a row is published by one relay at a time.

Every relay LISTENs on :data:`~consumer.outbox.messages.NOTIFY_CHANNEL` and drains at
once when a commit wrote rows, and polls every ``outbox_interval_s`` besides (the
listener is a convenience, never needed for correctness). While the broker or the
database is away it backs off (:class:`consumer.core.retry.Backoff`, capped at 5 s).

Fault injection: the relay calls its optional ``before_publish`` hook right before it
publishes a claimed batch. The service installs one only for tests
(:mod:`consumer.runtime.faults`); the relay itself reads no environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from consumer import broker
from consumer.core.errors import BrokerUnavailable, DatabaseUnavailable, MessageUnroutable
from consumer.core.metrics import (
    OUTBOX_LATENCY,
    OUTBOX_PENDING,
    OUTBOX_PUBLISH_ERRORS,
    OUTBOX_PUBLISHED,
    OUTBOX_UNROUTABLE,
)
from consumer.core.retry import Backoff, pause
from consumer.core.settings import Settings, redact_text
from consumer.outbox.messages import CONTENT_TYPE, NOTIFY_CHANNEL
from consumer.store import db
from consumer.store.db import q
from contracts import SERVICE_SOURCE

log = logging.getLogger(__name__)

#: Rows claimed and published per relay transaction.
RELAY_BATCH = 200

#: First and longest pause between relay attempts while the broker or database is away.
RETRY_FIRST_S = 0.2
RETRY_CAP_S = 5.0


def _message(row: Mapping[str, Any]) -> aio_pika.Message:
    """The AMQP message of an outbox row: its stored body, persistent, id as message_id."""
    return aio_pika.Message(
        body=bytes(row["body"]),
        message_id=str(row["message_id"]),
        content_type=CONTENT_TYPE,
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
        before_publish: Callable[[], None] | None = None,
    ) -> None:
        """``before_publish`` (tests only) is called after rows were claimed, before they
        are published."""
        self.settings = settings
        self.pool = pool
        self.batch_size = batch_size
        #: Set to make the relay drain now (the NOTIFY listener sets it too).
        self.wake = wake or asyncio.Event()
        self.before_publish = before_publish
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
            self._channel = await broker.confirm_channel(self._connection)
        exchange = self._exchanges.get(name)
        if exchange is None:
            # The events exchange (recovery's own task.failed) has an alternate exchange:
            # take it as the topology declared it.
            passive = name == broker.Names(self.settings.prefix).events
            exchange = await self._channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True, passive=passive
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
        async with db.transaction(self.pool) as conn:
            rows = await conn.fetch(q("outbox_claim"), self.batch_size)
            if not rows:
                return 0
            if self.before_publish is not None:
                self.before_publish()
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
            for row, res in failed:
                error = redact_text(f"{type(res).__name__}: {res}")[:1000]
                await conn.execute(q("outbox_mark_failed"), [row["id"]], error)
        self._account(sent)
        unroutable = [(r, e) for r, e in failed if isinstance(e, MessageUnroutable)]
        self._unroutable(unroutable)
        broken = [(r, e) for r, e in failed if not isinstance(e, MessageUnroutable)]
        if broken:
            failure = broken[0][1]
            OUTBOX_PUBLISH_ERRORS.inc(len(broken))
            await self.close_broker()
            if isinstance(failure, asyncio.CancelledError):
                raise failure
            raise BrokerUnavailable(f"publishing the outbox failed: {redact_text(str(failure))}")
        return len(sent)

    @staticmethod
    def _unroutable(rows: Sequence[tuple[Mapping[str, Any], BaseException]]) -> None:
        """Returned by the broker: no queue takes them yet. They stay pending and are
        tried again on every pass; counted, and logged at their 1st, 2nd, 4th... try."""
        for row, exc in rows:
            OUTBOX_UNROUTABLE.labels(row["event_type"]).inc()
            attempt = int(row["attempts"]) + 1
            if attempt & (attempt - 1) == 0:
                log.warning(
                    "outbox message unroutable; kept pending and retried",
                    extra={"action": "outbox_unroutable", "message_id": str(row["message_id"]),
                           "routing_key": row["routing_key"], "attempt": attempt,
                           "error": str(exc)},
                )  # fmt: skip

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
        backoff = Backoff(first=RETRY_FIRST_S, cap=RETRY_CAP_S)
        try:
            while not stopping.is_set():
                await self._ensure_listener()
                self.wake.clear()
                delay = await self._pass(busy, backoff)
                wait = self.settings.outbox_interval_s if delay is None else delay
                await pause(wait, stopping, self.wake)
            await self._final_pass(busy, burst)
        finally:
            await self._close_listener()
            await self.close_broker()

    async def _pass(self, busy: dict[str, bool], backoff: Backoff) -> float | None:
        """One drain; returns the back-off to wait before the next, None after success."""
        try:
            await self.drain()
        except (BrokerUnavailable, DatabaseUnavailable) as exc:
            busy["outbox"] = True
            delay = backoff.next()
            log.warning(
                "outbox relay: %s; retrying in %.1fs",
                exc,
                delay,
                extra={"action": "outbox_retry"},
            )
            return delay
        backoff.reset()
        busy["outbox"] = False
        self.passed.set()
        return None

    async def _final_pass(self, busy: dict[str, bool], burst: bool) -> None:
        """The last drain after ``stopping``: once, or in burst mode until empty."""
        backoff = Backoff(first=RETRY_FIRST_S, cap=RETRY_CAP_S)
        while True:
            delay = await self._pass(busy, backoff)
            if delay is None or not burst:
                return
            await pause(delay)
