"""The real `taskledger run --only capacity` as subprocesses: sharing, kill -9, restart.

What the agents see is checked on the wire: a queue bound to ``dispatch.#`` on
``<prefix>.dispatch`` collects every ``dispatch.assigned``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue

from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.outbox import dispatch_message_id
from consumer.runtime.faults import FAULT_CRASH_BEFORE_PUBLISH
from contracts import EventType, make_event
from tests.support.processes import Service
from tests.support.traffic import publish, wait_until

ENV = {
    "TASKLEDGER_TIMER_INTERVAL_S": "0.2",
    "TASKLEDGER_OUTBOX_INTERVAL_S": "0.2",
    "TASKLEDGER_RETRY_DELAYS_MS": "[200, 1000]",  # as the topology fixture declares them
}

Message = tuple[str, bytes]


def request(task_id: uuid.UUID, priority: int = 3) -> Message:
    data = {
        "work_plan": {"task": str(task_id)},
        "required": {"gpu_vram_mb": 0, "cpu_cores": 0, "memory_mb": 10},
        "agent_type": "infra",
        "priority": priority,
    }
    body = make_event(EventType.DISPATCH_REQUESTED, data, source="orchestrator", subject=task_id)
    return "dispatch.requested", body


def report(agent_id: str, memory_mb: int) -> Message:
    data = {
        "agent_id": agent_id,
        "agent_type": "infra",
        "free": {"gpu_vram_mb": 0, "cpu_cores": 4.0, "memory_mb": memory_mb},
        "load_pct": 20.0,
        "accepting": True,
    }
    return "capacity.reported", make_event(
        EventType.CAPACITY_REPORTED, data, source=f"agents/{agent_id}"
    )


@pytest.fixture
async def dispatch_queue(topology: AbstractChannel, settings: Settings) -> AbstractQueue:
    """What an agent fleet would bind: every dispatch.assigned of this prefix."""
    queue = await topology.declare_queue(exclusive=True)
    await queue.bind(Names(settings.prefix).dispatch, routing_key="dispatch.#")
    return queue


async def consumers(channel: AbstractChannel, settings: Settings) -> int:
    queue = await channel.declare_queue(Names(settings.prefix).capacity, passive=True)
    return int(queue.declaration_result.consumer_count or 0)


async def start(
    settings: Settings, channel: AbstractChannel, n: int = 1, **env: str
) -> list[Service]:
    """Start ``n`` capacity handlers and wait until each consumes the queue.

    Readiness is each process's own "consuming" line, not the queue's consumer count: a
    handler killed just before may still be counted by the broker for a moment, which made
    a count-based wait time out. If they do not get ready, every started process is
    stopped before the failure is raised.
    """
    services: list[Service] = []
    try:
        for _ in range(n):
            services.append(await Service(settings, ("--only", "capacity"), {**ENV, **env}).start())

        async def ready() -> bool:
            for service in services:
                assert service.proc is not None
                assert service.proc.returncode is None, service.log()
            return all("consuming" in service.log() for service in services)

        await wait_until(ready, timeout=60, what=f"{n} capacity handler(s) consuming")
        assert await consumers(channel, settings) >= n
    except BaseException:
        for service in services:
            await service.close()
        raise
    return services


async def stop(services: list[Service]) -> None:
    """SIGTERM each; each must exit 0."""
    for service in services:
        service.terminate()
    for service in services:
        assert await service.wait(30) == 0, service.log()


async def collect(queue: AbstractQueue, tasks: set[uuid.UUID], seconds: float = 60) -> list[Any]:
    """Read dispatch messages until every task in ``tasks`` was seen at least once."""
    got: list[Any] = []
    seen: set[uuid.UUID] = set()

    async def loop() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
            seen.add(uuid.UUID(orjson.loads(message.body)["data"]["task_id"]))
        return seen >= tasks

    await wait_until(loop, timeout=seconds, what=f"{len(tasks)} tasks dispatched")
    return got


async def count(pool: asyncpg.Pool, sql: str) -> int:
    return int(await pool.fetchval(sql))


async def test_three_handlers_release_each_entry_exactly_once(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: AbstractChannel,
    dispatch_queue: AbstractQueue,
) -> None:
    services = await start(settings, topology, 3)
    try:
        tasks = [uuid.uuid4() for _ in range(150)]
        await publish(amqp, settings, [request(t, 1 + i % 5) for i, t in enumerate(tasks)])
        await wait_until(
            lambda: _equals(pool, "SELECT count(*) FROM pause_queue", len(tasks)),
            what="every request paused",
        )
        # 10 agents with room for 20 entries each, reporting twice: more room than work,
        # spread over the three processes, which then race for the same entries.
        reports = [report(f"infra-{i:02}", 200) for i in range(10)]
        await publish(amqp, settings, reports + [report(f"infra-{i:02}", 200) for i in range(10)])
        messages = await collect(dispatch_queue, set(tasks))
        await wait_until(
            lambda: _equals(pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", 0),
            what="the outbox drained",
        )
        await stop(services)
    finally:
        for service in services:
            await service.close()
    # stopped: nothing can be in flight any more; the queue holds no second copy
    while (extra := await dispatch_queue.get(no_ack=True, fail=False)) is not None:
        messages.append(extra)
    per_task = Counter(orjson.loads(m.body)["data"]["task_id"] for m in messages)
    assert len(per_task) == len(tasks)
    assert set(per_task.values()) == {1}, "an entry was released twice"
    assert await count(pool, "SELECT count(*) FROM pause_queue") == 0
    released = "SELECT count(*) FROM pause_history WHERE action = 'released'"
    assert await count(pool, released) == len(tasks)


async def test_kill_between_commit_and_publish_loses_no_dispatch(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: AbstractChannel,
    dispatch_queue: AbstractQueue,
) -> None:
    tasks = [uuid.uuid4() for _ in range(20)]
    [crashing] = await start(settings, topology, 1, **{FAULT_CRASH_BEFORE_PUBLISH: "1"})
    try:
        await publish(amqp, settings, [report("infra-01", 10_000)])
        await publish(amqp, settings, [request(t) for t in tasks])
        # the relay kills the process (exit 137, as kill -9) right before its first publish,
        # after the handler committed the admissions
        assert await crashing.wait(60) == 137, crashing.log()
    finally:
        await crashing.close()
    committed = await count(pool, "SELECT count(*) FROM outbox")
    assert committed >= 1
    assert await count(pool, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == 0
    assert await dispatch_queue.get(no_ack=True, fail=False) is None, "nothing was published"

    services = await start(settings, topology, 1)
    try:
        messages = await collect(dispatch_queue, set(tasks))
        await stop(services)
    finally:
        for service in services:
            await service.close()
    for message in messages:
        envelope = orjson.loads(message.body)
        task_id = uuid.UUID(envelope["data"]["task_id"])
        assert envelope["id"] == message.message_id == str(dispatch_message_id(task_id))
        assert envelope["data"]["trigger"] == "immediate"
    assert {uuid.UUID(orjson.loads(m.body)["subject"]) for m in messages} == set(tasks)


async def test_restart_with_entries_waiting_resumes_them(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: AbstractChannel,
    dispatch_queue: AbstractQueue,
) -> None:
    tasks = [uuid.uuid4() for _ in range(30)]
    services = await start(settings, topology, 1)
    try:
        await publish(amqp, settings, [request(t) for t in tasks])
        await wait_until(
            lambda: _equals(pool, "SELECT count(*) FROM pause_queue", len(tasks)),
            what="every request paused",
        )
        await stop(services)
    finally:
        for service in services:
            await service.close()

    # capacity comes back while no handler runs; the report waits in the queue
    await publish(amqp, settings, [report("infra-01", 10_000)])
    services = await start(settings, topology, 1)
    try:
        messages = await collect(dispatch_queue, set(tasks))
        await stop(services)
    finally:
        for service in services:
            await service.close()
    assert {orjson.loads(m.body)["data"]["trigger"] for m in messages} == {"capacity"}
    assert await count(pool, "SELECT count(*) FROM pause_queue") == 0


async def _equals(pool: asyncpg.Pool, sql: str, expected: int) -> bool:
    return await count(pool, sql) == expected
