"""Two write batches in flight (``TASKLEDGER_WRITE_PIPELINE``), through real RabbitMQ and
PostgreSQL.

- batch n+1 (no task in common) commits while batch n is still open, but is not
  acknowledged before batch n is: a consumer that dies, or a batch n that fails (the
  stop budget spent while it is held), gives both batches back to the broker (one
  ``multiple=True`` ack for n+1 would have covered n's uncommitted deliveries);
- a task's events keep their publication order when they are split over batches in
  flight together, also when the earlier batch rolls back and is bisected;
- the capacity handler never pipelines.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.admission.handler import CapacityHandler
from consumer.audit.handler import AuditHandler
from consumer.broker import Names, queue_depth
from consumer.core.errors import DatabaseUnavailable
from consumer.core.settings import Settings
from consumer.runtime.batcher import pipeline_depth
from consumer.runtime.service import run_service
from contracts import Event
from tests.support.traffic import burst, ledger_count, lifecycle, publish, wait_until

pytestmark = pytest.mark.usefixtures("topology")


class GateOnTask(AuditHandler):
    """The audit handler; a batch holding the gated task waits (transaction open) until
    ``release`` is set."""

    def __init__(self, gated: uuid.UUID) -> None:
        self.gated = gated
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        if any(e.task_id == self.gated for e in events):
            self.waiting.set()
            await self.release.wait()
        await super().apply(conn, events)


async def _rows_of(pool: asyncpg.Pool, task_id: uuid.UUID) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM event_ledger WHERE task_id = $1", task_id))


async def test_a_later_batch_commits_first_but_is_not_acknowledged_before_the_one_before_it(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    gated, other = uuid.uuid4(), uuid.uuid4()
    first, second = lifecycle(gated, steps=6), lifecycle(other, steps=6)
    assert len(first) == len(second) == 10
    await publish(amqp, settings, [*first, *second])
    tuned = settings.model_copy(
        update={"batch_size": 10, "batch_linger_ms": 2000, "write_pipeline": 2}
    )
    handler = GateOnTask(gated)
    service = asyncio.create_task(run_service(tuned, only="audit", handlers=[handler]))
    channel = await amqp.channel()
    try:
        await asyncio.wait_for(handler.waiting.wait(), 30)
        await wait_until(lambda: _same(_rows_of(pool, other), 10), timeout=30,
                         what="the second batch to commit while the first is open")  # fmt: skip
        assert await _rows_of(pool, gated) == 0, "the first batch is still open"
        await asyncio.sleep(0.3)  # give a wrong early ack time to reach the broker
        # the consumer dies with batch 1 open and batch 2 committed
        service.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(service, 30)
        names = Names(settings.prefix)
        await wait_until(lambda: _same(queue_depth(channel, names.audit), 20), timeout=30,
                         what="both batches back in the queue (neither acknowledged)")  # fmt: skip
    finally:
        handler.release.set()
        if not service.done():
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
        await channel.close()

    await burst(settings)
    assert await _rows_of(pool, gated) == 10
    assert await _rows_of(pool, other) == 10
    assert await ledger_count(pool) == 20


async def _same(value: asyncio.Future[int] | object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


@pytest.mark.parametrize("pipeline", [1, 2])
async def test_a_tasks_events_keep_their_order_across_batches_in_flight(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool, pipeline: int
) -> None:
    tasks = [lifecycle(steps=3) for _ in range(30)]
    interleaved = [m for group in zip(*tasks, strict=True) for m in group]
    await publish(amqp, settings, interleaved)
    tuned = settings.model_copy(update={"batch_size": 7, "write_pipeline": pipeline})
    await burst(tuned)

    assert await ledger_count(pool) == len(interleaved)
    for messages in tasks:
        body = orjson.loads(messages[0][1])
        got = await pool.fetch(
            "SELECT event_id FROM event_ledger WHERE task_id = $1 ORDER BY seq",
            uuid.UUID(body["subject"]),
        )
        assert [str(r["event_id"]) for r in got] == [orjson.loads(b)["id"] for _, b in messages]
    statuses = await pool.fetch("SELECT status, count(*) AS n FROM tasks GROUP BY status")
    assert [(r["status"], r["n"]) for r in statuses] == [("completed", 30)]


class HeldOnTask(AuditHandler):
    """The audit handler; a batch holding the gated task finds the database "away"
    (``DatabaseUnavailable``) every time, so it is held and retried until the stop budget
    is spent."""

    def __init__(self, gated: uuid.UUID) -> None:
        self.gated = gated

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        if any(e.task_id == self.gated for e in events):
            raise DatabaseUnavailable("injected: the database went away")
        await super().apply(conn, events)


async def test_a_later_batch_is_not_acknowledged_when_the_one_before_it_fails(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    gated, other = uuid.uuid4(), uuid.uuid4()
    first, second = lifecycle(gated, steps=6), lifecycle(other, steps=6)
    await publish(amqp, settings, [*first, *second])
    tuned = settings.model_copy(update={"batch_size": 10, "batch_linger_ms": 2000,
                                        "write_pipeline": 2, "shutdown_timeout_s": 1.0,
                                        "db_retry_max_backoff_s": 0.2})  # fmt: skip
    stopping = asyncio.Event()
    service = asyncio.create_task(
        run_service(tuned, only="audit", handlers=[HeldOnTask(gated)], stopping=stopping)
    )
    channel = await amqp.channel()
    try:
        await wait_until(lambda: _same(_rows_of(pool, other), 10), timeout=30,
                         what="the second batch to commit while the first is held")  # fmt: skip
        stopping.set()  # the held batch gives up when the budget is spent (ShutdownAbandoned)
        await asyncio.wait_for(service, 30)
        assert await _rows_of(pool, gated) == 0
        names = Names(settings.prefix)
        await wait_until(lambda: _same(queue_depth(channel, names.audit), 20), timeout=30,
                         what="both batches back in the queue (neither acknowledged)")  # fmt: skip
    finally:
        if not service.done():
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
        await channel.close()

    await burst(settings)
    assert await ledger_count(pool) == 20


class BadEvent(AuditHandler):
    """The audit handler; any batch holding the marked event fails (bad data) after a
    moment, with its task locks held: the batch rolls back and is bisected."""

    def __init__(self, bad: str) -> None:
        self.bad = bad

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        if any(str(e.id) == self.bad for e in events):
            await asyncio.sleep(0.3)  # the next batch is waiting for a common task by now
            raise ValueError("injected: this event cannot be projected")
        await super().apply(conn, events)


async def test_a_task_keeps_its_order_when_the_batch_before_rolls_back_and_is_bisected(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    common = uuid.uuid4()
    events = lifecycle(common, steps=6)  # 10 events: 9 in batch n, the completion in n+1
    bad = lifecycle(steps=0)[0]
    rest = lifecycle(steps=6)[:9]
    await publish(amqp, settings, [*events[:9], bad, events[9], *rest])
    tuned = settings.model_copy(update={"batch_size": 10, "batch_linger_ms": 2000,
                                        "write_pipeline": 2, "retry_delays_ms": [60000]})  # fmt: skip
    await burst(tuned, handlers=[BadEvent(orjson.loads(bad[1])["id"])])

    got = await pool.fetch(
        "SELECT event_id FROM event_ledger WHERE task_id = $1 ORDER BY seq", common
    )
    assert [str(r["event_id"]) for r in got] == [orjson.loads(b)["id"] for _, b in events]
    assert await ledger_count(pool) == 19, "all but the bad event, which waits for its retry"


def test_only_the_audit_handler_pipelines(settings: Settings) -> None:
    tuned = settings.model_copy(update={"write_pipeline": 3})
    assert pipeline_depth(tuned, AuditHandler()) == 3
    assert pipeline_depth(tuned, CapacityHandler(tuned)) == 1
