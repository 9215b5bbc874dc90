"""Stale work: executing tasks silent past the limit are found and announced once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractChannel

from consumer import outbox
from consumer.admission.handler import CapacityHandler
from consumer.admission.stale import announce_stale, find_stale
from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.outbox import OutboxRelay
from consumer.store import db
from contracts import TaskRecoveryRequested, decode

pytestmark = pytest.mark.asyncio

LIMIT_S = 900.0


async def add_task(
    pool: asyncpg.Pool,
    status: str = "executing",
    *,
    last_event_ago: timedelta | None,
    updated_ago: timedelta = timedelta(0),
    agent_type: str | None = "infra",
) -> uuid.UUID:
    """A task in ``status`` whose newest ledger event is ``last_event_ago`` old (None: none)."""
    task_id = uuid.uuid4()
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO tasks (task_id, status, request_text, agent_id, agent_type, started_at,"
        " created_at, updated_at) VALUES ($1, $2, 'restart kuma', $3, $4, $5, $5, $6)",
        task_id,
        status,
        "infra-01" if agent_type else None,
        agent_type,
        now - timedelta(hours=2),
        now - updated_ago,
    )
    if last_event_ago is not None:
        for ago in (last_event_ago + timedelta(minutes=5), last_event_ago):
            await pool.execute(
                "INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time,"
                " schema_version, envelope) VALUES ($1, 'task.step', 'agents/infra-01', $2, $3, 1,"
                " '{}'::jsonb)",
                uuid.uuid4(),
                task_id,
                now - ago,
            )
    return task_id


async def test_find_stale_lists_silent_executing_tasks(pool: asyncpg.Pool) -> None:
    silent = await add_task(pool, last_event_ago=timedelta(minutes=20))
    silent_longer = await add_task(pool, last_event_ago=timedelta(hours=1))
    no_events = await add_task(pool, last_event_ago=None, updated_ago=timedelta(minutes=30))
    await add_task(pool, last_event_ago=timedelta(minutes=2))  # recent
    await add_task(pool, last_event_ago=None)  # updated just now
    await add_task(pool, "completed", last_event_ago=timedelta(hours=3))

    async with db.transaction(pool) as conn:
        stale = await find_stale(conn, LIMIT_S)

    assert [s.task_id for s in stale] == [silent_longer, no_events, silent]
    first = stale[0]
    assert first.agent_type == "infra"
    assert first.last_event_at is not None
    assert first.stale_seconds == pytest.approx(3600, abs=30)
    assert stale[1].last_event_at is None


async def test_stale_task_is_announced_once(
    pool: asyncpg.Pool, settings: Settings, topology: AbstractChannel
) -> None:
    queue = await topology.declare_queue(exclusive=True)
    await queue.bind(Names(settings.prefix).dispatch, routing_key="recovery.#")
    task = await add_task(pool, last_event_ago=timedelta(minutes=20))
    unknown_type = await add_task(pool, last_event_ago=timedelta(minutes=25), agent_type=None)

    names = Names(settings.prefix)
    async with db.transaction(pool) as conn:
        assert set(await announce_stale(conn, names, LIMIT_S)) == {task, unknown_type}
    async with db.transaction(pool) as conn:
        assert await announce_stale(conn, names, LIMIT_S) == []

    rows = {
        r["task_id"]: r
        for r in await pool.fetch(
            "SELECT * FROM outbox WHERE event_type = 'task.recovery_requested'"
        )
    }
    assert set(rows) == {task, unknown_type}
    assert (
        rows[task]["message_id"] == outbox.recovery_message_id(task) == uuid.uuid5(task, "recovery")
    )
    assert rows[task]["routing_key"] == "recovery.infra"
    assert rows[unknown_type]["routing_key"] == "recovery.any"

    relay = OutboxRelay(settings, pool)
    try:
        assert await relay.drain() == 2
    finally:
        await relay.close_broker()
    message = await queue.get(no_ack=True, timeout=5)
    event = decode(message.body)
    data = event.payload(TaskRecoveryRequested)
    assert data.task_id in {task, unknown_type}
    assert data.stale_seconds >= 20 * 60
    assert orjson.loads(message.body)["source"] == "taskledger"


async def test_timer_slow_pass_announces_stale_work(pool: asyncpg.Pool, settings: Settings) -> None:
    task = await add_task(pool, last_event_ago=timedelta(minutes=20))
    handler = CapacityHandler(settings)
    await handler.tick(pool)  # a fast pass does not look for stale work
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    await handler.tick(pool, slow=True)
    assert await pool.fetchval("SELECT task_id FROM outbox") == task
