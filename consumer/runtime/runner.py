"""The consumer loop shared by the audit and capacity handlers.

One place decides ack, dead-letter or retry:

- a delivery that cannot be valid (:class:`contracts.DecodeError`) is published to the
  dead-letter exchange with its reason, confirmed, then acknowledged;
- valid events are batched (flush on count, on a short linger, or at the end), written
  in one transaction (ledger insert, then the handler's projection), and acknowledged
  with one ``multiple=True`` ack after the commit;
- PostgreSQL unavailable: the batch is held and retried with backoff; nothing is acked
  or dead-lettered, and the prefetch window stops the broker from sending more;
- any other failure: the batch is bisected down to the event that fails, which goes to a
  delayed retry queue, and after the last delay to the dead letters
  (``retries_exhausted``);
- the broker connection lost: deliveries in hand are dropped (the broker delivers them
  again; the ledger absorbs them as duplicates), the loop reconnects, re-declares the
  topology and consumes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aiormq.abc import DeliveredMessage

from consumer import broker, db, metrics
from consumer.broker import H_ATTEMPT, H_ROUTING_KEY, Names
from consumer.exceptions import BrokerUnavailable, DatabaseUnavailable
from consumer.handlers import Handler
from consumer.ledger import record_events
from consumer.settings import Settings, redact_text
from contracts import DeadLetterReason, DecodeError, Event, TriggerType, decode

log = logging.getLogger(__name__)

#: Errors of the AMQP client that mean the connection or channel is gone.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    BrokerUnavailable,
)


def _attempt(value: Any) -> int:
    """The retry attempt a message carries; a forged or garbled header counts as none."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return 0
    try:
        return max(int(value), 0)
    except ValueError:
        return 0


class ShutdownAbandoned(Exception):
    """The shutdown budget ran out with a batch not committed; it is left unacknowledged."""


@dataclass(slots=True)
class Delivery:
    """One message taken from the queue and not yet acknowledged."""

    message: DeliveredMessage
    received: float

    @property
    def tag(self) -> int:
        """The delivery tag on the consuming channel."""
        return int(self.message.delivery.delivery_tag or 0)  # type: ignore[union-attr]

    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP headers (empty if none)."""
        return dict(self.message.header.properties.headers or {})

    def routing_key(self) -> str | None:
        """The routing key the producer used (from our header after a retry or replay)."""
        exchange = self.message.exchange
        if exchange:
            return self.message.routing_key
        value = (self.message.header.properties.headers or {}).get(H_ROUTING_KEY)
        return str(value) if value is not None else None


class Runner:
    """Consumes one queue for one handler until told to stop (or, in burst mode, idle)."""

    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        pool: asyncpg.Pool,
        stopping: asyncio.Event,
        *,
        burst: bool = False,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.pool = pool
        self.stopping = stopping
        self.burst = burst
        self.names = Names(settings.prefix)
        self.queue = handler.queue(self.names)
        self.label = handler.name
        self._buffer: list[Delivery] = []
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._shutdown_deadline: float | None = None
        self._consumed = False
        self.idle = asyncio.Event()

    # -- connection lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Consume until stopped; reconnect by itself when the broker goes away."""
        backoff = 0.5
        while True:
            try:
                await self._session()
                return
            except ShutdownAbandoned:
                log.warning(
                    "shutdown budget spent with a batch uncommitted; left for redelivery",
                    extra={"action": "shutdown_abandoned", "handler": self.label},
                )
                return
            except BROKER_ERRORS as exc:
                if self.stopping.is_set():
                    return
                if self._consumed:  # that session worked: start the back-off afresh
                    backoff, self._consumed = 0.5, False
                metrics.RECONNECTS.labels(self.label).inc()
                log.warning(
                    "broker connection lost; reconnecting",
                    extra={"action": "reconnect", "handler": self.label,
                           "error": redact_text(str(exc)) or type(exc).__name__},
                )  # fmt: skip
                await self._sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _session(self) -> None:
        connection = await broker.connect(self.settings.amqp)
        self._lost.clear()
        self._buffer.clear()
        metrics.IN_FLIGHT.labels(self.label).set(0)
        connection.close_callbacks.add(self._on_close)
        try:
            publish_channel = await connection.channel(publisher_confirms=True)
            await broker.declare_topology(publish_channel, self.settings)
            consume_channel = await connection.channel(publisher_confirms=False)
            raw = await consume_channel.get_underlay_channel()
            await raw.basic_qos(prefetch_count=self.settings.prefetch)
            ok = await raw.basic_consume(self.queue, self._on_message, no_ack=False)
            self._consumed = True
            log.info(
                "consuming",
                extra={"action": "consume", "handler": self.label, "queue": self.queue},
            )
            session = _Session(self, connection, publish_channel, raw)
            await session.loop(str(ok.consumer_tag))
        finally:
            connection.close_callbacks.discard(self._on_close)
            self._buffer.clear()
            if not connection.is_closed:
                await connection.close()

    def _on_close(self, *_: Any) -> None:
        self._lost.set()
        self._wake.set()

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._buffer.append(Delivery(message, time.monotonic()))
        n = len(self._buffer)
        if n == 1 or n >= self.settings.batch_size:
            self._wake.set()


