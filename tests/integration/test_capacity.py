"""Admission, the pause queue in and out, holds and timers, against real PostgreSQL.

Events go through what the runner does with them: decoded, recorded in the ledger
(duplicates dropped), and the new ones applied by the handler in the same transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from consumer import outbox
from consumer.admission.handler import CapacityHandler
from consumer.admission.policy import RELEASE_LIMIT
from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.ledger.inbox import record_events
from consumer.runtime.handler import ServiceContext
from consumer.store import db
from contracts import EventType, decode, make_event

pytestmark = pytest.mark.asyncio


# --- message builders ---------------------------------------------------------------


def request(
    task_id: uuid.UUID | None = None,
    *,
    agent_type: str = "infra",
    gpu: int = 0,
    cpu: float = 1.0,
    mem: int = 512,
    priority: int = 3,
    not_before: datetime | None = None,
    event_id: uuid.UUID | None = None,
) -> bytes:
    """A ``dispatch.requested`` body."""
    task_id = task_id or uuid.uuid4()
    data: dict[str, Any] = {
        "work_plan": {"task": f"work {task_id}", "steps": ["a", "b"]},
        "required": {"gpu_vram_mb": gpu, "cpu_cores": cpu, "memory_mb": mem},
        "agent_type": agent_type,
        "priority": priority,
    }
    if not_before is not None:
        data["not_before"] = not_before.isoformat()
    return make_event(
        EventType.DISPATCH_REQUESTED, data, source="orchestrator", subject=task_id, id=event_id
    )


def report(
    agent_id: str = "infra-01",
    *,
    agent_type: str = "infra",
    gpu: int = 0,
    cpu: float = 8.0,
    mem: int = 8192,
    load: float = 10.0,
    accepting: bool = True,
    at: datetime | None = None,
) -> bytes:
    """A ``capacity.reported`` body."""
    data = {
        "agent_id": agent_id,
        "agent_type": agent_type,
        "free": {"gpu_vram_mb": gpu, "cpu_cores": cpu, "memory_mb": mem},
        "load_pct": load,
        "accepting": accepting,
    }
    return make_event(EventType.CAPACITY_REPORTED, data, source=f"agents/{agent_id}", time=at)


def pause(task_id: uuid.UUID | None = None, *, resume_after: datetime | None = None) -> bytes:
    """A ``control.pause`` body (scope task when ``task_id`` is given, else all)."""
    data: dict[str, Any] = {"scope": "task" if task_id else "all", "reason": "maintenance"}
    if task_id:
        data["task_id"] = str(task_id)
    if resume_after:
        data["resume_after"] = resume_after.isoformat()
    return make_event(EventType.CONTROL_PAUSE, data, source="ops/alice")


def resume(task_id: uuid.UUID | None = None, *, force: bool = False) -> bytes:
    """A ``control.resume`` body."""
    data: dict[str, Any] = {"scope": "task" if task_id else "all", "force": force}
    if task_id:
        data["task_id"] = str(task_id)
    return make_event(EventType.CONTROL_RESUME, data, source="ops/alice")


# --- plumbing -----------------------------------------------------------------------


@pytest.fixture
def handler(settings: Settings) -> CapacityHandler:
    return CapacityHandler(settings)


async def feed(pool: asyncpg.Pool, handler: CapacityHandler, *bodies: bytes) -> int:
    """Apply ``bodies`` as one runner batch; returns how many were new to the ledger."""
    events = [decode(b) for b in bodies]
    async with db.transaction(pool) as conn:
        new = await record_events(conn, events)
        await handler.apply(conn, new)
    return len(new)


async def feed_each(pool: asyncpg.Pool, handler: CapacityHandler, *bodies: bytes) -> None:
    """Apply ``bodies`` one transaction each (distinct ``paused_at`` per entry)."""
    for body in bodies:
        await feed(pool, handler, body)


async def dispatched(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every dispatch.assigned in the outbox, decoded, in outbox order."""
    rows = await pool.fetch(
        "SELECT message_id, routing_key, exchange, body FROM outbox "
        "WHERE event_type = 'dispatch.assigned' ORDER BY id"
    )
    out = []
    for r in rows:
        envelope = orjson.loads(r["body"])
        assert envelope["id"] == str(r["message_id"])
        out.append({"routing_key": r["routing_key"], "exchange": r["exchange"], **envelope["data"]})
    return out


async def waiting(pool: asyncpg.Pool) -> dict[uuid.UUID, str]:
    """task_id -> reason of every pause_queue entry."""
    return {r["task_id"]: r["reason"] for r in await pool.fetch("SELECT * FROM pause_queue")}


