"""Monthly partitions of the ledger (migration 013).

Rows land in the partition of their UTC month, or in the default partition when their
month has none; creating that month's partition later moves them out. Deduplication by
event id is global: across months, between concurrent writers, within a batch, and after
the first copy's month was detached. The app role cannot detach, drop or truncate a
partition, and every partition refuses TRUNCATE even to the owner. Step rows keep their
once-per-event guarantee and share their event's month.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta

import asyncpg
import orjson
import pytest

from consumer.audit.handler import AuditHandler
from consumer.core.errors import ImmutableRecord
from consumer.core.settings import Settings
from consumer.ledger.inbox import id_conflicts, record_events
from consumer.store import db
from consumer.store.migrate import downgrade, upgrade
from consumer.store.partitions import ensure_partitions, month_bounds, partition_name
from contracts import Event, EventType, decode, make_event
from tests.support.traffic import burst, lifecycle

APP_ROLE = "taskledger_app"
PARENTS = ("event_ledger", "execution_logs")

#: A first copy of an event recorded as the insert path records it, at a chosen instant.
RECORD_AT = """
WITH k AS (
    INSERT INTO ledger_event_ids (event_id, seq, received_at)
    VALUES ($1, nextval('event_ledger_seq_seq'), $5) RETURNING seq
)
INSERT INTO event_ledger (seq, event_id, event_type, source, event_time, received_at,
                          schema_version, envelope)
SELECT k.seq, $1, $2, $3, $4, $5, 1, $6::text::jsonb FROM k
"""


def report(event_id: uuid.UUID | None = None, *, load: float = 10.0) -> bytes:
    """A ``capacity.reported`` body (no task: writers of it take no task lock)."""
    data = {
        "agent_id": "gpu-01",
        "agent_type": "research",
        "free": {"gpu_vram_mb": 1024, "cpu_cores": 4.0, "memory_mb": 4096},
        "load_pct": load,
        "accepting": True,
    }
    return make_event(EventType.CAPACITY_REPORTED, data, source="agents/gpu-01", id=event_id)


def next_month(day: date | datetime, n: int = 1) -> datetime:
    """The first instant (UTC) of the ``n``-th month after the month of ``day``."""
    start = month_bounds(day)[0]
    for _ in range(n):
        start = month_bounds(start)[1]
    return start


async def record_first_copy(conn: asyncpg.Connection, body: bytes, at: datetime) -> None:
    """Record ``body`` as if it had been received at ``at`` (owner only)."""
    event = decode(body)
    await conn.execute(RECORD_AT, event.id, event.type.value, event.source, event.time, at,
                       body.decode())  # fmt: skip


async def record(pool: asyncpg.Pool, bodies: Sequence[bytes]) -> tuple[list[Event], list[str]]:
    """One write batch as the runner does it: the new events and the id conflicts found."""
    events = [decode(b) for b in bodies]
    async with db.transaction(pool) as conn:
        new = await record_events(conn, events)
        conflicts = await id_conflicts(conn, events, new)
    return new, [text for _, text in conflicts]


async def where(pool: asyncpg.Pool, table: str, event_id: uuid.UUID) -> list[str]:
    """The partitions holding ``event_id``'s rows of ``table``."""
    rows = await pool.fetch(
        f"SELECT tableoid::regclass::text AS part FROM {table} WHERE event_id = $1", event_id
    )
    return [r["part"] for r in rows]


