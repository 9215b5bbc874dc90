"""One pass over the dead queue that reads without consuming.

AMQP 0-9-1 has no peek, so a pass consumes the dead queue
with manual acks on a dedicated channel whose prefetch window is the whole depth at start,
and closes that channel without acknowledging what should stay. Checked on RabbitMQ 3.10
quorum queues: a closed channel's messages go back ahead of the rest of the queue, in
the order they were delivered, but behind messages already waiting in the queue's
returned list; so a pass always checks out the whole queue, even when it looks at fewer
messages (``limit``), and never uses ``basic.nack(requeue=True)`` on a live consumer
(which reorders). A pass looks at no more than the depth at start, so messages arriving
meanwhile (a replayed message failing again) are not looked at twice and a pass always
ends. Each return counts as a delivery (header ``x-delivery-count``); the dead queue has
no delivery limit, so this is harmless (checked: 25 passes in a row lose nothing). On
RabbitMQ 4, whose quorum queues get a default delivery limit of 20, that limit must be
lifted on the dead queue the way that version documents, or repeated passes would drop
messages (not with ``x-delivery-limit: -1`` on 3.x: there it drops a message at its first
return, also checked). One pass holds the queue: two operators scanning at once each see
part of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import suppress
from types import TracebackType

import aiormq
from aio_pika.abc import AbstractChannel as PikaChannel
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, DeliveredMessage

from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable, InvalidArgument
from consumer.core.retry import pause
from consumer.dlq.letters import DeadLetter, inspect

log = logging.getLogger(__name__)

MAX_PREFETCH = 65535  # basic.qos prefetch-count is a 16-bit field; 0 means unlimited


class DeadQueueScan:
    """One pass over the dead queue: at most the depth at start, nothing taken unless acked.

    Use as ``async with DeadQueueScan(conn, names) as scan: async for m in scan.messages()``.
    Leaving the block closes the channel, which returns every unacknowledged message to
    the head of the queue in its original order.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        names: Names,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float = 10.0,
    ) -> None:
        self._connection = connection
        self._names = names
        self._max = max_messages
        self._idle_timeout_s = idle_timeout_s
        self._inbox: asyncio.Queue[DeliveredMessage | None] = asyncio.Queue()
        self._pika: PikaChannel | None = None
        self._channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self.depth = 0
        """Messages ready in the dead queue when the pass started."""
        self.delivered = 0
        self.acked = 0

    @property
    def total(self) -> int:
        """How many messages this pass looks at, at most."""
        return self.depth if self._max is None else min(self.depth, self._max)

    async def __aenter__(self) -> DeadQueueScan:
        self._pika = await self._connection.channel(publisher_confirms=False)
        self._channel = await self._pika.get_underlay_channel()
        try:
            declared = await self._channel.queue_declare(self._names.dead, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise InvalidArgument(
                f"queue {self._names.dead} does not exist: check TASKLEDGER_PREFIX, or start "
                "the service once so it declares its topology"
            ) from None
        self.depth = int(declared.message_count or 0)
        if self.total == 0:
            return self
        self._channel.closing.add_done_callback(lambda _: self._inbox.put_nowait(None))
        # The whole queue is checked out to this consumer, even when fewer messages will be
        # looked at: a quorum queue returns a closed channel's messages to the back of its
        # returned-messages list, so only a pass that holds all of them keeps the order.
        prefetch = self.depth if self.depth <= MAX_PREFETCH else 0
        await self._channel.basic_qos(prefetch_count=prefetch)
        consume_ok = await self._channel.basic_consume(
            self._names.dead, self._on_message, no_ack=False
        )
        self._consumer_tag = consume_ok.consumer_tag
        return self

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_consuming()
        if self._pika is not None and not self._pika.is_closed:
            with suppress(Exception):
                await self._pika.close()
            if self.delivered:
                await self._await_returned()

    async def _await_returned(self, timeout_s: float = 5.0) -> None:
        """Wait until the broker has put back what this pass held and did not ack.

        A quorum queue returns a closed channel's messages asynchronously: without this,
        a read right after a pass (``dlq summary`` then ``dlq list``) could find the
        queue empty. Bounded: another consumer of the dead queue could keep it lower.
        """
        expected = self.depth - self.acked
        deadline = asyncio.get_running_loop().time() + timeout_s
        with suppress(Exception):
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                raw = await channel.get_underlay_channel()
                while asyncio.get_running_loop().time() < deadline:
                    declared = await raw.queue_declare(self._names.dead, passive=True)
                    if int(declared.message_count or 0) >= expected:
                        return
                    await pause(0.01)
            finally:
                await channel.close()

    async def _stop_consuming(self) -> None:
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is None or self._channel is None or self._channel.is_closed:
            return
        with suppress(aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError):
            await self._channel.basic_cancel(tag)

    async def messages(self) -> AsyncGenerator[DeadLetter, None]:
        """Yield the messages of this pass in queue order.

        Raises :class:`BrokerUnavailable` when the connection or channel is lost. Stops
        early (with a warning) if nothing arrives for the idle timeout, which only
        happens when another consumer took messages from the dead queue meanwhile.
        """
        while self.delivered < self.total:
            try:
                item = await self._next()
            except TimeoutError:
                log.warning(
                    "dead queue pass ended early: nothing delivered",
                    extra={"action": "dlq_scan", "seen": self.delivered, "expected": self.total},
                )
                break
            if item is None or self.lost:
                raise BrokerUnavailable("the connection to RabbitMQ was lost during the pass")
            self.delivered += 1
            yield inspect(
                item.body,
                item.header.properties,
                self._names,
                delivery_tag=item.delivery_tag or 0,
                routing_key=item.routing_key or "",
                exchange=item.exchange or "",
            )
        await self._stop_consuming()

    async def _next(self) -> DeliveredMessage | None:
        if not self._inbox.empty():  # the common case: no timer, no task per message
            return self._inbox.get_nowait()
        return await asyncio.wait_for(self._inbox.get(), self._idle_timeout_s)

    @property
    def lost(self) -> bool:
        """Whether the channel closed under the pass (nothing held can be acked any more)."""
        return self._channel is not None and self._channel.is_closed

    async def ack(self, letter: DeadLetter) -> None:
        """Remove ``letter`` from the dead queue; raises aiormq errors if the channel is gone."""
        if self._channel is None:
            raise aiormq.exceptions.ChannelInvalidStateError("scan not open")
        # wait=True: the ack is on the wire when this returns, so a connection closed right
        # after does not silently drop it (the message would then be counted as moved and
        # still be in the dead queue).
        await self._channel.basic_ack(letter.delivery_tag, wait=True)
        self.acked += 1
