"""The orphans and dispatches listings read small indexed state, not the ledger (016).

Events go through RabbitMQ and a burst run of the service (both handlers) against real
PostgreSQL. Each listing is compared with the statement it replaced (kept here, verbatim,
as ``LEGACY_*``): the same rows, in the same order, with the same columns. The plans of
the new statements are checked on a ledger of several thousand rows: no month partition
of ``event_ledger`` is read sequentially, and the ledger rows read are those listed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.admission.handler import CapacityHandler
from consumer.core.settings import Settings
from consumer.queries import reads
from consumer.queries.dispatches import dispatches
from consumer.store.db import q
from tests.support.seed import add_event
from tests.support.traffic import burst, capacity_report, dispatch_request, lifecycle, publish

pytestmark = pytest.mark.asyncio

#: audit_orphans before 016 (a scan of the ledger by received_at).
LEGACY_ORPHANS = """
SELECT l.seq, l.event_id, l.event_type, l.source, l.task_id, l.event_time, l.received_at,
       t.status AS task_status,
       CASE WHEN t.task_id IS NULL THEN 'no_task' ELSE 'terminal_waiting' END AS kind,
       CASE WHEN t.task_id IS NULL THEN ARRAY['task.requested']::text[]
            ELSE ARRAY(SELECT x.event_type
                       FROM unnest(ARRAY['task.requested', 'task.approved',
                                         'task.started']::text[]) AS x(event_type)
                       WHERE NOT EXISTS (SELECT 1 FROM event_ledger l2
                                         WHERE l2.task_id = l.task_id
                                           AND l2.event_type = x.event_type))
       END AS missing
FROM event_ledger l
LEFT JOIN tasks t ON t.task_id = l.task_id
WHERE l.event_type LIKE 'task.%'
  AND l.task_id IS NOT NULL
  AND l.received_at < now() - make_interval(secs => $1::float8)
  AND (t.task_id IS NULL
       OR (l.event_type IN ('task.completed', 'task.failed', 'task.rejected')
           AND l.conflict_with IS NULL
           AND t.status NOT IN ('completed', 'failed', 'rejected')))
ORDER BY l.received_at, l.seq
LIMIT $2
"""

#: audit_dispatches before 016 (DISTINCT ON over every dispatch.requested of the ledger).
LEGACY_DISPATCHES = """
WITH requests AS (
    SELECT DISTINCT ON (l.task_id)
           l.task_id, l.event_id AS request_event_id, l.event_time AS requested_at,
           l.envelope -> 'data' AS data
    FROM event_ledger l
    WHERE l.event_type = 'dispatch.requested' AND l.task_id IS NOT NULL
    ORDER BY l.task_id, l.seq
), decided AS (
    SELECT r.task_id, r.request_event_id, r.requested_at,
           r.data ->> 'agent_type' AS agent_type,
           CASE WHEN jsonb_typeof(r.data -> 'priority') = 'number'
                THEN (r.data ->> 'priority')::numeric::int ELSE 3 END AS priority,
           CASE WHEN w.id IS NOT NULL THEN 'waiting'
                WHEN d.trigger = 'cancelled' THEN 'cancelled'
                WHEN d.id IS NOT NULL THEN 'assigned'
                ELSE 'requested' END AS status,
           coalesce(w.reason, d.reason, p.reason) AS reason,
           d.trigger, d.agent_id, d.at AS decided_at, p.at AS paused_at,
           d.details ->> 'message_id' AS message_id,
           CASE WHEN jsonb_typeof(d.details -> 'waited_s') = 'number'
                THEN (d.details ->> 'waited_s')::float8 END AS waited_s,
           t.status AS task_status
    FROM requests r
    LEFT JOIN pause_queue w ON w.task_id = r.task_id
    LEFT JOIN LATERAL (
        SELECT h.id, h.reason, h.trigger, h.agent_id, h.at, h.details
        FROM pause_history h
        WHERE h.task_id = r.task_id AND h.action = 'released'
        ORDER BY h.at DESC, h.id DESC
        LIMIT 1
    ) d ON true
    LEFT JOIN LATERAL (
        SELECT h.reason, h.at
        FROM pause_history h
        WHERE h.task_id = r.task_id AND h.action = 'paused'
        ORDER BY h.at DESC, h.id DESC
        LIMIT 1
    ) p ON true
    LEFT JOIN tasks t ON t.task_id = r.task_id
    WHERE ($3::timestamptz IS NULL OR r.requested_at >= $3::timestamptz)
      AND ($4::timestamptz IS NULL OR (r.requested_at, r.task_id) < ($4::timestamptz, $5::uuid))
)
SELECT *
FROM decided
WHERE ($1::text IS NULL OR status = $1::text)
  AND ($2::text IS NULL OR agent_id = $2::text)
