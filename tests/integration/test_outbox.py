"""The outbox relay against real PostgreSQL and RabbitMQ: confirms, ids, failures, wake-up."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from pydantic import SecretStr

from consumer import outbox
from consumer.admission.handler import CapacityHandler
from consumer.broker import Names
from consumer.core.errors import BrokerUnavailable
from consumer.core.settings import Settings
from consumer.outbox import OutboxRelay
from consumer.store import db
from contracts import EventType, TriggerType, decode, make_event
from tests.support.traffic import burst, publish

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def dispatch_queue(topology: AbstractChannel, settings: Settings) -> AbstractQueue:
    """A queue bound to everything the dispatch exchange carries (what agents would bind)."""
    queue = await topology.declare_queue(exclusive=True)
    for key in ("dispatch.#", "recovery.#"):
        await queue.bind(Names(settings.prefix).dispatch, routing_key=key)
    return queue


async def collect(queue: AbstractQueue, n: int, seconds: float = 10) -> list[Any]:
    """Take ``n`` messages from ``queue``, failing if they do not come in time."""
    got: list[Any] = []

    async def take() -> None:
        while len(got) < n:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            got.append(message)

    await asyncio.wait_for(take(), seconds)
    return got


async def assert_no_more(queue: AbstractQueue) -> None:
    assert await queue.get(no_ack=True, fail=False) is None


async def enqueue(pool: asyncpg.Pool, settings: Settings, n: int = 1) -> list[outbox.Outgoing]:
    """Write ``n`` dispatch.assigned rows to the outbox in one transaction."""
    names = Names(settings.prefix)
    messages = [
        outbox.dispatch_assigned(
            names,
            task_id=uuid.uuid4(),
            agent_type="infra",
            agent_id="infra-01",
            work_plan={"step": i},
            trigger=TriggerType.CAPACITY,
        )
        for i in range(n)
    ]
    async with db.transaction(pool) as conn:
        assert len(await outbox.enqueue(conn, messages)) == n
    return messages


async def test_relay_publishes_with_confirms_and_marks_sent(
    pool: asyncpg.Pool, settings: Settings, dispatch_queue: AbstractQueue
) -> None:
    [sent] = await enqueue(pool, settings)
    relay = OutboxRelay(settings, pool)
    try:
        assert await relay.drain() == 1
    finally:
        await relay.close_broker()

    [message] = await collect(dispatch_queue, 1)
    assert message.routing_key == "dispatch.infra.infra-01"
    assert message.exchange == f"{settings.prefix}.dispatch"
    assert message.message_id == str(sent.message_id)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.body == sent.body
    event = decode(message.body)
    assert event.id == sent.message_id == outbox.dispatch_message_id(sent.task_id)  # type: ignore[arg-type]
    row = await pool.fetchrow("SELECT * FROM outbox")
    assert row["sent_at"] is not None
    assert row["attempts"] == 1
    assert row["last_error"] is None
    assert await relay.refresh_pending() == 0


async def test_republish_carries_the_same_id(
    pool: asyncpg.Pool, settings: Settings, dispatch_queue: AbstractQueue
) -> None:
    await enqueue(pool, settings)
    relay = OutboxRelay(settings, pool)
    try:
        await relay.drain()
        # a crash after the confirm but before the row was marked sent: the row is unsent
        await pool.execute("UPDATE outbox SET sent_at = NULL")
        assert await relay.drain() == 1
    finally:
        await relay.close_broker()
    first, second = await collect(dispatch_queue, 2)
    assert first.body == second.body
    assert first.message_id == second.message_id
    assert orjson.loads(first.body)["id"] == first.message_id


async def test_same_message_id_is_queued_once(pool: asyncpg.Pool, settings: Settings) -> None:
    [message] = await enqueue(pool, settings)
    async with db.transaction(pool) as conn:
        assert await outbox.enqueue(conn, [message]) == []
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_broker_failure_keeps_the_row_for_later(
    pool: asyncpg.Pool, settings: Settings, dispatch_queue: AbstractQueue
) -> None:
    await enqueue(pool, settings)
    unreachable = settings.model_copy(
        update={"amqp_url": SecretStr("amqp://guest:guest@127.0.0.1:1/")}
    )
    broken = OutboxRelay(unreachable, pool)
    with pytest.raises(BrokerUnavailable):
        await broken.drain()
    row = await pool.fetchrow("SELECT * FROM outbox")
    assert row["sent_at"] is None
    assert row["attempts"] == 1
    assert "cannot reach RabbitMQ" in row["last_error"]
    assert "guest:guest" not in row["last_error"]

    relay = OutboxRelay(settings, pool)
    try:
        assert await relay.drain() == 1
    finally:
        await relay.close_broker()
    await collect(dispatch_queue, 1)
    assert await pool.fetchval("SELECT attempts FROM outbox") == 2


async def test_running_relay_is_woken_by_the_commit(
    pool: asyncpg.Pool, settings: Settings, dispatch_queue: AbstractQueue
) -> None:
    slow_poll = settings.model_copy(update={"outbox_interval_s": 60.0})
    relay = OutboxRelay(slow_poll, pool)
    stopping = asyncio.Event()
    busy: dict[str, bool] = {}
    task = asyncio.create_task(relay.run(stopping, busy=busy))
    try:
        await asyncio.wait_for(relay.passed.wait(), 10)  # the first (empty) pass is done
        await enqueue(pool, settings, 3)
        # polling would take a minute; NOTIFY at commit wakes the relay at once
        assert len(await collect(dispatch_queue, 3, seconds=5)) == 3
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)
    assert busy["outbox"] is False


async def test_burst_relay_drains_before_returning(
    pool: asyncpg.Pool, settings: Settings, dispatch_queue: AbstractQueue
) -> None:
    await enqueue(pool, settings, 450)
    stopping = asyncio.Event()
    stopping.set()  # already told to stop: the last pass still drains everything
    await asyncio.wait_for(OutboxRelay(settings, pool).run(stopping, burst=True), 30)
    assert len(await collect(dispatch_queue, 450)) == 450
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0


async def test_relays_running_at_once_publish_each_row_once(
    pool: asyncpg.Pool, settings: Settings, dispatch_queue: AbstractQueue, db_url: str
) -> None:
    n = 600
    await enqueue(pool, settings, n)
    pools = [await db.create_pool(db_url, min_size=1, max_size=2) for _ in range(3)]
    relays = [OutboxRelay(settings, p, batch_size=25) for p in pools]
    try:
        counts = await asyncio.gather(*(r.drain() for r in relays))
    finally:
        for relay in relays:
            await relay.close_broker()
        for p in pools:
            await p.close()
    assert sum(counts) == n
    messages = await collect(dispatch_queue, n)
    assert len({m.message_id for m in messages}) == n
    await asyncio.sleep(0)  # nothing else is in flight: the relays returned after confirms
    await assert_no_more(dispatch_queue)


async def test_burst_service_publishes_every_dispatch_before_it_exits(
    amqp: aio_pika.abc.AbstractConnection,
    pool: asyncpg.Pool,
    settings: Settings,
    dispatch_queue: AbstractQueue,
) -> None:
    tasks = [uuid.uuid4() for _ in range(40)]
    messages = [("dispatch.requested", request_body(t)) for t in tasks]
    messages.append(("capacity.reported", report_body()))
    await publish(amqp, settings, messages)
    await burst(settings, only="capacity", handlers=[CapacityHandler(settings)])

    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
    got = await collect(dispatch_queue, len(tasks))
    assert {orjson.loads(m.body)["subject"] for m in got} == {str(t) for t in tasks}
    await assert_no_more(dispatch_queue)


def request_body(task_id: uuid.UUID) -> bytes:
    data = {
        "work_plan": {"task": str(task_id)},
        "required": {"memory_mb": 10},
        "agent_type": "code",
    }
    return make_event(EventType.DISPATCH_REQUESTED, data, source="orchestrator", subject=task_id)


def report_body() -> bytes:
    data = {
        "agent_id": "code-01",
        "agent_type": "code",
        "free": {"gpu_vram_mb": 0, "cpu_cores": 2.0, "memory_mb": 1000},
        "load_pct": 5.0,
        "accepting": True,
    }
    return make_event(EventType.CAPACITY_REPORTED, data, source="agents/code-01")
