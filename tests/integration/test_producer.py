"""consumer.producer.Publisher against real RabbitMQ: confirms, the same id on a lost confirm.

A TCP proxy in front of the broker stalls the connection right after the publish, so the
confirm never comes; the publisher must give up on that connection, reconnect and publish
the same body again. Whatever reached the broker (the original, when the proxy lets it
through late, and the repeat) is one event id, which the ledger stores once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue

from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable
from consumer.core.settings import Settings
from consumer.producer import Publisher
from contracts import EventType, TaskStarted
from tests.support.proxy import Proxy
from tests.support.traffic import burst


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[Proxy]:
    parts = urlsplit(amqp_url)
    started = await Proxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    yield started
    await started.stop()


def via(url: str, proxy: Proxy) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc = f"{userinfo[0]}@{host}" if len(userinfo) == 2 else host
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def observer(topology: AbstractChannel, settings: Settings) -> AbstractQueue:
    queue = await topology.declare_queue(exclusive=True)
    await queue.bind(Names(settings.prefix).events, routing_key="task.#")
    return queue


async def test_publishes_with_confirm_and_returns_the_id(
    topology: AbstractChannel, settings: Settings, observer: AbstractQueue, pool: asyncpg.Pool
) -> None:
    task = uuid.uuid4()
    async with Publisher(settings.amqp, source="agents/infra-01", prefix=settings.prefix) as pub:
        event_id = await pub.publish(
            EventType.TASK_STARTED, TaskStarted(agent_id="infra-01", agent_type="infra"),
            subject=task,
        )  # fmt: skip
    message = await observer.get(no_ack=True, timeout=5)
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == str(event_id)
    assert orjson.loads(message.body)["id"] == str(event_id)
    await burst(settings)
    assert await pool.fetchval("SELECT count(*) FROM event_ledger WHERE event_id = $1", event_id)


async def test_lost_confirm_publishes_the_same_id_again(
    topology: AbstractChannel, settings: Settings, observer: AbstractQueue, proxy: Proxy,
    pool: asyncpg.Pool,
) -> None:  # fmt: skip
    pub = Publisher(via(settings.amqp, proxy), source="agents/infra-01", prefix=settings.prefix,
                    confirm_timeout=1.0, attempts=6)  # fmt: skip
    await pub.connect()
    proxy.stall()  # the publish leaves, no confirm comes back
    asyncio.get_running_loop().call_later(1.5, proxy.restore)
    try:
        event_id = await pub.publish(
            EventType.TASK_STARTED, {"agent_id": "infra-01", "agent_type": "infra"},
            subject=uuid.uuid4(),
        )  # fmt: skip
    finally:
        await pub.close()
    assert proxy.connections_made >= 2  # it reconnected
    await asyncio.sleep(0.5)
    ids = []
    while (message := await observer.get(no_ack=True, fail=False)) is not None:
        ids.append(orjson.loads(message.body)["id"])
    assert ids and set(ids) == {str(event_id)}
    await burst(settings)
    assert await pool.fetchval("SELECT count(*) FROM event_ledger") == 1


async def test_refuses_bad_events_and_names_a_missing_exchange(settings: Settings) -> None:
    pub = Publisher(settings.amqp, source="agents/infra-01", prefix=settings.prefix)
    with pytest.raises(ValueError, match="subject"):
        await pub.publish(EventType.TASK_STARTED, {"agent_id": "a", "agent_type": "infra"})
    with pytest.raises(BrokerUnavailable, match="does not exist"):
        await pub.connect()  # nothing declared for this prefix
    await pub.close()