class _Session:
    """One connection's worth of consuming: the batching loop and its flushes."""

    def __init__(
        self,
        runner: Runner,
        connection: AbstractConnection,
        publish_channel: AbstractChannel,
        raw: aiormq.abc.AbstractChannel,
    ) -> None:
        self.r = runner
        self.connection = connection
        self.publish_channel = publish_channel
        self.raw = raw
        self._dlx: AbstractExchange | None = None
        self._default: AbstractExchange | None = None
        self._last_delivery = time.monotonic()
        self._last_flush = 0.0

    async def loop(self, consumer_tag: str) -> None:
        r = self.r
        linger = r.settings.batch_linger_ms / 1000
        while True:
            if r._lost.is_set():
                raise BrokerUnavailable("connection closed")
            if r.stopping.is_set():
                await self._drain_and_stop(consumer_tag)
                return
            buffer = r._buffer
            now = time.monotonic()
            if len(buffer) >= r.settings.batch_size:
                await self._flush(TriggerType.COUNT)
                continue
            # A partial batch waits out the linger from its first message, and at least
            # the linger since the last flush: under load that lets batches grow instead
            # of committing whatever trickled in during the previous write.
            due = max(buffer[0].received, self._last_flush) + linger if buffer else 0.0
            if buffer and now >= due:
                await self._flush(TriggerType.TIMEOUT)
                continue
            if buffer:
                timeout: float | None = due - now
            elif r.burst:
                if await self._burst_done():
                    r.idle.set()
                    await self._drain_and_stop(consumer_tag)
                    return
                timeout = 0.1
            else:
                timeout = None
            await self._wait(timeout)

    async def _wait(self, timeout: float | None) -> None:
        r = self.r
        r._wake.clear()
        if r._buffer and r._buffer[-1].received > self._last_delivery:
            self._last_delivery = r._buffer[-1].received
        stop = asyncio.ensure_future(r.stopping.wait())
        wake = asyncio.ensure_future(r._wake.wait())
        try:
            await asyncio.wait({stop, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    async def _burst_done(self) -> bool:
        """In burst mode: nothing in hand, nothing arrived lately, the queue is empty."""
        if time.monotonic() - self._last_delivery < 0.3:
            return False
        depth = await broker.queue_depth(self.publish_channel, self.r.queue)
        if depth:
            self._last_delivery = time.monotonic()
            return False
        return not self.r._buffer

    async def _drain_and_stop(self, consumer_tag: str) -> None:
        """Stop taking deliveries, then commit and acknowledge everything in hand."""
        r = self.r
        r._shutdown_deadline = time.monotonic() + r.settings.shutdown_timeout_s
        try:
            await asyncio.wait_for(self.raw.basic_cancel(consumer_tag), 5)
        except (TimeoutError, *BROKER_ERRORS):  # type: ignore[misc]
            return  # connection gone: what is in hand comes again elsewhere
        while r._buffer:
            await self._flush(TriggerType.END_OF_SOURCE)
        log.info("stopped consuming", extra={"action": "stop", "handler": r.label})

    # -- one batch ------------------------------------------------------------------

    async def _flush(self, trigger: TriggerType) -> None:
        r = self.r
        batch = r._buffer[: r.settings.batch_size]
        del r._buffer[: len(batch)]
        label = r.label
        metrics.EVENTS_RECEIVED.labels(label).inc(len(batch))
        metrics.BATCH_SIZE.labels(label).observe(len(batch))
        metrics.FLUSHES.labels(label, trigger.value).inc()
        metrics.IN_FLIGHT.labels(label).set(len(r._buffer))
        valid: list[tuple[Delivery, Event]] = []
        for delivery in batch:
            try:
                event = decode(delivery.message.body, routing_key=delivery.routing_key())
            except DecodeError as exc:
                await self._dead_letter(delivery, exc.reason.value, exc.message)
                continue
            valid.append((delivery, event))
        if valid:
            await self._write(valid)
        await self.raw.basic_ack(batch[-1].tag, multiple=True)
        self._last_flush = time.monotonic()

    async def _write(self, items: Sequence[tuple[Delivery, Event]]) -> None:
        """Commit ``items``; hold and retry while PostgreSQL is away; bisect on bad data."""
        r = self.r
        backoff = 0.1
        while True:
            try:
                started = time.perf_counter()
                async with db.transaction(r.pool) as conn:
                    new = await record_events(
                        conn, [e for _, e in items], chain=r.settings.ledger_chain
                    )
                    await r.handler.apply(conn, new)
                self._observe(items, new, time.perf_counter() - started)
                return
            except DatabaseUnavailable as exc:
                self._check_deadline()
                metrics.DB_RETRIES.labels(r.label).inc()
                log.warning(
                    "database unavailable; holding the batch",
                    extra={"action": "db_retry", "handler": r.label, "events": len(items),
                           "error": str(exc), "backoff_s": backoff},
                )  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, r.settings.db_retry_max_backoff_s)
            except Exception as exc:  # bad data or a bug: find the event, not the batch
                if len(items) == 1:
                    await self._retry_later(*items[0], exc)
                    return
                half = len(items) // 2
                await self._write(items[:half])
                await self._write(items[half:])
                return

    def _check_deadline(self) -> None:
        """Give up a held batch once a stop was asked for and its budget is spent.

        The budget starts when the stop is noticed here too: a consumer holding a batch
        while PostgreSQL is down never reaches the drain, and must still exit on SIGTERM.
        """
        r = self.r
        if r.stopping.is_set() and r._shutdown_deadline is None:
            r._shutdown_deadline = time.monotonic() + r.settings.shutdown_timeout_s
        deadline = r._shutdown_deadline
        if deadline is not None and time.monotonic() > deadline:
            raise ShutdownAbandoned

    def _observe(
        self, items: Sequence[tuple[Delivery, Event]], new: list[Event], took: float
    ) -> None:
        label = self.r.label
        metrics.COMMIT_SECONDS.labels(label).observe(took)
        metrics.EVENTS_APPLIED.labels(label).inc(len(new))
        if len(new) != len(items):
            metrics.EVENTS_DUPLICATE.labels(label).inc(len(items) - len(new))
        now = datetime.now(UTC)
        lag = metrics.LAG_SECONDS.labels(label)
        for event in new:
            lag.observe(max((now - event.time).total_seconds(), 0.0))

    # -- publishing on the confirm channel --------------------------------------------

    async def _exchanges(self) -> tuple[AbstractExchange, AbstractExchange]:
        if self._dlx is None or self._default is None:
            self._dlx = await self.publish_channel.get_exchange(self.r.names.dlx, ensure=False)
            self._default = self.publish_channel.default_exchange
        return self._dlx, self._default

    async def _dead_letter(self, delivery: Delivery, reason: str, error: str) -> None:
        r = self.r
        dlx, _ = await self._exchanges()
        routing_key = delivery.routing_key() or ""
        headers = broker.dead_letter_headers(
            delivery.headers,
            reason=reason,
            error=error,
            source_queue=r.queue,
            routing_key=routing_key,
            exchange=r.names.events,
        )
        message = broker.copy_message(
            delivery.message.body, delivery.message.header.properties, headers
        )
        await broker.publish_confirmed(dlx, message, routing_key)
        metrics.DEAD_LETTERED.labels(r.label, reason).inc()
        log.warning(
            "dead-lettered a message",
            extra={"action": "dead_letter", "handler": r.label, "reason": reason,
                   "routing_key": routing_key, "error": broker.cut(error, 200)},
        )  # fmt: skip

    async def _retry_later(self, delivery: Delivery, event: Event, exc: BaseException) -> None:
        """Send an event that failed to a delayed retry queue, or to the dead letters."""
        r = self.r
        error = f"{type(exc).__name__}: {exc}"
        attempt = _attempt(delivery.headers.get(H_ATTEMPT))
        delays = r.settings.retry_delays_ms
        ids = {"event_id": str(event.id), "task_id": str(event.task_id) if event.task_id else None}
        if attempt >= len(delays):
            log.error("event failed on every retry; dead-lettering it",
                      extra={"action": "retries_exhausted", "handler": r.label, **ids})  # fmt: skip
            await self._dead_letter(delivery, DeadLetterReason.RETRIES_EXHAUSTED.value, error)
            return
        _, default = await self._exchanges()
        headers = delivery.headers
        headers[H_ATTEMPT] = attempt + 1
        headers[H_ROUTING_KEY] = delivery.routing_key() or ""
        message = broker.copy_message(
            delivery.message.body, delivery.message.header.properties, headers
        )
        queue = r.names.retry(r.queue, delays[attempt])
        await broker.publish_confirmed(default, message, queue)
        metrics.RETRIED.labels(r.label).inc()
        log.warning(
            "event failed; retrying later",
            extra={"action": "retry", "handler": r.label, "attempt": attempt + 1, **ids,
                   "delay_ms": delays[attempt], "error": broker.cut(redact_text(error), 300)},
        )  # fmt: skip
