"""Operator control: control.* events really reach the broker, and actions are recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractQueue
from pydantic import SecretStr

from consumer.broker import Names, delete_topology, queue_depth
from consumer.core.errors import BrokerUnavailable, InvalidArgument
from consumer.core.settings import Settings
from consumer.operations import control
from contracts import ControlPause, ControlResume, ControlScope, EventType, decode
from tests.support.traffic import collect


async def actions(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM operator_actions ORDER BY id"))


async def test_pause_all_publishes_and_records(
    settings: Settings, pool: asyncpg.Pool, control_queue: AbstractQueue
) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    event_id = await control.pause(
        settings, task_id=None, until=until, reason="db maintenance", actor="carol"
    )
    (message,) = await collect(control_queue, 1)
    assert message.routing_key == "control.pause"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    event = decode(message.body, message.routing_key)
    assert event.type is EventType.CONTROL_PAUSE
    assert event.id == event_id
    assert event.source == "ops/carol"
    data = event.payload(ControlPause)
    assert (data.scope, data.task_id, data.reason) == (ControlScope.ALL, None, "db maintenance")
    assert data.resume_after == until
    (row,) = await actions(pool)
    assert (row["action"], row["actor"], row["event_id"]) == ("pause", "carol", event_id)
    assert row["params"] == {
        "scope": "all",
        "reason": "db maintenance",
        "resume_after": until.isoformat().replace("+00:00", "Z"),
    }


async def test_pause_one_task_resume_and_force(
    settings: Settings, pool: asyncpg.Pool, control_queue: AbstractQueue
) -> None:
    task_id = uuid4()
    paused = await control.pause(
        settings, task_id=task_id, until=None, reason=None, actor="Jane Doe"
    )
    resumed = await control.resume(settings, task_id=task_id, force=False, actor="bob")
    forced = await control.resume(settings, task_id=task_id, force=True, actor="bob")
    everything = await control.resume(settings, task_id=None, force=False, actor="bob")
    messages = await collect(control_queue, 4)
    events = [decode(m.body, m.routing_key) for m in messages]
    assert [e.id for e in events] == [paused, resumed, forced, everything]
    assert events[0].source == "ops/Jane-Doe"  # the envelope's source allows no spaces
    assert events[0].payload(ControlPause).task_id == task_id
    assert events[1].payload(ControlResume) == ControlResume(
        scope=ControlScope.TASK, task_id=task_id, force=False
    )
    assert events[2].payload(ControlResume).force is True
    assert events[3].payload(ControlResume).scope is ControlScope.ALL
    rows = await actions(pool)
    assert [(r["action"], r["event_id"]) for r in rows] == [
        ("pause", paused),
        ("resume", resumed),
        ("force", forced),
        ("resume", everything),
    ]
    assert rows[0]["actor"] == "Jane Doe"
    assert rows[2]["params"] == {"scope": "task", "task_id": str(task_id), "force": True}


async def test_refusals_publish_and_record_nothing(
    settings: Settings, pool: asyncpg.Pool, control_queue: AbstractQueue
) -> None:
    with pytest.raises(InvalidArgument, match="--force needs a task"):
        await control.resume(settings, task_id=None, force=True, actor="bob")
    with pytest.raises(InvalidArgument, match="in the past"):
        await control.pause(
            settings,
            task_id=None,
            until=datetime.now(UTC) - timedelta(minutes=1),
            reason=None,
            actor="bob",
        )
    with pytest.raises(InvalidArgument, match="reason"):
        await control.pause(settings, task_id=None, until=None, reason="x" * 1001, actor="bob")
    assert await actions(pool) == []
    # The first control event on the queue is the next one published: the refusals sent none.
    marker = await control.pause(settings, task_id=None, until=None, reason="marker", actor="bob")
    (message,) = await collect(control_queue, 1)
    assert decode(message.body, message.routing_key).id == marker


async def test_unreachable_broker_leaves_no_record(settings: Settings, pool: asyncpg.Pool) -> None:
    down = settings.model_copy(update={"amqp_url": SecretStr("amqp://guest:guest@127.0.0.1:1/")})
    with pytest.raises(BrokerUnavailable):
        await control.pause(down, task_id=None, until=None, reason=None, actor="bob")
    assert await actions(pool) == []


async def test_works_on_a_fresh_broker(
    settings: Settings, pool: asyncpg.Pool, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """No topology declared beforehand: the event still lands in the capacity queue."""
    task_id = uuid4()
    try:
        event_id = await control.resume(settings, task_id=task_id, force=True, actor="ops-bot")
        channel = await amqp.channel()
        names = Names(settings.prefix)
        assert await queue_depth(channel, names.capacity) == 1
        message = await channel.declare_queue(names.capacity, passive=True)
        got = await message.get(no_ack=True)
        assert got is not None and UUID(got.message_id) == event_id
        assert decode(got.body, got.routing_key).payload(ControlResume).task_id == task_id
    finally:
        cleanup = await amqp.channel()
        await delete_topology(cleanup, settings)
        await cleanup.close()
