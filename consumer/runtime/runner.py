"""The consumer of one queue for one handler: connect, consume, reconnect, stop.

One place decides ack, dead-letter or retry. The path of one event:

1. :class:`Runner` (here) holds the connection; the broker pushes deliveries into its
   buffer (:class:`~consumer.runtime.delivery.Delivery`), straight from the channel's
   frame reader (:func:`~consumer.broker.frames.deliver_inline`), and each is decoded
   as it arrives (:func:`contracts.decode`), while the batch before it commits;
2. :class:`~consumer.runtime.batcher.Batcher` cuts the buffer into batches; an invalid
   delivery is dead-lettered with its reason (:mod:`consumer.runtime.failures`);
3. :class:`~consumer.runtime.writer.BatchWriter` records the valid events in the ledger
   (:mod:`consumer.ledger.inbox`, which drops duplicates) and lets the handler project
   the new ones, in one transaction;
4. after the commit the batch is acknowledged with one ``multiple=True`` ack.

The broker connection lost: deliveries in hand are dropped (the broker delivers them
again; the ledger absorbs them as duplicates), the runner reconnects with back-off,
re-declares the topology and consumes again. A message the client cannot decode no
longer kills the connection (:mod:`consumer.broker.frames` keeps undecodable header
tables as raw bytes). No slow start of the window after a loss: RabbitMQ applies a
per-consumer prefetch change only to consumers created after it (and quorum queues
refuse a channel-wide one), so a window narrowed at consume time would stay narrow.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import asyncpg
from aiormq.abc import DeliveredMessage

from consumer.broker.connection import confirm_channel, connect
from consumer.broker.frames import buffered_frames, deliver_inline
from consumer.broker.topology import Names, declare_topology
from consumer.core import metrics
from consumer.core.retry import Backoff, pause
from consumer.core.settings import Settings, redact_text
from consumer.runtime.batcher import Batcher
from consumer.runtime.delivery import BROKER_ERRORS, Delivery
from consumer.runtime.handler import Handler

log = logging.getLogger(__name__)


class ShutdownAbandoned(Exception):
    """The shutdown budget ran out with a batch not committed; it is left unacknowledged."""


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
        self.buffer: list[Delivery] = []
        #: Set when a delivery arrives that should end the batcher's wait.
        self.wake = asyncio.Event()
        #: Set by the connection's close callback.
        self.lost = asyncio.Event()
        self.idle = asyncio.Event()
        self._shutdown_deadline: float | None = None
        self._consumed = False

    # -- connection lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Consume until stopped; reconnect by itself when the broker goes away."""
        backoff = Backoff(first=0.5, cap=10.0)
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
                    backoff.reset()
                    self._consumed = False
                metrics.RECONNECTS.labels(self.label).inc()
                delay = backoff.next()
                log.warning(
                    "broker connection lost; reconnecting",
                    extra={"action": "reconnect", "handler": self.label,
                           "error": redact_text(str(exc)) or type(exc).__name__,
                           "backoff_s": round(delay, 3)},
                )  # fmt: skip
                await pause(delay, self.stopping)

    async def _session(self) -> None:
        connection = await connect(self.settings.amqp)
        self.lost.clear()
        self.buffer.clear()
        metrics.IN_FLIGHT.labels(self.label).set(0)
        connection.close_callbacks.add(self._on_close)
        try:
            publish_channel = await confirm_channel(connection)
            await declare_topology(publish_channel, self.settings)
            consume_channel = await connection.channel(publisher_confirms=False)
            # a channel closed alone (by the broker, or its frame reader failing) is a lost
            # session too: the buffered deliveries are re-delivered on the next one
            consume_channel.close_callbacks.add(self._on_close)
            raw = await consume_channel.get_underlay_channel()
            await raw.basic_qos(prefetch_count=self.settings.prefetch)
            tag = f"taskledger.{self.label}.{uuid.uuid4().hex}"
            buffered_frames()  # whole frames straight from the read buffer (process-wide)
            deliver_inline(raw, tag, self._accept)  # no asyncio task per message
            ok = await raw.basic_consume(
                self.queue, self._on_message, no_ack=False, consumer_tag=tag
            )
            self._consumed = True
            log.info(
                "consuming",
                extra={"action": "consume", "handler": self.label, "queue": self.queue,
                       "prefetch": self.settings.prefetch},
            )  # fmt: skip
            await Batcher(self, publish_channel, raw).loop(str(ok.consumer_tag))
        finally:
            connection.close_callbacks.discard(self._on_close)
            self.buffer.clear()
            if not connection.is_closed:
                await connection.close()

    def _on_close(self, *_: Any) -> None:
        self.lost.set()
        self.wake.set()

    def _accept(self, message: DeliveredMessage) -> None:
        """Take one delivery: decode it now (while the batch before it commits) and
        buffer it; wake the batcher on the first one and on a full batch."""
        delivery = Delivery(message, time.monotonic())
        delivery.prepare()
        buffer = self.buffer
        buffer.append(delivery)
        n = len(buffer)
        if n == 1 or n >= self.settings.batch_size:
            self.wake.set()

    async def _on_message(self, message: DeliveredMessage) -> None:
        """The client's callback path (used only if :func:`deliver_inline` could not be
        installed)."""
        self._accept(message)

    # -- the shutdown budget --------------------------------------------------------

    def start_shutdown_budget(self) -> None:
        """Start the stop budget (``settings.shutdown_timeout_s``) if not started yet."""
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.settings.shutdown_timeout_s

    def check_deadline(self) -> None:
        """Give up a held batch once a stop was asked for and its budget is spent.

        The budget starts when the stop is noticed here too: a consumer holding a batch
        while PostgreSQL is down never reaches the drain, and must still exit on SIGTERM.
        """
        if self.stopping.is_set():
            self.start_shutdown_budget()
        deadline = self._shutdown_deadline
        if deadline is not None and time.monotonic() > deadline:
            raise ShutdownAbandoned
