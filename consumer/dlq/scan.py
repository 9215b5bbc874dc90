"""One pass over the dead queue that reads without consuming, in a bounded window.

AMQP 0-9-1 has no peek, so a pass consumes the dead queue with manual acks on a
dedicated channel and closes that channel without acknowledging what should stay.
Checked on RabbitMQ 3.10 quorum queues: a closed channel's messages go back ahead of the
rest of the queue, in the order they were delivered, but *behind* messages already
waiting in the queue's returned list (after one pass, that is all of them). So a pass
must check out every message that was there when it started, even when it looks at fewer
(``limit``), or the next reader would see the queue rotated; and it never uses
``basic.nack(requeue=True)`` on a live consumer (which reorders). Messages arriving
meanwhile (a replayed message failing again) are not looked at, so a pass always ends.
Each return counts as a delivery (``x-delivery-count``); the dead queue has no delivery
limit on 3.x (on RabbitMQ 4 the default quorum limit of 20 must be lifted on it).

Nothing is acked before the end, so the consumers' prefetch must cover the whole depth.
A prefetch count is at most 65,535 (and a quorum queue caps "unlimited" at 2,000), so a
pass checks the queue out through *holder* channels of :data:`PER_CHANNEL` messages each,
opened one after the other: the next one only once the previous one received all its
messages (so each holds one contiguous stretch of the queue), and closed in the same
order at the end, each close awaited until its messages are back (so the stretches go
back in order). Their prefetch adds up to the depth at start. Up to 65,535 messages
that is one channel, as it always was; deeper, a pass that acks before its last holder
is full (replay, export --purge) frees credit in the middle of the queue, so what stays
may come back reordered (read-only passes keep the order at any depth).

Memory does not grow with the depth: delivered messages go into an inbox of
:data:`WINDOW` messages, and while it is full the channel's frame reader waits: the client
stops reading the socket and TCP holds the broker back. Past the messages a pass looks at,
deliveries are counted and dropped. This is why a pass consumes
on the connection of :func:`consumer.dlq.lease.dead_letter_lease` and on nothing else:
a stalled reader would also stall every other channel of its connection (publisher
confirms included).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import suppress
from types import TracebackType
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel as PikaChannel
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec

from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable, InvalidArgument
from consumer.core.retry import pause
from consumer.dlq.letters import DeadLetter, inspect

log = logging.getLogger(__name__)

#: Messages delivered and not yet looked at, at most.
WINDOW = 256
#: Messages one holder channel checks out (the largest AMQP prefetch count).
PER_CHANNEL = 65535
_TAG_BITS = 32  # a letter's delivery tag: holder number << 32 | the channel's own tag


class _Holder:
    """One channel holding a contiguous stretch of the queue, unacked."""

    def __init__(self, number: int, pika: PikaChannel, raw: AbstractChannel, quota: int) -> None:
        self.number = number
        self.pika = pika
        self.raw = raw
        self.quota = quota
        self.received = 0
        self.acked = 0


class DeadQueueScan:
    """One pass over the dead queue: at most the depth at start, nothing taken unless acked.

    Use as ``async with DeadQueueScan(conn, names) as scan: async for m in scan.messages()``
    where ``conn`` is the lease connection. Leaving the block checks out what is left of
    the depth at start (dropping it), then closes the holder channels in order, which
    returns every unacknowledged message to the head of the queue in its original order.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        names: Names,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float = 10.0,
        window: int = WINDOW,
        per_channel: int = PER_CHANNEL,
    ) -> None:
        self._connection = connection
        self._names = names
        self._max = max_messages
        self._idle_timeout_s = idle_timeout_s
        self._per_channel = max(1, min(per_channel, PER_CHANNEL))
        self._inbox: asyncio.Queue[tuple[int, DeliveredMessage] | None] = asyncio.Queue(
            maxsize=window
        )
        self._dropping = False
        self._received = 0
        self._assigned = 0
        self._arrived = asyncio.Event()
        self._holders: list[_Holder] = []
        self._opening: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self.depth = 0
        """Messages ready in the dead queue when the pass started."""
        self.delivered = 0
        self.acked = 0

    @property
    def total(self) -> int:
        """How many messages this pass looks at, at most."""
        return self.depth if self._max is None else min(self.depth, self._max)

    async def __aenter__(self) -> DeadQueueScan:
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            raw = await channel.get_underlay_channel()
            declared = await raw.queue_declare(self._names.dead, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise InvalidArgument(
                f"queue {self._names.dead} does not exist: check TASKLEDGER_PREFIX, or start "
                "the service once so it declares its topology"
            ) from None
        finally:
            if not channel.is_closed:
                with suppress(Exception):
                    await channel.close()
        self.depth = int(declared.message_count or 0)
        if self.depth:
            await self._open_holder()
        return self

    async def _open_holder(self) -> None:
        """Open the next holder channel and start it consuming its quota."""
        quota = min(self._per_channel, self.depth - self._assigned)
        pika = await self._connection.channel(publisher_confirms=False)
        raw = await pika.get_underlay_channel()
        holder = _Holder(len(self._holders), pika, raw, quota)
        self._holders.append(holder)
        self._assigned += quota
        raw.closing.add_done_callback(lambda _: self._wake())

        async def on_deliver(frame: spec.Basic.Deliver) -> None:
            await self._on_deliver_frame(holder, frame)

        # The channel's frame reader awaits this for every delivery (instead of starting a
        # task per message): a full inbox holds the reader, and with it the socket.
        setattr(raw, "_on_deliver_frame", on_deliver)  # noqa: B010
        await raw.basic_qos(prefetch_count=quota)
        await raw.basic_consume(self._names.dead, self._never_called, no_ack=False)

    def _open_next(self) -> None:
        """Open the next holder in the background (from a channel's reader)."""

        async def opening() -> None:
            try:
                await self._open_holder()
            except Exception as exc:  # seen by messages() as a lost connection
                self._failed = exc
                self._wake()

        self._opening = asyncio.get_running_loop().create_task(opening())

    async def _never_called(self, message: DeliveredMessage) -> None:
        """The consumer callback aiormq requires; deliveries go to the inbox instead."""

    async def _on_deliver_frame(self, holder: _Holder, frame: spec.Basic.Deliver) -> None:
        channel: Any = holder.raw
        header = await channel._Channel__get_content_header()
        message = await channel._read_content(frame, header)
        holder.received += 1
        self._received += 1
        self._arrived.set()
        if holder.received == holder.quota and self._assigned < self.depth:
            self._open_next()  # only now: each holder keeps one contiguous stretch
        if not self._dropping and self._received <= self.total:
            await self._inbox.put((holder.number, message))

    def _wake(self) -> None:
        self._arrived.set()
        with suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._dropping = True
        while not self._inbox.empty():  # let a reader waiting on a full inbox go on
            self._inbox.get_nowait()
        if self._holders and not self.lost:
            await self._check_out_the_rest()
        if self._opening is not None:
            with suppress(BaseException):
                await self._opening
        returned = 0
        for holder in self._holders:  # in order: each stretch goes back behind the previous
            if holder.pika.is_closed:
                continue
            with suppress(Exception):
                await holder.pika.close()
            returned += holder.received - holder.acked
            if holder.received:
                await self._await_returned(returned)

    async def _check_out_the_rest(self) -> None:
        """Wait until every message there at the start was delivered (order; see above)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        seen = self._received
        while self._received < self.depth and not self.lost and self._failed is None:
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 0.5)
            if self._received != seen:
                seen, last = self._received, loop.time()
            elif loop.time() - last > self._idle_timeout_s:
                break  # another consumer took some: nothing more will come

    async def _await_returned(self, expected: int, timeout_s: float = 5.0) -> None:
        """Wait until the broker has put back ``expected`` messages (ready again).

        A quorum queue returns a closed channel's messages asynchronously: without this,
        the next holder's stretch could go back first, or a read right after a pass
        (``dlq summary`` then ``dlq list``) could find the queue empty. Bounded: another
        consumer of the dead queue could keep it lower.
        """
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
            number, message = item
            self.delivered += 1
            yield inspect(
                message.body,
                message.header.properties,
                self._names,
                delivery_tag=(number << _TAG_BITS) | (message.delivery_tag or 0),
                routing_key=message.routing_key or "",
                exchange=message.exchange or "",
            )

    async def _next(self) -> tuple[int, DeliveredMessage] | None:
        if not self._inbox.empty():  # the common case: no timer, no task per message
            return self._inbox.get_nowait()
        if self.lost:
            return None
        return await asyncio.wait_for(self._inbox.get(), self._idle_timeout_s)

    @property
    def lost(self) -> bool:
        """Whether a holder channel closed under the pass (what it held cannot be acked)."""
        return self._failed is not None or any(h.raw.is_closed for h in self._holders)

    async def ack(self, letter: DeadLetter) -> None:
        """Remove ``letter`` from the dead queue; raises aiormq errors if the channel is gone."""
        await self.ack_tag(letter.delivery_tag)

    async def ack_tag(self, delivery_tag: int) -> None:
        """Remove the message delivered with ``delivery_tag`` (as a letter has it)."""
        number, tag = delivery_tag >> _TAG_BITS, delivery_tag & ((1 << _TAG_BITS) - 1)
        if number >= len(self._holders):
            raise aiormq.exceptions.ChannelInvalidStateError("scan not open")
        holder = self._holders[number]
        # wait=True: the ack is on the wire when this returns, so a connection closed right
        # after does not silently drop it (the message would then be counted as moved and
        # still be in the dead queue).
        await holder.raw.basic_ack(tag, wait=True)
        holder.acked += 1
        self.acked += 1
