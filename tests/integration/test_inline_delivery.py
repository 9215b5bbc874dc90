"""Deliveries handed straight from the channel's frame reader (no asyncio task per
message): every message reaches the plain function once, in delivery order, with its
body and headers; other consumers of the channel keep the client's path."""

from __future__ import annotations

import asyncio

import aio_pika
from aiormq.abc import DeliveredMessage

from consumer.broker.frames import deliver_inline


async def test_inline_delivery_in_order_and_other_consumers_untouched(
    amqp: aio_pika.abc.AbstractConnection,
) -> None:
    channel = await amqp.channel()
    inline_queue = await channel.declare_queue(exclusive=True)  # gone with the connection
    other_queue = await channel.declare_queue(exclusive=True)
    n = 300
    for i in range(n):
        message = aio_pika.Message(str(i).encode(), headers={"i": i})
        await channel.default_exchange.publish(message, routing_key=inline_queue.name)
    await channel.default_exchange.publish(aio_pika.Message(b"other"), other_queue.name)

    consume_channel = await amqp.channel(publisher_confirms=False)
    raw = await consume_channel.get_underlay_channel()
    await raw.basic_qos(prefetch_count=50)
    inline: list[DeliveredMessage] = []
    through_callback: list[DeliveredMessage] = []
    other: list[DeliveredMessage] = []
    acks: list[asyncio.Future[None]] = []
    done = asyncio.Event()

    def accept(message: DeliveredMessage) -> None:
        inline.append(message)
        if len(inline) % 50 == 0:  # the window is 50: ack what we have to get more
            tag = int(message.delivery.delivery_tag or 0)  # type: ignore[union-attr]
            acks.append(asyncio.ensure_future(raw.basic_ack(tag, multiple=True)))
        if len(inline) == n:
            done.set()

    async def callback(message: DeliveredMessage) -> None:
        through_callback.append(message)

    async def other_callback(message: DeliveredMessage) -> None:
        other.append(message)
        await raw.basic_ack(int(message.delivery.delivery_tag or 0))  # type: ignore[union-attr]

    assert deliver_inline(raw, "inline-tag", accept)
    await raw.basic_consume(inline_queue.name, callback, consumer_tag="inline-tag")
    await raw.basic_consume(other_queue.name, other_callback, consumer_tag="other-tag")
    await asyncio.wait_for(done.wait(), 20)
    await asyncio.gather(*acks)
    for _ in range(100):
        if other:
            break
        await asyncio.sleep(0.05)

    assert [m.body for m in inline] == [str(i).encode() for i in range(n)]
    assert [m.header.properties.headers for m in inline] == [{"i": i} for i in range(n)]
    assert through_callback == []
    assert [m.body for m in other] == [b"other"]
    await consume_channel.close()
    await channel.close()


def test_inline_delivery_is_not_installed_without_the_client_internals() -> None:
    class NotAChannel:
        pass

    target = NotAChannel()
    assert deliver_inline(target, "tag", lambda message: None) is False
    assert not hasattr(target, "_on_deliver_frame")
