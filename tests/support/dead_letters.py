"""Dead letters made by hand, and queues read back with plain aio-pika.

Both ways the service makes dead letters: the consumer way (a copy published to
``<prefix>.dlx`` with the ``x-taskledger-*`` headers, :func:`consumer_dead_letter`) and
the broker way (a message rejected without requeue from a work queue, so only ``x-death``
says where it came from, :func:`broker_dead_letter`). Used by the DLQ API and CLI tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection

from consumer.broker import H_FAILED_AT, Names, dead_letter_headers
from contracts import EventType, make_event
from contracts.examples import EXAMPLES

WAIT_S = 10.0


def event_body(
    event_type: EventType = EventType.TASK_STEP, *, task: uuid.UUID | None = None
) -> bytes:
    """A valid CloudEvents body of ``event_type``."""
    subject = None
    if event_type.value.startswith(("task.", "dispatch.")):
        subject = task or uuid.uuid4()
    return make_event(event_type, EXAMPLES[event_type], source="agents/a1", subject=subject)


def event_id(body: bytes) -> str:
    return str(orjson.loads(body)["id"])


async def consumer_dead_letter(
    channel: AbstractChannel,
    names: Names,
    body: bytes,
    *,
    routing_key: str = "task.step",
    reason: str = "schema_violation",
    error: str = "data.step_number: Input should be greater than or equal to 1",
    source_queue: str | None = None,
    failed_at: datetime | None = None,
    headers: Mapping[str, Any] | None = None,
    **properties: Any,
) -> str:
    """Dead-letter ``body`` the way the consumer does; return its message_id."""
    hdrs = dead_letter_headers(
        headers,
        reason=reason,
        error=error,
        source_queue=source_queue or names.audit,
        routing_key=routing_key,
        exchange=names.events,
    )
    if failed_at is not None:
        hdrs[H_FAILED_AT] = failed_at.isoformat()
    message_id = properties.pop("message_id", None) or uuid.uuid4().hex
    dlx = await channel.get_exchange(names.dlx)
    await dlx.publish(
        aio_pika.Message(
            body,
            headers=hdrs,
            message_id=message_id,
            content_type=properties.pop("content_type", "application/json"),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **properties,
        ),
        routing_key=routing_key,
    )
    return message_id


async def broker_dead_letter(
    channel: AbstractChannel, names: Names, body: bytes, routing_key: str = "task.completed"
) -> str:
    """Publish ``body`` to the events exchange, take it from its work queue and reject it
    without requeue, so the broker dead-letters it with ``x-death`` only. Returns once it
    is in the dead queue (at-least-once dead-lettering is asynchronous)."""
    queue_name = names.audit if routing_key.startswith("task.") else names.capacity
    dead_before = await depth(channel, names.dead)
    message_id = uuid.uuid4().hex
    events = await channel.get_exchange(names.events)
    await events.publish(
        aio_pika.Message(body, message_id=message_id, content_type="application/json"),
        routing_key=routing_key,
    )
    queue = await channel.get_queue(queue_name)

    async def take() -> aio_pika.abc.AbstractIncomingMessage:
        while True:
            message = await queue.get(no_ack=False, fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.01)

    message = await asyncio.wait_for(take(), WAIT_S)
    assert message.message_id == message_id
    await message.reject(requeue=False)
    await wait_depth(channel, names.dead, lambda n: n > dead_before, "the broker's dead letter")
    return message_id


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def wait_depth(
    channel: AbstractChannel, queue: str, predicate: Callable[[int], bool], what: str
) -> int:
    """Poll the depth of ``queue`` until ``predicate`` holds (bounded)."""

    async def poll() -> int:
        while True:
            n = await depth(channel, queue)
            if predicate(n):
                return n
            await asyncio.sleep(0.02)

    try:
        return await asyncio.wait_for(poll(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"{queue}: {what} not reached in {WAIT_S}s") from None


@dataclass(frozen=True)
class Seen:
    """A message as plain aio-pika delivered it (delivery annotations removed)."""

    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]

    @property
    def message_id(self) -> str | None:
        return self.properties.get("message_id")


def seen(message: aio_pika.abc.AbstractIncomingMessage) -> Seen:
    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
    props = {
        name: getattr(message, name)
        for name in (
            "content_type",
            "content_encoding",
            "delivery_mode",
            "priority",
            "correlation_id",
            "reply_to",
            "expiration",
            "message_id",
            "timestamp",
            "type",
            "user_id",
            "app_id",
        )
    }
    return Seen(body=message.body, headers=headers, properties=props)


async def peek(amqp: AbstractConnection, queue: str) -> list[Seen]:
    """Every message of ``queue``, left in it: consume unacked, then close the channel."""
    channel = await amqp.channel()
    n = await depth(channel, queue)
    got: list[Seen] = []
    if n:
        await channel.set_qos(prefetch_count=n)
        q = await channel.get_queue(queue)
        done = asyncio.get_running_loop().create_future()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(seen(message))
            if len(got) == n and not done.done():
                done.set_result(None)

        await q.consume(on_message, no_ack=False)
        await asyncio.wait_for(done, WAIT_S)
    await channel.close()
    return got


async def drain(amqp: AbstractConnection, queue: str) -> list[Seen]:
    """Take (ack) every message of ``queue``."""
    channel = await amqp.channel()
    q = await channel.get_queue(queue)
    got: list[Seen] = []
    while (message := await q.get(no_ack=True, fail=False)) is not None:
        got.append(seen(message))
    await channel.close()
    return got


def ids(messages: list[Seen]) -> list[str | None]:
    return [m.message_id for m in messages]
