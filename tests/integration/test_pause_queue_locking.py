"""pause_queue keeps what a waiting dispatch needs, and concurrent handlers never take the
same entry: `FOR UPDATE SKIP LOCKED` hands each transaction a disjoint set."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

TAKE = """
SELECT id, task_id, priority, paused_at
FROM pause_queue
ORDER BY priority, paused_at
LIMIT 5
FOR UPDATE SKIP LOCKED
"""

INSERT = """
INSERT INTO pause_queue (task_id, work_plan_json, reason, paused_at, resume_after, priority,
                         agent_type, required_gpu_vram_mb, required_cpu_cores,
                         required_memory_mb, not_before, request_event_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id
"""


async def test_entry_persists_with_every_column(pool: asyncpg.Pool) -> None:
    paused_at = datetime(2026, 11, 20, 9, 30, 15, 123456, tzinfo=UTC)
    entry = {
        "task_id": uuid.uuid4(),
        "work_plan_json": {
            "steps": ["pull image", "restart kuma", "check monitors"],
            "target": {"host": "nas-01", "service": "kuma"},
        },
        "reason": "insufficient_capacity",
        "paused_at": paused_at,
        "resume_after": paused_at + timedelta(minutes=30),
        "priority": 2,
        "agent_type": "infra",
        "required_gpu_vram_mb": 4096,
        "required_cpu_cores": 1.5,
        "required_memory_mb": 2048,
        "not_before": paused_at + timedelta(minutes=5),
        "request_event_id": uuid.uuid4(),
    }
    entry_id = await pool.fetchval(INSERT, *entry.values())

    row = await pool.fetchrow("SELECT * FROM pause_queue WHERE id = $1", entry_id)
    assert row is not None
    assert dict(row) == {"id": entry_id, **entry}


async def test_defaults_of_an_entry(pool: asyncpg.Pool) -> None:
    task_id = uuid.uuid4()
    row = await pool.fetchrow(
        """
        INSERT INTO pause_queue (task_id, work_plan_json, reason, agent_type, request_event_id)
        VALUES ($1, '{}'::jsonb, 'manual_pause', 'code', $2)
        RETURNING *
        """,
        task_id,
        uuid.uuid4(),
    )
    assert row is not None
    assert row["priority"] == 3
    assert row["resume_after"] is None
    assert row["not_before"] is None
    assert (row["required_gpu_vram_mb"], row["required_cpu_cores"], row["required_memory_mb"]) == (
        0,
        0.0,
        0,
    )
    assert row["paused_at"] is not None


async def test_concurrent_takers_get_disjoint_entries(pool: asyncpg.Pool) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    for n in range(12):
        await pool.execute(
            INSERT,
            uuid.uuid4(),
            {"n": n},
            "insufficient_capacity",
            start + timedelta(seconds=n),
            None,
            1 + n % 5,
            "infra",
            0,
            1.0,
            512,
            None,
            uuid.uuid4(),
        )
    expected_order = [
        r["id"] for r in await pool.fetch("SELECT id FROM pause_queue ORDER BY priority, paused_at")
    ]

    async with pool.acquire() as first, pool.acquire() as second, pool.acquire() as third:
        tx_first, tx_second = first.transaction(), second.transaction()
        await tx_first.start()
        await tx_second.start()
        try:
            taken_first = [r["id"] for r in await first.fetch(TAKE)]
            taken_second = [r["id"] for r in await second.fetch(TAKE)]
            # Both transactions are still open: their locks are held.
            async with third.transaction():
                taken_third = [r["id"] for r in await third.fetch(TAKE)]
        finally:
            await tx_second.rollback()
            await tx_first.rollback()

    assert len(taken_first) == len(taken_second) == 5
    assert set(taken_first).isdisjoint(taken_second)
    assert set(taken_third).isdisjoint(set(taken_first) | set(taken_second))
    # The first taker got the most urgent, oldest entries; the others the next ones, in order.
    assert taken_first == expected_order[:5]
    assert taken_second == expected_order[5:10]
    assert taken_third == expected_order[10:]

    # Once the takers are gone, the entries are available again.
    again = [r["id"] for r in await pool.fetch(TAKE)]
    assert again == expected_order[:5]