ORDER BY requested_at DESC, task_id DESC
LIMIT $6
"""


async def _rows(pool: asyncpg.Pool, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The rows of ``sql`` as the reads run it (read-only, custom plans), as dicts."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(q("read_custom_plans"))
        return [dict(r.items()) for r in await conn.fetch(sql, *args)]


async def _same_orphans(pool: asyncpg.Pool, older_than_s: float = 0.001) -> list[dict[str, Any]]:
    """The orphans by the new statement, checked equal to the legacy one's (for two limits)."""
    new = await _rows(pool, q("audit_orphans"), older_than_s, 500)
    assert new == await _rows(pool, LEGACY_ORPHANS, older_than_s, 500)
    assert await _rows(pool, q("audit_orphans"), older_than_s, 2) == new[:2]
    return new


def without(messages: list[tuple[str, bytes]], *kinds: str) -> list[tuple[str, bytes]]:
    """``messages`` less those whose routing key is one of ``kinds``."""
    return [m for m in messages if m[0] not in kinds]


def only(messages: list[tuple[str, bytes]], *kinds: str) -> list[tuple[str, bytes]]:
    """The ``messages`` whose routing key is one of ``kinds``."""
    return [m for m in messages if m[0] in kinds]


async def test_orphans_of_each_kind_appear_and_resolve(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: aio_pika.abc.AbstractChannel,
) -> None:
    """A task never requested (no_task) and a terminal event ahead of approved/started
    (terminal_waiting) are listed, as the ledger scan listed them, until their missing
    events arrive; then neither is, and no taskless marker is left."""
    never, early, fine = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    never_events, early_events = lifecycle(never), lifecycle(early)
    await publish(amqp, settings, [
        *without(never_events, "task.requested"),
        *without(early_events, "task.approved", "task.started"),
        *lifecycle(fine),
    ])  # fmt: skip
    await burst(settings)
    await asyncio.sleep(0.05)

    found = await _same_orphans(pool)
    by_kind = {(o["task_id"], o["kind"]) for o in found}
    assert by_kind == {(never, "no_task"), (early, "terminal_waiting")}
    assert len([o for o in found if o["task_id"] == never]) == len(never_events) - 1
    waiting = next(o for o in found if o["task_id"] == early)
    assert waiting["event_type"] == "task.completed" and waiting["task_status"] == "pending"
    assert waiting["missing"] == ["task.approved", "task.started"]
    listed = await reads.orphans(pool, older_than_s=0.001)
    assert [(o.task_id, o.kind) for o in listed] == [(o["task_id"], o["kind"]) for o in found]
    assert await _same_orphans(pool, older_than_s=3600) == []  # none that old

    # Each event of the task never requested is listed in the taskless state.
    assert await pool.fetchval(
        "SELECT count(*) FROM ledger_taskless_events WHERE task_id = $1", never
    ) == len(never_events) - 1  # fmt: skip

    await publish(amqp, settings, [
        *only(never_events, "task.requested"),
        *only(early_events, "task.approved", "task.started"),
    ])  # fmt: skip
    await burst(settings)
    assert await _same_orphans(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM ledger_taskless_events") == 0
    statuses = await pool.fetch("SELECT status FROM tasks WHERE task_id = ANY($1)", [never, early])
    assert {r["status"] for r in statuses} == {"completed"}


def _dispatch_args() -> Iterator[tuple[Any, ...]]:
    """Filters of the dispatches listing: every state, an agent, a time, page sizes."""
    for status in (None, "waiting", "assigned", "cancelled", "requested"):
        for agent in (None, "infra-01", "nobody"):
            for limit in (1, 3, 51):
                yield (status, agent, None, None, None, limit)
    yield (None, None, datetime.now(UTC) - timedelta(hours=1), None, None, 51)
    yield (None, None, datetime.now(UTC) + timedelta(hours=1), None, None, 51)


async def test_dispatches_listing_is_unchanged(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: aio_pika.abc.AbstractChannel,
) -> None:
    """Admitted, waiting, cancelled, repeated requests: the listing from
    ``ledger_task_dispatches`` equals the ledger scan for every filter and page."""
    admitted, waiting, cancelled, repeated = (uuid.uuid4() for _ in range(4))
    await publish(amqp, settings, [
        capacity_report(mem=1000), dispatch_request(admitted, mem=600), dispatch_request(waiting, mem=600, priority=2),
        dispatch_request(cancelled, mem=600, priority=4), dispatch_request(repeated, mem=100),
    ])  # fmt: skip
    await burst(settings, only=None)
    await publish(
        amqp,
        settings,
        [dispatch_request(repeated, mem=200), *lifecycle(cancelled, terminal="rejected")],
    )
    await burst(settings, only=None)
    await CapacityHandler(settings).cancel_finished(pool)
    first = await pool.fetchval(
        "SELECT event_id FROM event_ledger WHERE task_id = $1 AND event_type = 'dispatch.requested' "
        "ORDER BY seq LIMIT 1",
        repeated,
    )
    assert await pool.fetchval(
        "SELECT event_id FROM ledger_task_dispatches WHERE task_id = $1", repeated
    ) == first  # fmt: skip

    states = set()
    for args in _dispatch_args():
        new = await _rows(pool, q("audit_dispatches"), *args)
        assert new == await _rows(pool, LEGACY_DISPATCHES, *args), args
        states |= {r["status"] for r in new}
    assert {"waiting", "assigned", "cancelled"} <= states
    # Keyset pages walk the same rows as one page.
    whole = await dispatches(pool, limit=50)
    assert len(whole.items) == 4
    page = await dispatches(pool, limit=1)
    walked = list(page.items)
    while page.next_cursor:
        page = await dispatches(pool, limit=1, cursor=page.next_cursor)
        walked.extend(page.items)
    assert walked == whole.items


# --- plans on a ledger of several thousand rows ------------------------------------------

SEED_TASKS = 1500


async def _seed_ledger(pool: asyncpg.Pool) -> dict[str, uuid.UUID]:
    """SEED_TASKS finished tasks over the last 90 days (requested, approved, started,
    completed, dispatch requested: 5 ledger rows each, with their ids and derived rows),
    then one orphan of each kind; ANALYZE. Rows are written as the ledger's insert
    statement writes them."""
    never, early = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        # the months' own partitions (as in production), not the default one
        await conn.execute(
            "SELECT create_ledger_partition(p, m::date) FROM unnest(ARRAY['event_ledger', "
            "'execution_logs']) AS p, generate_series(date_trunc('month', now() - interval "
            "'91 days'), now(), interval '1 month') AS m"
        )
        await conn.execute(
            """
            WITH t AS (
                SELECT gen_random_uuid() AS task_id, n,
                       now() - make_interval(days => 90) + n * interval '85 minutes' AS at
                FROM generate_series(1, $1) AS n
            )
            INSERT INTO tasks (task_id, status, request_text, created_at, updated_at)
            SELECT task_id, 'completed', 'seeded ' || n, at, at FROM t
            """,
            SEED_TASKS,
        )
        await conn.execute(
            """
            INSERT INTO event_ledger (event_id, event_type, source, task_id, event_time,
                                      received_at, schema_version, envelope)
            SELECT gen_random_uuid(), e.kind, 'seed', t.task_id, t.created_at + e.o,
                   t.created_at + e.o, 1,
                   jsonb_build_object('data', jsonb_build_object('agent_type', 'infra'))
            FROM tasks t
            CROSS JOIN (VALUES ('task.requested', interval '0 s'),
                               ('dispatch.requested', interval '1 s'),
                               ('task.approved', interval '2 s'),
                               ('task.started', interval '3 s'),
                               ('task.completed', interval '4 s')) AS e(kind, o)
            ORDER BY t.created_at, e.o
            """
        )
        await conn.execute(
            "INSERT INTO ledger_event_ids (event_id, seq, received_at) "
            "SELECT event_id, seq, received_at FROM event_ledger"
        )
        await conn.execute(
            "INSERT INTO ledger_task_terminals (task_id, event_id, seq) "
            "SELECT task_id, event_id, seq FROM event_ledger WHERE event_type = 'task.completed'"
        )
        # ledger_task_dispatches: filled by 016's trigger on event_ledger
    # One orphan of each kind, through the seed's insert (derived rows included).
    async with pool.acquire() as conn, conn.transaction():
        at = datetime.now(UTC) - timedelta(days=2)
        await add_event(conn, never, "task.step", at)
        await conn.execute(
            "INSERT INTO tasks (task_id, status, request_text, created_at, updated_at) "
            "VALUES ($1, 'pending', 'early', $2, $2)",
            early,
            at,
        )
        await add_event(conn, early, "task.requested", at)
        await add_event(conn, early, "task.completed", at + timedelta(seconds=5))
        await conn.execute("ANALYZE")
    return {"never": never, "early": early}


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _plan(pool: asyncpg.Pool, sql: str, *args: Any) -> list[dict[str, Any]]:
    """The nodes of EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) of ``sql`` as the reads run it."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(q("read_custom_plans"))
        text = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    plan = orjson.loads(text) if isinstance(text, str | bytes) else text  # (a json codec)
    return list(_nodes(plan[0]["Plan"]))


def _ledger_reads(nodes: list[dict[str, Any]], filled: set[str]) -> tuple[list[str], float]:
    """The sequential scans that ran on ledger partitions holding rows (``filled``; one of
    an empty partition reads nothing), and the rows read from the ledger."""
    seq_scans = [
        n["Relation Name"]
        for n in nodes
        if n["Node Type"] == "Seq Scan"
        and n.get("Relation Name") in filled
        and n["Actual Loops"] > 0
    ]
    rows = sum(
        n["Actual Rows"] * n["Actual Loops"]
        for n in nodes
        if n.get("Relation Name", "").startswith("event_ledger")
    )
    return seq_scans, rows


async def _filled_partitions(pool: asyncpg.Pool) -> set[str]:
    """The partitions of event_ledger that hold rows."""
    rows = await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'event_ledger'::regclass"
    )
    return {
        r["relname"]
        for r in rows
        if await pool.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{r["relname"]}")')
    }


async def test_plans_read_small_state_not_the_ledger(pool: asyncpg.Pool) -> None:
    ids = await _seed_ledger(pool)
    ledger_rows = await pool.fetchval("SELECT count(*) FROM event_ledger")
    assert ledger_rows == SEED_TASKS * 5 + 3
    filled = await _filled_partitions(pool)
    assert len(filled) >= 3  # the seed spans several months

    found = await _same_orphans(pool, older_than_s=60)
    assert {(o["task_id"], o["kind"]) for o in found} == {
        (ids["never"], "no_task"),
        (ids["early"], "terminal_waiting"),
    }
    nodes = await _plan(pool, q("audit_orphans"), 60.0, 500)
    seq_scans, rows = _ledger_reads(nodes, filled)
    assert seq_scans == []
    # the two orphan rows, and the missing-events probes of the waiting one
    assert rows <= 10, rows
    _, legacy_rows = _ledger_reads(await _plan(pool, LEGACY_ORPHANS, 60.0, 500), filled)
    assert legacy_rows >= SEED_TASKS * 4  # what the scan read (the comparison's point)

    args = (None, None, None, None, None, 51)
    assert await _rows(pool, q("audit_dispatches"), *args) == await _rows(
        pool, LEGACY_DISPATCHES, *args
    )
    nodes = await _plan(pool, q("audit_dispatches"), *args)
    seq_scans, rows = _ledger_reads(nodes, filled)
    assert seq_scans == []
    assert rows <= 2 * 51, rows  # the existence check and the data of the page's rows
    assert not any(
        n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "ledger_task_dispatches"
        for n in nodes
    )


async def test_the_refold_reads_a_tasks_lifecycle_by_key_not_every_month(
    pool: asyncpg.Pool,
) -> None:
    """018: the audit handler's re-fold (``lifecycle_events_by_key``) returns exactly what
    the probe of every month (``lifecycle_events``, kept for ``verify``) returns, and
    reads only the months its tasks' events are in, each by primary key."""
    await _seed_ledger(pool)
    filled = await _filled_partitions(pool)
    newest = await pool.fetch(
        "SELECT task_id FROM tasks WHERE request_text LIKE 'seeded %' "
        "ORDER BY created_at DESC LIMIT 3"
    )
    tasks = [r["task_id"] for r in newest]
    by_key = [dict(r) for r in await pool.fetch(q("lifecycle_events_by_key"), tasks)]
    probed = [dict(r) for r in await pool.fetch(q("lifecycle_events"), tasks)]
    assert by_key == probed and len(by_key) == 3 * 4  # requested, approved, started, completed

    nodes = await _plan(pool, q("lifecycle_events_by_key"), tasks)
    read = {
        n["Relation Name"]
        for n in nodes
        if n.get("Relation Name", "").startswith("event_ledger") and n["Actual Loops"] > 0
    }
    seq_scans, rows = _ledger_reads(nodes, filled)
    assert seq_scans == []
    assert len(filled) >= 3 and len(read) <= 2, f"read {sorted(read)} of {sorted(filled)}"
    assert rows <= 3 * 5
