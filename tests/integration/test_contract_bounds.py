"""Out-of-range values through real RabbitMQ and PostgreSQL: refused at once, never stored.

A time PostgreSQL would store as ``-infinity`` and an integer too large for its 32-bit
column used to be accepted, recorded in the ledger, and then fail the projection of
their task on every retry. Now the contract refuses them: they go straight to the dead
letters as ``schema_violation`` (no retry), and the valid task they were mixed with is
recorded and projected.
"""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.broker import H_ATTEMPT, H_REASON, Names
from consumer.core.settings import Settings
from contracts import DeadLetterReason
from tests.support.traffic import burst, drain_queue, ledger_count, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


def _edit(body: bytes, **changes: Any) -> bytes:
    """``body`` with envelope attributes (and ``data`` keys, given as ``data=dict``) changed."""
    msg = orjson.loads(body)
    msg["data"].update(changes.pop("data", {}))
    msg.update(changes)
    msg["id"] = str(uuid.uuid4())
    return orjson.dumps(msg)


async def test_out_of_range_values_are_dead_lettered_and_the_valid_task_recorded(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    valid = lifecycle(task_id, steps=2, terminal="failed")
    requested, approved, started, step_1, step_2, failed = valid
    bad = {
        "year 1": ("task.approved", _edit(approved[1], time="0001-01-01T00:00:00Z")),
        "year 999": ("task.started", _edit(started[1], time="0999-12-31T23:59:59+00:00")),
        "a space for T": ("task.approved", _edit(approved[1], time="2026-11-01 12:00:00Z")),
        "duration_ms 3e9": ("task.step", _edit(step_1[1], data={"duration_ms": 3_000_000_000})),
        "failed_step 2**31": ("task.failed", _edit(failed[1], data={"failed_step": 2**31})),
        "step_number as a string": ("task.step", _edit(step_1[1], data={"step_number": "1"})),
        "id urn:uuid": ("task.approved", _edit(approved[1])),
    }
    urn = orjson.loads(bad["id urn:uuid"][1])
    urn["id"] = f"urn:uuid:{urn['id']}"
    bad["id urn:uuid"] = ("task.approved", orjson.dumps(urn))
    # an integer written as 2.0 is an integer (JSON Schema says so): stored and projected
    step_2 = ("task.step", _edit(step_2[1], data={"step_number": 2.0, "duration_ms": 18450.0}))

    # the bad step arrives before its task.requested, the rest after it
    await publish(amqp, settings, [bad["duration_ms 3e9"], step_2])
    await burst(settings)
    others = [message for name, message in bad.items() if name != "duration_ms 3e9"]
    await publish(amqp, settings, [requested, *others, approved, started, step_1, failed])
    await burst(settings)

    dead = await drain_queue(amqp, Names(settings.prefix).dead)
    by_body = {message.body: message for message in dead}
    for name, (_, body) in bad.items():
        assert body in by_body, f"{name}: not in the dead letters"
        headers = by_body[body].headers or {}
        assert headers[H_REASON] == DeadLetterReason.SCHEMA_VIOLATION.value, name
        assert int(str(headers.get(H_ATTEMPT, 0))) == 0, f"{name}: was retried"
    assert len(dead) == len(bad)

    row = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id)
    assert row is not None and row["status"] == "failed"
    assert row["failed_step"] == 2
    assert row["created_at"].year == 2026
    steps = await pool.fetch(
        "SELECT step_number, duration_ms FROM execution_logs WHERE task_id = $1 "
        "ORDER BY step_number",
        task_id,
    )
    assert [(r["step_number"], r["duration_ms"]) for r in steps] == [(1, 10), (2, 18450)]
    assert await ledger_count(pool) == len(valid)
    assert await pool.fetchval("SELECT min(event_time) FROM event_ledger") == row["created_at"]
