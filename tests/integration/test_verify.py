"""Tamper evidence beyond the triggers: the hash chain and `taskledger verify`."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from tests.support.ledger import verify_db, without_triggers
from tests.support.processes import run_cli
from tests.support.traffic import burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


@pytest.fixture
async def recorded(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> list[int]:
    """Three tasks recorded by the consumer in several batches; returns the ledger seqs."""
    for _ in range(3):
        await publish(amqp, settings, lifecycle(steps=2))
        await burst(settings)
    return [r["seq"] for r in await pool.fetch("SELECT seq FROM event_ledger ORDER BY seq")]


async def test_intact_ledger_verifies(settings: Settings, recorded: list[int]) -> None:
    report = await verify_db(settings)
    assert report.ok, report.findings
    assert report.rows == len(recorded) == 3 * 6
    assert report.links >= 3 and report.head_hash


async def test_documented_digest_function_matches_what_the_chain_sealed(
    pool: asyncpg.Pool, recorded: list[int]
) -> None:
    """ledger_row_digest() (migration 006) and the insert's inline digest must not drift."""
    sealed = {
        seq: bytes(digest)
        for link in await pool.fetch("SELECT seqs, row_digests FROM ledger_chain")
        for seq, digest in zip(link["seqs"], link["row_digests"], strict=True)
    }
    computed = {
        r["seq"]: bytes(r["d"])
        for r in await pool.fetch("SELECT seq, ledger_row_digest(l) AS d FROM event_ledger l")
    }
    assert computed == sealed
    assert sorted(computed) == recorded


async def test_altered_row_is_reported_exactly(
    settings: Settings, pool: asyncpg.Pool, recorded: list[int]
) -> None:
    target = recorded[7]
    await without_triggers(
        pool,
        "UPDATE event_ledger SET envelope = jsonb_set(envelope, '{data,approved_by}', '\"mallory\"') "
        "WHERE seq = $1",
        target,
    )
    report = await verify_db(settings)
    assert not report.ok and report.exit_code == 1
    ledger = [(f.kind, f.seq) for f in report.findings if f.seq is not None]
    assert ledger == [("altered", target)]
    assert report.first is not None and report.first.seq == target
    # the task's projection no longer follows from the (altered) approval: named too
    (differs,) = [f for f in report.findings if f.kind == "task_differs"]
    assert "approved_by" in differs.detail


async def test_removed_and_inserted_rows_are_reported(
    settings: Settings, pool: asyncpg.Pool, recorded: list[int]
) -> None:
    gone = recorded[3]
    await without_triggers(pool, "DELETE FROM event_ledger WHERE seq = $1", gone)
    await without_triggers(
        pool,
        "INSERT INTO event_ledger (event_id, event_type, source, event_time, schema_version, envelope) "
        "VALUES ($1, 'task.approved', 'orchestrator', now(), 1, '{}'::jsonb)",
        uuid.uuid4(),
    )
    report = await verify_db(settings)
    kinds = sorted((f.kind, f.seq or 0) for f in report.findings)
    inserted = max(r["seq"] for r in await pool.fetch("SELECT seq FROM event_ledger"))
    # the removed row was a task.step: its execution_logs row now has no event behind it,
    # and its id's key no row (a re-delivery would be dropped as a duplicate); the inserted
    # one has no seal and no key in ledger_event_ids (019)
    assert kinds == sorted([
        ("removed", gone), ("dangling_key", gone), ("unsealed", inserted), ("unkeyed", inserted),
        ("step_extra", 0),
    ])  # fmt: skip
    assert report.first is not None and report.first.seq == gone
    assert report.exit_code == 1


async def test_a_missing_or_misdirected_dedup_key_is_reported(
    settings: Settings, pool: asyncpg.Pool, recorded: list[int]
) -> None:
    """019: ids are deduplicated and found only through ledger_event_ids, so a sealed row
    whose key was deleted, or whose key now names another row, is named (a warning: the
    row itself is what the chain sealed), and a redelivery of that id is the consequence."""
    dropped, moved = recorded[2], recorded[5]
    await without_triggers(
        pool,
        "DELETE FROM ledger_event_ids WHERE event_id = "
        "(SELECT event_id FROM event_ledger WHERE seq = $1)",
        dropped,
    )
    await without_triggers(
        pool,
        "UPDATE ledger_event_ids SET seq = $2 WHERE event_id = "
        "(SELECT event_id FROM event_ledger WHERE seq = $1)",
        moved,
        recorded[0],
    )
    report = await verify_db(settings)
    unkeyed = sorted((f.seq, f.detail) for f in report.findings if f.kind == "unkeyed")
    assert [seq for seq, _ in unkeyed] == [dropped, moved], report.findings
    assert "has no key" in unkeyed[0][1]
    assert f"a key naming row {recorded[0]}" in unkeyed[1][1]
    assert report.counts == {"unkeyed": 2} and report.exit_code == 5
    code, out, _ = await run_cli(settings, "verify")
    assert code == 5 and "unkeyed" in out


async def test_altered_link_is_reported(
    settings: Settings, pool: asyncpg.Pool, recorded: list[int]
) -> None:
    await without_triggers(
        pool,
        "UPDATE ledger_chain SET hash = sha256('forged') WHERE link = (SELECT min(link) FROM ledger_chain)",
    )
    report = await verify_db(settings)
    assert {f.kind for f in report.findings} == {"link_altered", "link_broken"}


async def test_concurrent_writers_do_not_fork_the_chain(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings
) -> None:
    for _ in range(3):
        await publish(amqp, settings, [m for _ in range(10) for m in lifecycle(steps=2)])
    small = settings.model_copy(update={"batch_size": 5})
    await asyncio.gather(*(burst(small) for _ in range(3)))
    report = await verify_db(settings)
    assert report.ok, report.findings[:5]
    assert report.rows == 3 * 10 * 6


async def test_verify_cli_exit_codes(
    settings: Settings, pool: asyncpg.Pool, recorded: list[int]
) -> None:
    code, out, _ = await run_cli(settings, "verify")
    assert code == 0 and "ledger intact" in out
    await without_triggers(
        pool, "UPDATE event_ledger SET source = 'agents/mallory' WHERE seq = $1", recorded[0]
    )
    code, out, _ = await run_cli(settings, "verify")
    assert code == 1
    assert f"row {recorded[0]} " in out and "first discrepancy" in out
    # each run is recorded for the ops console's overview, newest last
    runs = await pool.fetch(
        "SELECT result->>'status' AS status, (result->>'exit_code')::int AS code "
        "FROM operator_actions WHERE action = 'verify' ORDER BY id"
    )
    assert [(r["status"], r["code"]) for r in runs] == [("intact", 0), ("tampered", 1)]
