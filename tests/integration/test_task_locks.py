"""The per-task advisory locks: tasks of one millisecond do not share a key, and a writer
of this release waits for one of the release before (which took the first half alone)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from consumer.ledger.inbox import record_events, task_lock_keys
from contracts import EventType, decode, make_event, new_id


def test_time_ordered_task_ids_of_one_millisecond_get_their_own_keys() -> None:
    ids = [new_id(at_ms=1_764_500_000_000) for _ in range(5000)]
    mixed = {task_lock_keys(t)[0] for t in ids}
    legacy = {task_lock_keys(t)[1] for t in ids}
    assert len(mixed) == len(ids)  # 74 random bits reach the mixed key
    assert len(legacy) < len(ids)  # the first half alone: 12 random bits of a millisecond
    for t in ids[:50]:
        assert task_lock_keys(t)[1] == int.from_bytes(t.bytes[:8], "big", signed=True)
        assert all(-(2**63) <= k < 2**63 for k in task_lock_keys(t))


async def test_a_writer_waits_for_the_previous_releases_lock_of_its_task(
    pool: asyncpg.Pool,
) -> None:
    task_id = new_id()
    body = make_event(EventType.TASK_REQUESTED, {"request_text": "Restart grafana"},
                      source="orchestrator", subject=task_id)  # fmt: skip
    event = decode(body, "task.requested")
    async with pool.acquire() as old, old.transaction():
        # a writer of the release before holds its key (the id's first half) for the task
        await old.execute("SELECT pg_advisory_xact_lock($1)", task_lock_keys(task_id)[1])
        async with pool.acquire() as new:
            await new.execute("SET lock_timeout = '300ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                async with new.transaction():
                    await record_events(new, [event])
    async with pool.acquire() as new, new.transaction():  # released: it goes through
        assert [e.id for e in await asyncio.wait_for(record_events(new, [event]), 10)] == [event.id]
