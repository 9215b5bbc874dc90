"""Connecting to RabbitMQ and publishing with confirms."""

from __future__ import annotations

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from consumer.core.errors import BrokerUnavailable, MessageUnroutable
from consumer.core.retry import Backoff, pause
from consumer.core.settings import redact_text


async def connect(url: str, *, attempts: int = 1, backoff_s: float = 0.5) -> AbstractConnection:
    """Open a (non-robust) connection; raises :class:`BrokerUnavailable` with a redacted message.

    The service handles reconnection itself (re-declare, consume again), which avoids the
    known traps of robust connections that do not restore consumers.
    """
    last: BaseException | None = None
    backoff = Backoff(first=backoff_s, cap=5.0)
    for attempt in range(attempts):
        try:
            return await aio_pika.connect(url, timeout=10)
        except (OSError, ConnectionError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            last = exc
            if attempt + 1 < attempts:
                await pause(backoff.next())
    raise BrokerUnavailable(
        f"cannot reach RabbitMQ: {redact_text(str(last)) or type(last).__name__}"
    )


async def confirm_channel(connection: AbstractConnection) -> AbstractChannel:
    """A channel for :func:`publish_confirmed`: publisher confirms on, and a message the
    broker returns as unroutable fails its publish instead of vanishing."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


async def publish_confirmed(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str, *, timeout: float = 30
) -> None:
    """Publish ``mandatory`` and wait for the broker's confirm.

    Raises :class:`MessageUnroutable` when no queue took the message (the channel must
    come from :func:`confirm_channel`), and the client's errors when it nacks or the
    connection goes. Every publish of taskledger goes through here: nothing it sends
    can be confirmed and lost.
    """
    try:
        await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=timeout)
    except aiormq.exceptions.PublishError as exc:
        raise MessageUnroutable(
            f"no queue is bound to take routing key {routing_key!r} on exchange {exchange.name!r}"
        ) from exc


async def queue_depth(channel: AbstractChannel, name: str) -> int:
    """Messages ready in queue ``name`` (passive declare; the queue must exist)."""
    queue: AbstractQueue = await channel.declare_queue(name, passive=True)
    return int(queue.declaration_result.message_count or 0)
