"""The real `taskledger run` as a subprocess: kill -9, SIGTERM, several consumers."""

from __future__ import annotations

import asyncio
import random

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.broker import Names, queue_depth
from consumer.core.settings import Settings
from consumer.simulate import SimulationConfig, generate
from tests.support.processes import Service
from tests.support.traffic import ledger_count, publish, wait_until

pytestmark = pytest.mark.usefixtures("topology")


def _traffic(tasks: int, seed: int) -> tuple[list[tuple[str, bytes]], set[str]]:
    messages, _ = generate(SimulationConfig(tasks=tasks, agents=4, poison=0, seed=seed,
                                            dispatch_share=0, capacity_reports=0))  # fmt: skip
    ids = {orjson.loads(body)["id"] for _, body in messages}
    return messages, ids


async def _terminal_statuses_match(pool: asyncpg.Pool) -> None:
    """Every task whose terminal event is recorded (with its prerequisites) is finished."""
    rows = await pool.fetch(
        """
        SELECT t.status, l.event_type FROM tasks t
        JOIN event_ledger l ON l.task_id = t.task_id
         AND l.event_type IN ('task.completed', 'task.failed', 'task.rejected')
         AND l.conflict_with IS NULL
        """
    )
    assert rows
    assert all(r["event_type"] == f"task.{r['status']}" for r in rows)


async def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    messages, ids = _traffic(tasks=1500, seed=3)
    await publish(amqp, settings, messages)
    rng = random.Random(5)
    env = {"TASKLEDGER_BATCH_SIZE": "50"}  # small batches: many commits to interrupt
    mid_stream = 0
    for _ in range(4):
        service = await Service(settings, ("--only", "audit"), env).start()
        try:
            before = await ledger_count(pool)
            await wait_until(
                lambda n=before: _more_than(pool, n), what="the consumer to make progress"
            )
            await asyncio.sleep(rng.uniform(0.0, 0.4))  # then a random moment, on purpose
            service.kill()
            await service.wait()
        finally:
            await service.close()
        mid_stream += await ledger_count(pool) < len(ids)
    assert mid_stream >= 2, "the kills should land while the backlog is being consumed"
    final = await Service(settings, ("--only", "audit", "--burst"), env).start()
    try:
        assert await final.wait(120) == 0, final.log()
    finally:
        await final.close()
    assert await ledger_count(pool) == len(ids)
    recorded = {str(r["event_id"]) for r in await pool.fetch("SELECT event_id FROM event_ledger")}
    assert recorded == ids
    steps = sum(1 for key, _ in {m[1]: m for m in messages}.values() if key == "task.step")
    assert await pool.fetchval("SELECT count(*) FROM execution_logs") == steps
    await _terminal_statuses_match(pool)


async def test_sigterm_finishes_what_it_holds_and_exits_zero(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    messages, ids = _traffic(tasks=200, seed=4)
    service = await Service(settings, ("--only", "audit")).start()
    try:
        await publish(amqp, settings, messages)
        await wait_until(lambda: _some(pool), what="the consumer to start recording")
        service.terminate()
        code = await service.wait(settings.shutdown_timeout_s + 15)
        assert code == 0, service.log()
        assert "stopped consuming" in service.log()
    finally:
        await service.close()
    # whatever it acknowledged is committed; the rest is still queued, nothing lost
    channel = await amqp.channel()
    recorded = await ledger_count(pool)
    assert recorded + await queue_depth(channel, Names(settings.prefix).audit) >= len(ids)
    rest = await Service(settings, ("--only", "audit", "--burst")).start()
    try:
        assert await rest.wait(120) == 0, rest.log()
    finally:
        await rest.close()
    assert await ledger_count(pool) == len(ids)


async def test_three_consumers_share_the_queue(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    messages, ids = _traffic(tasks=300, seed=6)
    env = {"TASKLEDGER_BATCH_SIZE": "20", "TASKLEDGER_PREFETCH": "100"}
    services = [await Service(settings, ("--only", "audit"), env).start() for _ in range(3)]
    try:
        await publish(amqp, settings, messages + messages[:200])
        await wait_until(lambda: _count(pool, len(ids)), timeout=90, what="all events recorded")
        for service in services:
            service.terminate()
        for service in services:
            assert await service.wait(30) == 0, service.log()
        logs = [s.log() for s in services]
    finally:
        for service in services:
            await service.close()
    assert all("consuming" in log for log in logs), "each process took part"
    assert await ledger_count(pool) == len(ids)
    steps = sum(1 for key, _ in {m[1]: m for m in messages}.values() if key == "task.step")
    assert await pool.fetchval("SELECT count(*) FROM execution_logs") == steps
    await _terminal_statuses_match(pool)


async def _more_than(pool: asyncpg.Pool, n: int) -> bool:
    return await ledger_count(pool) > n


async def _some(pool: asyncpg.Pool) -> bool:
    return await ledger_count(pool) > 0


async def _count(pool: asyncpg.Pool, n: int) -> bool:
    return await ledger_count(pool) == n