@asynccontextmanager
async def as_app_role(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection acting as the application role (reset when the block ends)."""
    async with pool.acquire() as conn:
        await conn.execute(f"SET ROLE {APP_ROLE}")
        try:
            yield conn
        finally:
            await conn.execute("RESET ROLE")


async def test_rows_land_in_the_partition_of_their_utc_month(pool: asyncpg.Pool) -> None:
    march, april = date(2031, 3, 1), date(2031, 4, 1)
    for parent in PARENTS:
        for month in (march, april):
            assert await pool.fetchval("SELECT create_ledger_partition($1, $2)", parent, month) == 0
            # A second call finds it there: NULL, nothing created.
            assert (
                await pool.fetchval("SELECT create_ledger_partition($1, $2)", parent, month) is None
            )
    cases = {
        datetime(2031, 3, 1, tzinfo=UTC): "event_ledger_p203103",  # first instant
        datetime(2031, 3, 31, 23, 59, 59, 999999, tzinfo=UTC): "event_ledger_p203103",
        datetime(2031, 4, 1, tzinfo=UTC): "event_ledger_p203104",
        # 00:30 on 1 March in UTC+01:00 is still February in UTC: no partition, default
        datetime(2031, 3, 1, 0, 30, tzinfo=UTC) - timedelta(hours=1): "event_ledger_default",
        datetime(2031, 5, 10, tzinfo=UTC): "event_ledger_default",
    }
    async with pool.acquire() as conn:
        for at, expected in cases.items():
            body = report()
            await record_first_copy(conn, body, at)
            assert await where(pool, "event_ledger", decode(body).id) == [expected], at
    assert partition_name("event_ledger", datetime(2031, 3, 31, 23, 59, tzinfo=UTC)) == (
        "event_ledger_p203103"
    )


async def test_ensure_creates_months_ahead_and_moves_rows_out_of_default(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    m1, m2 = next_month(now), next_month(now, 2)
    body, task_id = report(), uuid.uuid4()
    async with pool.acquire() as conn:
        await record_first_copy(conn, body, m1 + timedelta(days=3))
        await conn.execute(
            "INSERT INTO tasks (task_id, status, request_text, created_at, updated_at) "
            "VALUES ($1, 'executing', 'x', now(), now())",
            task_id,
        )
        await conn.execute(
            "INSERT INTO execution_logs (log_id, event_id, task_id, step_number, agent_type,"
            " action, status, timestamp, recorded_at)"
            " VALUES ($1, $1, $2, 1, 'infra', 'a', 'completed', $3, $3)",
            decode(body).id, task_id, m1 + timedelta(days=3),
        )  # fmt: skip
    event_id = decode(body).id
    assert await where(pool, "event_ledger", event_id) == ["event_ledger_default"]
    assert await where(pool, "execution_logs", event_id) == ["execution_logs_default"]

    # The service's role calls it (SECURITY DEFINER: it acts as the owner).
    async with as_app_role(pool) as conn:
        created = dict(await ensure_partitions(conn, 2))
    p1 = {t: partition_name(t, m1) for t in PARENTS}
    p2 = {t: partition_name(t, m2) for t in PARENTS}
    assert created == {p1["event_ledger"]: 1, p1["execution_logs"]: 1,
                       p2["event_ledger"]: 0, p2["execution_logs"]: 0}  # fmt: skip
    assert await where(pool, "event_ledger", event_id) == [p1["event_ledger"]]
    assert await where(pool, "execution_logs", event_id) == [p1["execution_logs"]]
    for parent in PARENTS:
        assert await pool.fetchval(f"SELECT count(*) FROM {parent}_default") == 0
        # the default partition's guard is on again, and the moved row is guarded too
        assert await pool.fetchval(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2",
            f"{parent}_default", f"enforce_{parent}_append_only",
        ) == "O"  # fmt: skip
        with pytest.raises(ImmutableRecord), db.translate_errors():
            await pool.execute(f"DELETE FROM {p1[parent]}")
    async with as_app_role(pool) as conn:
        assert await ensure_partitions(conn, 2) == []  # idempotent
        # rows of the new month now land in their partition, as the app role writes them
        await conn.execute(RECORD_AT, uuid.uuid4(),
                           "capacity.reported", "agents/x", now, m2 + timedelta(hours=1), "{}")  # fmt: skip
    assert await pool.fetchval(f"SELECT count(*) FROM {p2['event_ledger']}") == 1


async def test_dedup_is_global_across_months_in_batch_and_after_detach(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    old_month = date(2025, 1, 1)
    assert await pool.fetchval("SELECT create_ledger_partition('event_ledger', $1)", old_month) == 0
    first, fresh = report(), report()
    async with pool.acquire() as conn:
        await record_first_copy(conn, first, datetime(2025, 1, 15, tzinfo=UTC))
    first_id, fresh_id = decode(first).id, decode(fresh).id

    # The id is in January's partition; this batch is received now: still a duplicate.
    # The batch also repeats a new id: stored once, the first copy wins.
    new, conflicts = await record(pool, [first, fresh, fresh, first])
    assert [e.id for e in new] == [fresh_id] and conflicts == []
    assert await where(pool, "event_ledger", first_id) == ["event_ledger_p202501"]
    assert len(await where(pool, "event_ledger", fresh_id)) == 1
    mismatched = await pool.fetchval(
        "SELECT count(*) FROM event_ledger l JOIN ledger_event_ids k USING (event_id) "
        "WHERE l.seq <> k.seq OR l.received_at <> k.received_at"
    )
    assert mismatched == 0

    # Another event reusing the id while its first copy is still here: a conflict.
    reused = orjson.loads(report(first_id, load=99.0))
    new, conflicts = await record(pool, [orjson.dumps(reused)])
    assert new == [] and len(conflicts) == 1 and "ledger seq" in conflicts[0]

    # January is archived (detached): the id stays known, the event is a duplicate of it.
    await pool.execute("ALTER TABLE event_ledger DETACH PARTITION event_ledger_p202501")
    assert await where(pool, "event_ledger", first_id) == []
    with caplog.at_level(logging.WARNING, logger="consumer.ledger.inbox"):
        new, conflicts = await record(pool, [first, orjson.dumps(reused)])
    assert new == [] and conflicts == []
    warned = [r for r in caplog.records if getattr(r, "action", None) == "duplicate_of_archived"]
    assert len(warned) == 1 and getattr(warned[0], "count", None) == 2
    assert str(first_id) in warned[0].getMessage()
    assert (
        await pool.fetchval("SELECT count(*) FROM event_ledger WHERE event_id = $1", first_id) == 0
    )


async def test_concurrent_writers_store_an_id_once(pool: asyncpg.Pool) -> None:
    a, b, c, d = (report() for _ in range(4))
    ids = {name: decode(body).id for name, body in zip("abcd", (a, b, c, d), strict=True)}
    conn1 = await pool.acquire()
    try:
        tx1 = conn1.transaction()
        await tx1.start()
        new1 = await record_events(conn1, [decode(x) for x in (a, b, c)])
        assert len(new1) == 3
        # The second writer holds b and c in the opposite order, plus d: it waits for
        # the first writer's ids (sorted claims: no deadlock), then skips them.
        second = asyncio.create_task(record(pool, [c, b, d]))
        await asyncio.sleep(0.3)
        assert not second.done()
        await tx1.commit()
        new2, conflicts = await asyncio.wait_for(second, 10)
    finally:
        await pool.release(conn1)
    assert [e.id for e in new2] == [ids["d"]] and conflicts == []

    # A writer that rolls back leaves the ids to the one that waited on them.
    e, f = report(), report()
    conn1 = await pool.acquire()
    try:
        tx1 = conn1.transaction()
        await tx1.start()
        await record_events(conn1, [decode(e), decode(f)])
        second = asyncio.create_task(record(pool, [f, e]))
        await asyncio.sleep(0.3)
        assert not second.done()
        await tx1.rollback()
        new2, _ = await asyncio.wait_for(second, 10)
    finally:
        await pool.release(conn1)
    assert sorted(str(x.id) for x in new2) == sorted(str(decode(x).id) for x in (e, f))

    counts = await pool.fetch(
        "SELECT event_id, count(*) AS n FROM event_ledger GROUP BY event_id HAVING count(*) > 1"
    )
    assert counts == []
    assert await pool.fetchval("SELECT count(*) FROM event_ledger") == 6
    assert await pool.fetchval("SELECT count(*) FROM ledger_event_ids") == 6


async def test_seq_follows_the_batch_order(pool: asyncpg.Pool) -> None:
    bodies = [report() for _ in range(6)]
    new, _ = await record(pool, bodies)
    seqs = await pool.fetch(
        "SELECT event_id, seq FROM event_ledger WHERE event_id = ANY($1::uuid[])",
        [e.id for e in new],
    )
    by_id = {r["event_id"]: r["seq"] for r in seqs}
    in_order = [by_id[decode(b).id] for b in bodies]
    assert in_order == sorted(in_order)


async def test_app_role_cannot_detach_drop_or_truncate_a_partition(pool: asyncpg.Pool) -> None:
    current = {t: partition_name(t, datetime.now(UTC)) for t in PARENTS}
    denied = [
        f"ALTER TABLE event_ledger DETACH PARTITION {current['event_ledger']}",
        "ALTER TABLE execution_logs DETACH PARTITION execution_logs_default",
        f"DROP TABLE {current['event_ledger']}",
        "DROP TABLE event_ledger_default",
        f"TRUNCATE {current['event_ledger']}",
        "TRUNCATE event_ledger_default",
        f"TRUNCATE {current['execution_logs']}",
        "TRUNCATE ledger_event_ids",
        f"DELETE FROM {current['event_ledger']}",
        "DELETE FROM ledger_event_ids",
        "ALTER TABLE event_ledger_default DISABLE TRIGGER enforce_event_ledger_append_only",
        "SELECT create_ledger_partition('event_ledger', DATE '2040-01-01')",
        "CREATE TABLE event_ledger_p204001 PARTITION OF event_ledger "
        "FOR VALUES FROM ('2040-01-01 00:00+00') TO ('2040-02-01 00:00+00')",
    ]
    allowed = []
    for statement in denied:
        async with as_app_role(pool) as conn:
            try:
                await conn.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                continue
        allowed.append(statement)
    assert allowed == []

    # Even the owner cannot truncate any partition: each carries the TRUNCATE guard.
    partitions = await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN ('event_ledger'::regclass, 'execution_logs'::regclass)"
    )
    assert len(partitions) >= 4
    for row in [*partitions, {"relname": "ledger_event_ids"}]:
        with pytest.raises(ImmutableRecord), db.translate_errors():
            await pool.execute(f"TRUNCATE {row['relname']}")


async def test_steps_are_recorded_once_in_their_events_month(pool: asyncpg.Pool) -> None:
    bodies = [body for _, body in lifecycle(steps=3)]
    events = [decode(b) for b in bodies]
    for _ in range(2):  # a re-delivery of the whole task
        async with db.transaction(pool) as conn:
            new = await record_events(conn, events)
            await AuditHandler().apply(conn, new)
    task_id = events[0].task_id
    async with db.transaction(pool) as conn:  # a re-projection of every step of the task
        await conn.execute(db.q("insert_steps"), [], [], [], [task_id])
    rows = await pool.fetch(
        "SELECT e.event_id, e.tableoid::regclass::text AS part, e.recorded_at, l.received_at "
        "FROM execution_logs e JOIN event_ledger l USING (event_id) WHERE e.task_id = $1",
        task_id,
    )
    assert len(rows) == 3
    for row in rows:
        assert row["recorded_at"] == row["received_at"]
        assert row["part"] == partition_name("execution_logs", row["received_at"])
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            "INSERT INTO execution_logs (event_id, task_id, step_number, agent_type, action,"
            " status, timestamp, recorded_at) VALUES ($1, $2, 1, 'infra', 'a', 'completed',"
            " now(), $3)",
            rows[0]["event_id"], task_id, rows[0]["recorded_at"],
        )  # fmt: skip


async def test_the_service_creates_partitions_ahead_at_start(
    settings: Settings, topology: object, pool: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    ahead = [partition_name(t, next_month(now, n)) for t in PARENTS for n in (1, 2)]
    assert [await pool.fetchval("SELECT to_regclass($1)::text", p) for p in ahead] == [None] * 4
    await burst(settings.model_copy(update={"partitions_ahead": 2}), only="capacity")
    assert [await pool.fetchval("SELECT to_regclass($1)::text", p) for p in ahead] == ahead


async def test_upgrade_moves_existing_rows_into_partitions_and_downgrade_back(
    empty_db_url: str,
) -> None:
    """012 -> 013 copies the rows (ids claimed, steps moved to their event's month), the
    sequence continues; 013 -> 012 copies them back."""
    await asyncio.to_thread(upgrade, empty_db_url, "012_async_seal")
    task_id = uuid.uuid4()
    months = [datetime(2026, 9, 15, tzinfo=UTC), datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC)]
    conn = await db.connect(empty_db_url)
    try:
        await conn.execute(
            "INSERT INTO tasks (task_id, status, request_text, created_at, updated_at) "
            "VALUES ($1, 'executing', 'x', now(), now())",
            task_id,
        )
        for at in months:
            event_id = await conn.fetchval(
                "INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time,"
                " received_at, schema_version, envelope) VALUES (gen_random_uuid(), 'task.step',"
                " 'agents/x', $1, $2, $2, 1, '{}') RETURNING event_id",
                task_id, at,
            )  # fmt: skip
            await conn.execute(  # projected a day later (its task came late)
                "INSERT INTO execution_logs (log_id, event_id, task_id, step_number, agent_type,"
                " action, status, timestamp, recorded_at) VALUES ($1, $1, $2, 1, 'infra', 'a',"
                " 'completed', $3, $3::timestamptz + interval '1 day')",
                event_id, task_id, at,
            )  # fmt: skip
        before = await conn.fetch("SELECT * FROM event_ledger ORDER BY seq")
        await asyncio.to_thread(upgrade, empty_db_url, "013_partitioned_ledger")
        parts = await conn.fetch(
            "SELECT tableoid::regclass::text AS part FROM event_ledger ORDER BY seq"
        )
        assert [r["part"] for r in parts] == ["event_ledger_p202609", "event_ledger_p202610"]
        steps = await conn.fetch(
            "SELECT e.tableoid::regclass::text AS part, e.recorded_at = l.received_at AS same "
            "FROM execution_logs e JOIN event_ledger l USING (event_id) ORDER BY l.seq"
        )
        assert [(r["part"], r["same"]) for r in steps] == [
            ("execution_logs_p202609", True),
            ("execution_logs_p202610", True),
        ]
        ids = await conn.fetch("SELECT event_id, seq, received_at FROM ledger_event_ids")
        assert sorted(tuple(r) for r in ids) == sorted(
            (r["event_id"], r["seq"], r["received_at"]) for r in before
        )
        assert await conn.fetchval("SELECT nextval('event_ledger_seq_seq')") > before[-1]["seq"]

        await asyncio.to_thread(downgrade, empty_db_url, "012_async_seal")
        after = await conn.fetch("SELECT * FROM event_ledger ORDER BY seq")
        assert [dict(r) for r in after] == [dict(r) for r in before]
        assert await conn.fetchval("SELECT count(*) FROM execution_logs") == 2
        assert await conn.fetchval("SELECT to_regclass('ledger_event_ids')") is None
    finally:
        await conn.close()


async def test_a_second_terminal_is_a_conflict_without_probing_the_partitions(
    pool: asyncpg.Pool,
) -> None:
    """015: a task's first terminal event is found by key in ``ledger_task_terminals``,
    also after its month left the ledger, so a later terminal is still a conflict."""
    task_id = uuid.uuid4()
    completed = [body for _, body in lifecycle(task_id, steps=0, terminal="completed")]
    await record(pool, completed)
    first = decode(completed[-1]).id
    stored = await pool.fetch("SELECT task_id, event_id FROM ledger_task_terminals")
    assert [(r["task_id"], r["event_id"]) for r in stored] == [(task_id, first)]

    plan = "\n".join(
        r[0] for r in await pool.fetch(
            "EXPLAIN " + db.q("existing_terminal_events"), [task_id]
        )
    )  # fmt: skip
    assert "ledger_task_terminals" in plan and "event_ledger" not in plan

    # The month holding the first terminal is detached (as archive does).
    month = partition_name("event_ledger", datetime.now(UTC).date())
    await pool.execute(f"ALTER TABLE event_ledger DETACH PARTITION {month}")
    failed = lifecycle(task_id, steps=0, terminal="failed")[-1][1]
    new, _ = await record(pool, [failed])
    assert [e.id for e in new] == [decode(failed).id]
    conflict = await pool.fetchval(
        "SELECT conflict_with FROM event_ledger WHERE event_id = $1", decode(failed).id
    )
    assert conflict == first
    assert await pool.fetchval("SELECT count(*) FROM ledger_task_terminals") == 1
