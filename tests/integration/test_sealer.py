"""Asynchronous sealing (012): writers list rows in ledger_unsealed without a lock, the
sealer chains them; verify's seal bound; real PostgreSQL (and RabbitMQ for the service)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import asyncpg
import pytest

from consumer.audit.handler import AuditHandler
from consumer.core.settings import Settings
from consumer.ledger.inbox import record_events
from consumer.ledger.sealer import backlog, seal_all, seal_once
from consumer.ledger.verify import VerifyReport, link_hash
from consumer.store import db
from contracts import Event, decode
from tests.support.ledger import verify_db
from tests.support.processes import run_cli
from tests.support.traffic import burst, lifecycle, publish

CHAIN_KEY = 8243149463017541731


def _events(tasks: int, steps: int = 2) -> list[Event]:
    return [decode(body, routing_key=rk) for _ in range(tasks)
            for rk, body in lifecycle(steps=steps)]  # fmt: skip


async def _write(pool: asyncpg.Pool, events: list[Event], per_batch: int) -> None:
    """Record and project ``events`` in transactions of ``per_batch``, as the service's
    writer does (no sealing)."""
    handler = AuditHandler()
    for i in range(0, len(events), per_batch):
        async with db.transaction(pool) as conn:
            new = await record_events(conn, events[i : i + per_batch], trigger="count")
            await handler.apply(conn, new)


async def _verify(settings: Settings, bound: float = 60.0) -> VerifyReport:
    return await verify_db(settings, projections=False, seal_bound_s=bound)


async def _links(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT link, seqs, row_digests, prev_hash, hash, trigger "
                            "FROM ledger_chain ORDER BY link")  # fmt: skip


async def test_concurrent_writers_and_sealers_make_one_unforked_chain(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    events = _events(24)  # 24 tasks x 6 events
    writers = [_write(pool, events[i::3], per_batch=7) for i in range(3)]

    async def sealer() -> None:
        async with pool.acquire() as conn:
            for _ in range(40):
                await seal_once(conn, 20)
                await asyncio.sleep(0.005)

    await asyncio.gather(*writers, sealer(), sealer())
    await seal_all(pool, settings)

    assert (await backlog(pool)).rows == 0
    links = await _links(pool)
    prev = None
    for link in links:  # each link follows the one before: never forked
        assert link["prev_hash"] == prev
        assert link_hash(prev, list(link["row_digests"])) == link["hash"]
        prev = link["hash"]
    sealed = [s for link in links for s in link["seqs"]]
    rows = [r["seq"] for r in await pool.fetch("SELECT seq FROM event_ledger ORDER BY seq")]
    assert sorted(sealed) == rows and len(rows) == len(events)  # each row exactly once
    assert all(link["trigger"] == "count" and len(link["seqs"]) <= 7 for link in links)
    report = await _verify(settings)
    assert report.ok and report.pending == 0, report.findings


async def test_pending_rows_within_the_bound_are_not_findings(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await _write(pool, _events(2), per_batch=5)
    report = await _verify(settings)
    assert report.ok and report.exit_code == 0
    assert report.pending == 12 and report.links == 0

    await asyncio.sleep(0.05)
    overdue = await _verify(settings, bound=0.01)
    assert overdue.counts == {"seal_overdue": 1} and overdue.exit_code == 5
    (finding,) = overdue.findings
    assert finding.count == 12 and "taskledger seal" in finding.detail

    code, out, err = await run_cli(settings, "verify", TASKLEDGER_SEAL_BOUND_S="0.01")
    assert code == 5, err
    assert "seal_overdue" in out
    code, out, err = await run_cli(settings, "verify")
    assert code == 0, out + err
    assert "12 rows pending sealing" in out

    code, out, err = await run_cli(settings, "seal")
    assert code == 0, err
    assert out.strip() == "sealed 12 ledger rows"
    report = await _verify(settings, bound=0.01)
    assert report.ok and report.pending == 0 and report.rows == 12


async def test_a_deleted_or_forged_marker_or_a_removed_pending_row_is_caught(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await _write(pool, _events(2), per_batch=6)
    seqs = [r["seq"] for r in await pool.fetch("SELECT seq FROM ledger_unsealed ORDER BY seq")]
    # the app role may delete and insert markers: one deleted (its row is never sealed),
    # one put back with a forged digest
    await pool.execute("DELETE FROM ledger_unsealed WHERE seq = $1", seqs[2])
    await pool.execute(
        "WITH d AS (DELETE FROM ledger_unsealed WHERE seq = $1 RETURNING *) "
        "INSERT INTO ledger_unsealed SELECT batch, seq, received_at, sha256('forged'), trigger "
        "FROM d", seqs[4],
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():  # a superuser, before the seal
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute("DELETE FROM event_ledger WHERE seq = $1", seqs[8])
        await conn.execute("UPDATE event_ledger SET source = 'mallory' WHERE seq = $1", seqs[6])

    # before the seal: the digests the writers took show the changes already
    pending = await _verify(settings)
    assert [(f.kind, f.seq) for f in pending.findings] == [
        ("unsealed", seqs[2]), ("altered", seqs[4]), ("altered", seqs[6]), ("removed", seqs[8]),
        ("dangling_key", seqs[8]),  # its id's key stays: a re-delivery would be dropped
    ]  # fmt: skip
    assert "not sealed yet" in pending.findings[1].detail
    assert "listed for the sealer" in pending.findings[3].detail
    assert pending.exit_code == 1 and pending.pending == 10

    await seal_all(pool, settings)
    report = await _verify(settings)
    kinds = sorted((f.kind, f.seq) for f in report.findings)
    assert kinds == [
        ("altered", seqs[4]), ("altered", seqs[6]), ("dangling_key", seqs[8]), ("removed", seqs[8]),
        ("unsealed", seqs[2]),
    ]  # fmt: skip
    assert report.exit_code == 1 and report.pending == 0


async def test_a_link_never_seals_rows_of_two_months(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """One write batch whose rows straddle a month boundary (received_at set by the owner,
    as a batch committed across midnight UTC of the 1st would have them) gets two links."""
    times = [datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)] * 3
    times += [datetime(2026, 11, 1, 0, 0, 0, 1, tzinfo=UTC)] * 2
    seqs = []
    for at in times:
        seqs.append(await pool.fetchval(
            "INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time, "
            "received_at, schema_version, envelope) VALUES ($1, 'task.step', 'test', $2, $3, "
            "$3, 1, '{}') RETURNING seq", uuid.uuid4(), uuid.uuid4(), at,
        ))  # fmt: skip
    await pool.execute(
        "INSERT INTO ledger_unsealed (batch, seq, received_at, digest, trigger) "
        "SELECT $1, l.seq, l.received_at, ledger_row_digest(l), 'count' "
        "FROM event_ledger AS l WHERE l.seq = ANY($2::bigint[])",
        seqs[0], seqs,
    )  # fmt: skip
    assert await seal_all(pool, settings) == 5

    months = await pool.fetch(
        "SELECT c.link, count(DISTINCT date_trunc('month', l.received_at AT TIME ZONE 'UTC')) "
        "AS months, array_agg(l.seq ORDER BY l.seq) AS seqs FROM ledger_chain c "
        "CROSS JOIN LATERAL unnest(c.seqs) AS u(seq) JOIN event_ledger l ON l.seq = u.seq "
        "GROUP BY c.link ORDER BY c.link"
    )
    assert [(r["months"], r["seqs"]) for r in months] == [(1, seqs[:3]), (1, seqs[3:])]
    report = await _verify(settings)
    assert not {k for k in report.counts if k.startswith("link") or k == "altered"}, report


async def test_only_one_sealer_works_at_a_time(settings: Settings, pool: asyncpg.Pool) -> None:
    await _write(pool, _events(1), per_batch=6)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_KEY)
        async with pool.acquire() as conn:
            assert await seal_once(conn, 100) is None  # skipped, never waits
    async with pool.acquire() as conn:
        assert await seal_once(conn, 100) == 6


@pytest.mark.usefixtures("topology")
async def test_burst_services_side_by_side_leave_nothing_unsealed(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    messages = [m for _ in range(8) for m in lifecycle(steps=2)]
    await publish(amqp, settings, messages)
    small = settings.model_copy(update={"batch_size": 10, "seal_interval_ms": 20})
    await asyncio.gather(burst(small), burst(small))

    assert await pool.fetchval("SELECT count(*) FROM ledger_unsealed") == 0
    assert await pool.fetchval("SELECT count(*) FROM event_ledger") == len(messages)
    report = await _verify(settings, bound=0.001)
    assert report.ok and report.pending == 0, report.findings