async def history(pool: asyncpg.Pool, task_id: uuid.UUID | None = None) -> list[asyncpg.Record]:
    if task_id is None:
        return await pool.fetch("SELECT * FROM pause_history ORDER BY id")
    return await pool.fetch("SELECT * FROM pause_history WHERE task_id = $1 ORDER BY id", task_id)


def task_ids(messages: Sequence[dict[str, Any]]) -> list[uuid.UUID]:
    return [uuid.UUID(m["task_id"]) for m in messages]


# --- admission ----------------------------------------------------------------------


async def test_request_admitted_when_a_fresh_agent_has_room(
    pool: asyncpg.Pool, handler: CapacityHandler, settings: Settings
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-01", mem=4096), request(task, mem=1024, cpu=2))

    [message] = await dispatched(pool)
    assert message["task_id"] == str(task)
    assert message["agent_id"] == "infra-01"
    assert message["trigger"] == "immediate"
    assert message["routing_key"] == "dispatch.infra.infra-01"
    assert message["exchange"] == f"{settings.prefix}.dispatch"
    assert message["work_plan"]["task"] == f"work {task}"
    row = await pool.fetchrow("SELECT message_id, body FROM outbox WHERE task_id = $1", task)
    assert row["message_id"] == outbox.dispatch_message_id(task)
    assert orjson.loads(row["body"])["source"] == "taskledger"
    agent = await pool.fetchrow("SELECT * FROM agent_capacity WHERE agent_id = 'infra-01'")
    assert (agent["reserved_memory_mb"], agent["reserved_cpu_cores"]) == (1024, 2.0)
    assert await waiting(pool) == {}


async def test_request_paused_without_capacity(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, request(task, mem=1024, priority=2))

    assert await dispatched(pool) == []
    entry = await pool.fetchrow("SELECT * FROM pause_queue WHERE task_id = $1", task)
    assert entry["reason"] == "insufficient_capacity"
    assert entry["priority"] == 2
    assert entry["agent_type"] == "infra"
    assert entry["required_memory_mb"] == 1024
    assert entry["work_plan_json"]["task"] == f"work {task}"
    [row] = await history(pool, task)
    assert (row["action"], row["reason"], row["trigger"]) == (
        "paused",
        "insufficient_capacity",
        None,
    )


@pytest.mark.parametrize(
    "agent",
    [
        {"at": datetime.now(UTC) - timedelta(seconds=120)},  # older than the freshness limit
        {"load": 95.0},  # over the pause threshold
        {"accepting": False},
        {"agent_type": "code"},  # wrong type
        {"mem": 256},  # too small
    ],
    ids=["stale", "loaded", "not-accepting", "other-type", "too-small"],
)
async def test_request_paused_when_no_agent_qualifies(
    pool: asyncpg.Pool, handler: CapacityHandler, agent: dict[str, Any]
) -> None:
    agent_type = agent.pop("agent_type", "infra")
    await feed(pool, handler, report("a-1", agent_type=agent_type, **agent))
    task = uuid.uuid4()
    await feed(pool, handler, request(task, mem=1024))
    assert await dispatched(pool) == []
    assert await waiting(pool) == {task: "insufficient_capacity"}


async def test_reservation_holds_until_the_agents_next_report(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    await feed(pool, handler, report("infra-01", mem=1000))
    await feed(pool, handler, request(first, mem=600))
    await feed(pool, handler, request(second, mem=600))
    assert task_ids(await dispatched(pool)) == [first]
    assert await waiting(pool) == {second: "insufficient_capacity"}

    await feed(pool, handler, report("infra-01", mem=1000))  # the agent reports again

    messages = await dispatched(pool)
    assert task_ids(messages) == [first, second]
    assert messages[1]["trigger"] == "capacity"
    [_paused, released] = await history(pool, second)
    assert (released["action"], released["trigger"], released["agent_id"]) == (
        "released",
        "capacity",
        "infra-01",
    )
    agent = await pool.fetchrow("SELECT * FROM agent_capacity WHERE agent_id = 'infra-01'")
    assert agent["reserved_memory_mb"] == 600


async def test_most_free_memory_wins_then_agent_id(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    await feed(pool, handler, report("b", mem=2000), report("a", mem=2000), report("c", mem=1000))
    tasks = [uuid.uuid4() for _ in range(3)]
    await feed_each(pool, handler, *(request(t, mem=600) for t in tasks))
    # a and b tie at 2000: a first; then b has more left (2000 vs 1400); then a (1400 vs 1400)
    assert [m["agent_id"] for m in await dispatched(pool)] == ["a", "b", "a"]


# --- release ------------------------------------------------------------------------


async def test_release_order_is_priority_then_age(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    old3, p1, new3, p2 = (uuid.uuid4() for _ in range(4))
    await feed_each(
        pool,
        handler,
        request(old3, priority=3, mem=100),
        request(p1, priority=1, mem=100),
        request(new3, priority=3, mem=100),
        request(p2, priority=2, mem=100),
    )
    await feed(pool, handler, report("infra-01", mem=250))  # room for two
    assert task_ids(await dispatched(pool)) == [p1, p2]

    await feed(pool, handler, report("infra-01", mem=100))  # room for one: the older
    assert task_ids(await dispatched(pool)) == [p1, p2, old3]
    assert await waiting(pool) == {new3: "insufficient_capacity"}


async def test_report_that_fits_only_some_entries(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    big, gpu, small1, small2, other_type = (uuid.uuid4() for _ in range(5))
    await feed_each(
        pool,
        handler,
        request(big, priority=1, mem=6000),
        request(gpu, priority=1, mem=100, gpu=8000),
        request(small1, priority=2, mem=1500),
        request(small2, priority=3, mem=1500),
        request(other_type, priority=1, mem=10, agent_type="code"),
    )
    await feed(pool, handler, report("infra-01", mem=4000, gpu=0, cpu=8))

    # the big one does not fit what is left and is passed over, not waited for
    assert task_ids(await dispatched(pool)) == [small1, small2]
    assert set(await waiting(pool)) == {big, gpu, other_type}
    agent = await pool.fetchrow("SELECT * FROM agent_capacity")
    assert agent["reserved_memory_mb"] == 3000


async def test_older_report_arriving_late_changes_nothing(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    now = datetime.now(UTC)
    task = uuid.uuid4()
    await feed(pool, handler, request(task, mem=4000))
    await feed(pool, handler, report("infra-01", mem=100, at=now))
    await feed(pool, handler, report("infra-01", mem=100_000, at=now - timedelta(seconds=5)))

    agent = await pool.fetchrow("SELECT * FROM agent_capacity")
    assert agent["free_memory_mb"] == 100
    assert agent["reported_at"] == now
    assert await dispatched(pool) == []
    assert await waiting(pool) == {task: "insufficient_capacity"}


async def test_older_report_does_not_clear_the_reservation(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    now = datetime.now(UTC)
    first, second = uuid.uuid4(), uuid.uuid4()
    await feed(pool, handler, report("infra-01", mem=1000, at=now))
    await feed(pool, handler, request(first, mem=800))
    await feed(pool, handler, report("infra-01", mem=1000, at=now - timedelta(seconds=1)))
    await feed(pool, handler, request(second, mem=800))
    assert task_ids(await dispatched(pool)) == [first]
    assert await waiting(pool) == {second: "insufficient_capacity"}


async def test_release_is_bounded_per_report_and_the_timer_sweeps_the_rest(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    n = RELEASE_LIMIT + 20
    await feed(pool, handler, *(request(mem=1, cpu=0) for _ in range(n)))
    assert len(await waiting(pool)) == n

    await feed(pool, handler, report("infra-01", mem=10_000))
    assert len(await dispatched(pool)) == RELEASE_LIMIT

    assert await handler.tick(pool) == 20
    messages = await dispatched(pool)
    assert len(messages) == n == len(set(task_ids(messages)))
    assert {m["trigger"] for m in messages[RELEASE_LIMIT:]} == {"capacity"}
    assert await waiting(pool) == {}


# --- duplicates ---------------------------------------------------------------------


async def test_same_request_delivered_twice_is_applied_once(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    body = request(task)
    assert await feed(pool, handler, body, body) == 1
    assert await feed(pool, handler, body) == 0
    assert await waiting(pool) == {task: "insufficient_capacity"}
    assert len(await history(pool, task)) == 1


async def test_requests_with_different_ids_for_one_task_pause_it_once(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, request(task), request(task, priority=1))
    await feed(pool, handler, request(task))
    entry = await pool.fetchrow("SELECT * FROM pause_queue WHERE task_id = $1", task)
    assert entry["priority"] == 3  # the first one counts
    assert len(await history(pool, task)) == 1

    await feed(pool, handler, report("infra-01"))
    await feed(pool, handler, request(task))  # after the release: already dispatched
    assert task_ids(await dispatched(pool)) == [task]
    assert await waiting(pool) == {}


async def test_request_for_an_admitted_task_is_not_admitted_again(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-01"), request(task))
    await feed(pool, handler, request(task), request(task))
    assert task_ids(await dispatched(pool)) == [task]
    assert await waiting(pool) == {}


async def test_concurrent_requests_for_one_task_dispatch_it_once(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-01"))
    await asyncio.gather(*(feed(pool, handler, request(task)) for _ in range(4)))
    assert task_ids(await dispatched(pool)) == [task]
    assert await waiting(pool) == {}


# --- holds --------------------------------------------------------------------------


async def test_hold_all_pauses_new_requests_and_capacity_does_not_release_them(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-01"), pause())
    await feed(pool, handler, request(task))
    assert await waiting(pool) == {task: "manual_pause"}

    await feed(pool, handler, report("infra-01"))
    assert await dispatched(pool) == []
    assert await handler.tick(pool) == 0

    await feed(pool, handler, resume())
    [message] = await dispatched(pool)
    assert (message["task_id"], message["trigger"]) == (str(task), "manual")
    actions = [(r["action"], r["trigger"]) for r in await history(pool, task)]
    assert actions == [("paused", None), ("unheld", "manual"), ("released", "manual")]


async def test_pause_marks_waiting_entries_and_resume_hands_them_back(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await feed_each(pool, handler, request(a), request(b))
    await feed(pool, handler, pause())
    assert await waiting(pool) == {a: "manual_pause", b: "manual_pause"}
    hold_rows = [r for r in await history(pool) if r["action"] == "held"]
    assert {r["task_id"] for r in hold_rows} == {None, a, b}

    await feed(pool, handler, resume())  # no capacity anywhere: back to waiting for it
    assert await waiting(pool) == {a: "insufficient_capacity", b: "insufficient_capacity"}
    assert await dispatched(pool) == []

    await feed(pool, handler, report("infra-01"))
    assert {m["trigger"] for m in await dispatched(pool)} == {"capacity"}
    assert await waiting(pool) == {}


async def test_task_hold_keeps_only_that_task(pool: asyncpg.Pool, handler: CapacityHandler) -> None:
    held, free = uuid.uuid4(), uuid.uuid4()
    await feed(pool, handler, pause(held))
    await feed_each(pool, handler, request(held), request(free))
    assert await waiting(pool) == {held: "manual_pause", free: "insufficient_capacity"}

    await feed(pool, handler, report("infra-01"))
    assert task_ids(await dispatched(pool)) == [free]

    await feed(pool, handler, resume(held))
    messages = await dispatched(pool)
    assert task_ids(messages) == [free, held]
    assert messages[1]["trigger"] == "manual"


async def test_resume_all_keeps_entries_that_have_their_own_hold(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await feed(pool, handler, pause(), pause(a))
    await feed_each(pool, handler, request(a), request(b))
    await feed(pool, handler, report("infra-01"))
    await feed(pool, handler, resume())
    assert task_ids(await dispatched(pool)) == [b]
    assert await waiting(pool) == {a: "manual_pause"}


async def test_hold_with_resume_after_is_lifted_by_the_timer(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-01"), pause(resume_after=until))
    await feed(pool, handler, request(task))
    entry = await pool.fetchrow("SELECT * FROM pause_queue WHERE task_id = $1", task)
    assert (entry["reason"], entry["resume_after"]) == ("manual_pause", until)
    assert await handler.tick(pool) == 0  # not yet

    # time passes: move the hold's deadline into the past
    await pool.execute("UPDATE dispatch_holds SET resume_after = now() - interval '1 second'")
    assert await handler.tick(pool) == 1

    [message] = await dispatched(pool)
    assert message["trigger"] == "timeout"
    assert await pool.fetchval("SELECT count(*) FROM dispatch_holds") == 0
    released = (await history(pool, task))[-1]
    assert (released["action"], released["trigger"]) == ("released", "timeout")


async def test_expired_hold_entries_without_room_wait_for_capacity(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, pause(task, resume_after=datetime.now(UTC) + timedelta(hours=1)))
    await feed(pool, handler, request(task))
    await pool.execute("UPDATE dispatch_holds SET resume_after = now() - interval '1 second'")
    assert await handler.tick(pool) == 0
    assert await waiting(pool) == {task: "insufficient_capacity"}
    await feed(pool, handler, report("infra-01"))
    assert task_ids(await dispatched(pool)) == [task]


async def test_not_before_is_honoured(pool: asyncpg.Pool, handler: CapacityHandler) -> None:
    later, now_task = uuid.uuid4(), uuid.uuid4()
    await feed(pool, handler, report("infra-01"))
    await feed(pool, handler, request(later, not_before=datetime.now(UTC) + timedelta(hours=1)))
    await feed(pool, handler, request(now_task, not_before=datetime.now(UTC) - timedelta(hours=1)))
    assert task_ids(await dispatched(pool)) == [now_task]
    assert await waiting(pool) == {later: "insufficient_capacity"}

    await feed(pool, handler, report("infra-01"))
    assert await handler.tick(pool) == 0
    assert task_ids(await dispatched(pool)) == [now_task]

    await pool.execute("UPDATE pause_queue SET not_before = now() - interval '1 second'")
    assert await handler.tick(pool) == 1
    messages = await dispatched(pool)
    assert task_ids(messages) == [now_task, later]
    assert messages[1]["trigger"] == "timeout"


# --- force --------------------------------------------------------------------------


async def test_force_without_capacity_goes_to_any_agent(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, request(task, mem=64_000))
    await feed(pool, handler, resume(task, force=True))

    [message] = await dispatched(pool)
    assert message["agent_id"] is None
    assert message["trigger"] == "manual"
    assert message["routing_key"] == "dispatch.infra.any"
    assert await waiting(pool) == {}
    released = (await history(pool, task))[-1]
    assert (released["action"], released["trigger"]) == ("released", "manual")
    assert released["details"]["forced"] is True


async def test_force_with_room_goes_to_that_agent_even_under_a_hold(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-07"), pause())
    await feed(pool, handler, request(task))
    await feed(pool, handler, resume(task, force=True))
    [message] = await dispatched(pool)
    assert (message["agent_id"], message["routing_key"]) == ("infra-07", "dispatch.infra.infra-07")
    assert await pool.fetchval("SELECT hold_key FROM dispatch_holds") == "all"


async def test_force_for_a_task_that_does_not_wait_dispatches_nothing(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, resume(task, force=True))
    assert await dispatched(pool) == []
    [row] = await history(pool, task)
    assert row["action"] == "unheld"
    assert row["details"]["waiting"] is False
    assert row["details"]["force"] is True


async def test_force_twice_dispatches_once(pool: asyncpg.Pool, handler: CapacityHandler) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, request(task))
    await feed(pool, handler, resume(task, force=True), resume(task, force=True))
    assert task_ids(await dispatched(pool)) == [task]


# --- finished tasks, concurrency ------------------------------------------------------


async def test_entry_of_a_finished_task_is_cancelled(
    pool: asyncpg.Pool, handler: CapacityHandler
) -> None:
    task = uuid.uuid4()
    await feed(pool, handler, request(task))
    await pool.execute(
        "INSERT INTO tasks (task_id, status, request_text, created_at, updated_at) "
        "VALUES ($1, 'rejected', 'x', now(), now())",
        task,
    )
    assert await handler.cancel_finished(pool) == 1
    assert await waiting(pool) == {}
    assert await dispatched(pool) == []
    released = (await history(pool, task))[-1]
    assert (released["action"], released["trigger"]) == ("released", "cancelled")


async def test_concurrent_reports_never_release_an_entry_twice(
    pool: asyncpg.Pool, handler: CapacityHandler, db_url: str
) -> None:
    n = 200
    await feed(pool, handler, *(request(mem=10, cpu=0, priority=1 + i % 5) for i in range(n)))
    big_pool = await db.create_pool(db_url, min_size=8, max_size=8)
    try:
        reports = [report(f"agent-{i}", mem=10 * 40) for i in range(8)]  # 8 x 40 >= 200
        await asyncio.gather(*(feed(big_pool, handler, r) for r in reports))
        await handler.tick(big_pool)  # entries skipped while locked by another report
    finally:
        await big_pool.close()
    messages = await dispatched(pool)
    assert len(messages) == n == len(set(task_ids(messages)))
    assert await waiting(pool) == {}
    released = await pool.fetchval("SELECT count(*) FROM pause_history WHERE action = 'released'")
    assert released == n


# --- the background timer -----------------------------------------------------------


async def test_running_timer_releases_entries_when_not_before_passes(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    fast = settings.model_copy(update={"timer_interval_s": 0.05})
    handler = CapacityHandler(fast)
    task = uuid.uuid4()
    await feed(pool, handler, report("infra-01"))
    await feed(pool, handler, request(task, not_before=datetime.now(UTC) + timedelta(seconds=0.3)))
    assert await waiting(pool) == {task: "insufficient_capacity"}

    stopping = asyncio.Event()
    ctx = ServiceContext(settings=fast, pool=pool, names=Names(fast.prefix), stopping=stopping)
    timer = asyncio.create_task(handler.run_timer(ctx))
    try:

        async def released() -> None:
            while not await dispatched(pool):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(released(), 10)
    finally:
        stopping.set()
        await asyncio.wait_for(timer, 10)
    [message] = await dispatched(pool)
    assert (message["task_id"], message["trigger"]) == (str(task), "timeout")
