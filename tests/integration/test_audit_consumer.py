"""The audit consumer against real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import uuid
from decimal import Decimal

import aio_pika
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from consumer.broker import (
    H_ERROR,
    H_EXCHANGE,
    H_FAILED_AT,
    H_REASON,
    H_ROUTING_KEY,
    H_SOURCE_QUEUE,
    Names,
    queue_depth,
)
from consumer.core.settings import Settings
from consumer.simulate import poison_messages
from contracts import EventType, make_event
from tests.support.traffic import (
    burst,
    drain_queue,
    ledger_count,
    lifecycle,
    publish,
    snapshot,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("topology")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_lifecycle_projects_task_and_steps(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    await publish(amqp, settings, lifecycle(task_id, steps=3))
    await burst(settings)

    row = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id)
    assert row["status"] == "completed"
    assert row["services_touched"] == ["kuma", "dns"]
    assert row["outcome"]["success"] is True
    assert row["actual_resources"]["peak_memory_mb"] == 128
    assert row["cost_usd"] == Decimal("0.75")
    assert row["approved_by"] == "alice" and row["agent_id"] == "infra-01"
    assert row["created_at"] < row["approved_at"] < row["started_at"] < row["completed_at"]
    assert row["plan"]["complexity"] == "low"
    logs = await pool.fetch(
        "SELECT * FROM execution_logs WHERE task_id = $1 ORDER BY step_number", task_id
    )
    assert [r["step_number"] for r in logs] == [1, 2, 3]
    assert all(len(r["output_summary"]) == 500 for r in logs)
    assert await ledger_count(pool) == 7


async def test_failed_task_keeps_error_fields(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    await publish(amqp, settings, lifecycle(task_id, terminal="failed"))
    await burst(settings)
    row = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id)
    assert (row["status"], row["error_cause"], row["error_type"]) == (
        "failed",
        "resource",
        "OOMKilled",
    )
    assert row["error_message"] == "out of memory" and row["failed_step"] == 3


async def test_duplicates_are_acknowledged_and_counted_never_applied_twice(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    messages = lifecycle(steps=2)
    before = metric("taskledger_events_duplicate_total", handler="audit")
    await publish(amqp, settings, messages + messages + messages[:3])
    await burst(settings)
    assert await ledger_count(pool) == len(messages)
    assert await pool.fetchval("SELECT count(*) FROM execution_logs") == 2
    assert (
        metric("taskledger_events_duplicate_total", handler="audit") - before == len(messages) + 3
    )
    # and a later redelivery of everything changes nothing
    first = await snapshot(pool)
    await publish(amqp, settings, messages)
    await burst(settings)
    assert await snapshot(pool) == first


@pytest.mark.parametrize(
    "index,reason",
    [(0, "invalid_json"), (1, "schema_violation"), (2, "unknown_event_type"),
     (3, "unsupported_schema_version"), (4, "too_large")],
)  # fmt: skip
async def test_poison_goes_to_dead_letters_with_reason_and_consumer_goes_on(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    index: int,
    reason: str,
) -> None:
    import random

    key, body = poison_messages(5, random.Random(0))[index]
    valid = lifecycle(steps=1)
    before = metric("taskledger_dead_lettered_total", handler="audit", reason=reason)
    await publish(amqp, settings, [valid[0], (key, body), *valid[1:]])
    await burst(settings)

    names = Names(settings.prefix)
    dead = await drain_queue(amqp, names.dead)
    assert len(dead) == 1
    letter = dead[0]
    assert letter.body == body
    headers = letter.headers
    assert headers[H_REASON] == reason
    assert headers[H_SOURCE_QUEUE] == names.audit
    assert headers[H_ROUTING_KEY] == key
    assert headers[H_EXCHANGE] == names.events
    assert headers[H_FAILED_AT]
    assert 0 < len(str(headers[H_ERROR]).encode()) <= 1024
    assert metric("taskledger_dead_lettered_total", handler="audit", reason=reason) - before == 1
    # the consumer went on: every valid event is recorded
    assert await ledger_count(pool) == len(valid)


async def test_routing_key_must_equal_type(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    _, body = lifecycle(steps=0)[0]
    await publish(amqp, settings, [("task.approved", body)])
    await burst(settings)
    dead = await drain_queue(amqp, Names(settings.prefix).dead)
    assert [m.headers[H_REASON] for m in dead] == ["schema_violation"]
    assert await ledger_count(pool) == 0


async def test_events_before_the_request_wait_and_apply_when_it_arrives(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    messages = lifecycle(task_id, steps=2)
    await publish(amqp, settings, messages[1:])
    await burst(settings)
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    assert await ledger_count(pool) == len(messages) - 1

    await publish(amqp, settings, messages[:1])
    await burst(settings)
    row = await pool.fetchrow("SELECT status FROM tasks WHERE task_id = $1", task_id)
    assert row["status"] == "completed"
    assert await pool.fetchval("SELECT count(*) FROM execution_logs") == 2


async def test_terminal_event_waits_for_start(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    requested, approved, started, *steps, completed = lifecycle(task_id, steps=1)
    await publish(amqp, settings, [requested, approved, completed])
    await burst(settings)
    assert await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", task_id) == "approved"
    await publish(amqp, settings, [started, *steps])
    await burst(settings)
    row = await pool.fetchrow("SELECT status, agent_id FROM tasks WHERE task_id = $1", task_id)
    assert (row["status"], row["agent_id"]) == ("completed", "infra-01")


async def test_second_terminal_event_is_kept_and_flagged(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    messages = lifecycle(task_id, steps=1)
    await publish(amqp, settings, messages)
    await burst(settings)
    before = await snapshot(pool)
    first_terminal = orjson.loads(messages[-1][1])["id"]
    late = make_event(
        EventType.TASK_FAILED,
        {"services_touched": [], "actual_resources": {"duration_seconds": 1, "cpu_time_ms": 1,
         "gpu_vram_mb_used": 0, "peak_memory_mb": 1, "agent_load_pct": 1},
         "outcome": {"success": False, "error_type": "X", "error_cause": "unknown",
                     "error_message": "late", "last_lines": []}},
        source="agents/infra-01", subject=task_id,
    )  # fmt: skip
    await publish(amqp, settings, [("task.failed", late)])
    await burst(settings)
    assert await snapshot(pool) == before
    conflict = await pool.fetchval(
        "SELECT conflict_with FROM event_ledger WHERE event_id = $1",
        uuid.UUID(orjson.loads(late)["id"]),
    )
    assert str(conflict) == first_terminal


async def test_event_the_database_cannot_store_is_retried_then_dead_lettered(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    """A NUL character is valid on the wire but PostgreSQL refuses it (jsonb and text).

    (An integer beyond int4, the old example, is now refused by the contract itself:
    see tests/integration/test_contract_bounds.py.)
    """
    task_id = uuid.uuid4()
    messages = lifecycle(task_id, steps=1)
    requested = messages[0]
    bad = make_event(
        EventType.TASK_STEP,
        {"step_number": 9, "agent_type": "infra", "action": "x\u0000", "status": "completed",
         "duration_ms": 10},
        source="agents/infra-01", subject=task_id,
    )  # fmt: skip
    await publish(amqp, settings, [requested, ("task.step", bad), *messages[1:]])
    # the retry delays (200 ms, 1 s) send it round twice before it is given up
    names = Names(settings.prefix)
    channel = await amqp.channel()
    for _ in range(3):
        await burst(settings)
        dead = await drain_queue(amqp, names.dead)
        if dead:
            break
        # the retry queue's TTL sends it back to the audit queue: wait for that, not a guess
        await wait_until(lambda: queue_depth(channel, names.audit), timeout=5,
                         what="the retried message to come back")  # fmt: skip
    assert [m.headers[H_REASON] for m in dead] == ["retries_exhausted"]
    assert "Unicode" in str(dead[0].headers[H_ERROR])
    assert dead[0].body == bad
    # everything else of the batch was recorded
    assert await ledger_count(pool) == len(messages)
    assert (
        await pool.fetchval("SELECT status FROM tasks WHERE task_id = $1", task_id) == "completed"
    )
