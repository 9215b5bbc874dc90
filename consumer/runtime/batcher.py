"""One connection's worth of consuming: gather deliveries into batches and flush them.

A batch is flushed on count (``batch_size``), on a short linger, or at the end (a stop,
or an idle queue in burst mode). Each delivery was decoded as it arrived
(:meth:`~consumer.runtime.delivery.Delivery.prepare`); at the flush an invalid one is
dead-lettered with its reason; the valid ones are written in one transaction by the
:class:`~consumer.runtime.writer.BatchWriter`; then the whole batch is acknowledged with
one ``multiple=True`` ack. Nothing is acknowledged before it is committed or confirmed
in the dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import aiormq
import asyncpg

from consumer.broker.connection import queue_depth
from consumer.broker.topology import Names
from consumer.core import metrics
from consumer.core.errors import BrokerUnavailable
from consumer.core.retry import pause
from consumer.core.settings import Settings
from consumer.runtime.delivery import BROKER_ERRORS, Delivery
from consumer.runtime.failures import FailureRouter
from consumer.runtime.handler import Handler
from consumer.runtime.writer import BatchWriter
from contracts import Event


class FlushTrigger(StrEnum):
    """Why a write batch was flushed (internal: not on the wire; see ``contracts.TriggerType``).

    Recorded on the batch's ledger chain link (``ledger_chain.trigger``) and counted in
    ``taskledger_batch_flush_total``; ``taskledger audit flushes`` shows them.
    """

    COUNT = "count"  # the batch was full
    TIMEOUT = "timeout"  # its linger time passed
    END_OF_SOURCE = "end_of_source"  # the consumer stopped and drained what it held


if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel


class Source(Protocol):
    """What the batcher needs of the consumer that feeds it (the
    :class:`~consumer.runtime.runner.Runner`): its settings and names, the buffer the
    broker fills, the events that wake or stop the loop, and the shutdown budget."""

    settings: Settings
    handler: Handler
    pool: asyncpg.Pool
    names: Names
    queue: str
    label: str
    burst: bool
    buffer: list[Delivery]
    wake: asyncio.Event
    lost: asyncio.Event
    stopping: asyncio.Event
    idle: asyncio.Event

    def check_deadline(self) -> None:
        """Raise once a stop was asked for and its budget is spent."""

    def start_shutdown_budget(self) -> None:
        """Start the stop budget if not started yet."""


log = logging.getLogger(__name__)


class Batcher:
    """The batching loop of one consuming session."""

    def __init__(
        self, runner: Source, publish_channel: AbstractChannel, raw: aiormq.abc.AbstractChannel
    ) -> None:
        self.r = runner
        self.publish_channel = publish_channel
        self.raw = raw
        self.router = FailureRouter(
            runner.settings, publish_channel, runner.names, runner.queue, runner.label
        )
        self.writer = BatchWriter(
            runner.settings, runner.handler, runner.pool, self.router, runner.check_deadline
        )
        self._last_delivery = time.monotonic()
        self._last_flush = 0.0

    async def loop(self, consumer_tag: str) -> None:
        """Flush batches until the connection is lost, a stop, or (burst) an idle queue."""
        r = self.r
        linger = r.settings.batch_linger_ms / 1000
        while True:
            if r.lost.is_set():
                raise BrokerUnavailable("connection closed")
            if r.stopping.is_set():
                await self._drain_and_stop(consumer_tag)
                return
            buffer = r.buffer
            now = time.monotonic()
            if len(buffer) >= r.settings.batch_size:
                await self._flush(FlushTrigger.COUNT)
                continue
            # A partial batch waits out the linger from its first message, and at least
            # the linger since the last flush: under load that lets batches grow instead
            # of committing whatever trickled in during the previous write.
            due = max(buffer[0].received, self._last_flush) + linger if buffer else 0.0
            if buffer and now >= due:
                await self._flush(FlushTrigger.TIMEOUT)
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
            r.wake.clear()
            if r.buffer and r.buffer[-1].received > self._last_delivery:
                self._last_delivery = r.buffer[-1].received
            await pause(timeout, r.stopping, r.wake)

    async def _burst_done(self) -> bool:
        """In burst mode: nothing in hand, nothing arrived lately, the queue is empty."""
        if time.monotonic() - self._last_delivery < 0.3:
            return False
        depth = await queue_depth(self.publish_channel, self.r.queue)
        if depth:
            self._last_delivery = time.monotonic()
            return False
        return not self.r.buffer

    async def _drain_and_stop(self, consumer_tag: str) -> None:
        """Stop taking deliveries, then commit and acknowledge everything in hand."""
        r = self.r
        r.start_shutdown_budget()
        try:
            await asyncio.wait_for(self.raw.basic_cancel(consumer_tag), 5)
        except (TimeoutError, *BROKER_ERRORS):  # type: ignore[misc]
            return  # connection gone: what is in hand comes again elsewhere
        while r.buffer:
            await self._flush(FlushTrigger.END_OF_SOURCE)
        log.info("stopped consuming", extra={"action": "stop", "handler": r.label})

    async def _flush(self, trigger: FlushTrigger) -> None:
        r = self.r
        batch = r.buffer[: r.settings.batch_size]
        del r.buffer[: len(batch)]
        label = r.label
        metrics.EVENTS_RECEIVED.labels(label).inc(len(batch))
        metrics.BATCH_SIZE.labels(label).observe(len(batch))
        metrics.FLUSHES.labels(label, trigger.value).inc()
        metrics.IN_FLIGHT.labels(label).set(len(r.buffer))
        valid: list[tuple[Delivery, Event]] = []
        for delivery in batch:
            if delivery.event is None and delivery.reason is None:
                delivery.prepare()  # decoded on arrival as a rule; never acted on undecoded
            if delivery.event is not None:
                valid.append((delivery, delivery.event))
            else:
                await self.router.dead_letter(delivery, delivery.reason or "", delivery.error or "")
        if valid:
            await self.writer.write(valid, trigger.value)
        await self.raw.basic_ack(batch[-1].tag, multiple=True)
        self._last_flush = time.monotonic()
