"""The audit query layer against real PostgreSQL.

The read-only tests share one database per module holding the operators' stories
(tests/support/seed.py: kuma changes in the past week, failures by resource versus
application, task X step by step, what waits and why, and orphans).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from consumer import queries
from consumer.core.errors import InvalidArgument, TaskNotFound
from consumer.queries import TaskFilter
from consumer.store import db
from contracts import AgentType, ErrorCause, TaskStatus
from tests.support.seed import NOW, Seeded, SeededDb, ago


@pytest.fixture
async def rpool(seeded_db: SeededDb) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the shared seeded database (read-only tests)."""
    p = await db.create_pool(seeded_db.url, min_size=1, max_size=2)
    yield p
    await p.close()


def ids(page: Any) -> set[UUID]:
    return {item.task_id for item in page.items}


# --- the seeds' questions -----------------------------------------------------------------


async def test_kuma_changes_in_the_past_week(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    page = await queries.by_service(rpool, "kuma", TaskFilter(since=ago(days=7)))
    assert ids(page) == {
        seeded["kuma_deploy"],
        seeded["kuma_rollout"],
        seeded["kuma_restart"],
        seeded["kuma_dns_dep"],
    }
    created = [i.created_at for i in page.items]
    assert created == sorted(created, reverse=True)
    assert page.next_cursor is None
    same = await queries.list_tasks(rpool, TaskFilter(services=["kuma"], since=ago(days=7)))
    assert ids(same) == ids(page)


async def test_failures_by_resource_versus_application(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    report = await queries.failures(rpool, TaskFilter())
    assert report.total == 4
    assert report.by_cause == {"resource": 2, "application": 1, "dependency": 1}
    assert report.by_type == {"OOMKilled": 2, "ConnectionRefused": 1, "ImportError": 1}
    assert ids(report) == {
        seeded["dns_oom"],
        seeded["billing_app"],
        seeded["kuma_dns_dep"],
        seeded["gpu_oom"],
    }
    resource = await queries.failures(rpool, TaskFilter(error_cause=ErrorCause.RESOURCE))
    assert ids(resource) == {seeded["dns_oom"], seeded["gpu_oom"]}
    assert resource.by_cause == {"resource": 2}
    app = await queries.failures(rpool, TaskFilter(error_cause=ErrorCause.APPLICATION))
    assert ids(app) == {seeded["billing_app"]}
    # Counts cover every match, not only the page.
    small = await queries.failures(rpool, TaskFilter(limit=1))
    assert len(small.items) == 1 and small.total == 4 and small.next_cursor is not None
    # Filters combine: resource failures of infra agents in the past 3 days.
    recent = await queries.failures(
        rpool,
        TaskFilter(error_cause=ErrorCause.RESOURCE, agent_type=AgentType.INFRA, since=ago(days=3)),
    )
    assert ids(recent) == {seeded["dns_oom"]}


async def test_task_step_by_step(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    detail = await queries.task_detail(rpool, seeded["kuma_deploy"])
    assert detail.task.task_id == seeded["kuma_deploy"]
    assert detail.task.status is TaskStatus.COMPLETED
    assert detail.task.services_touched == ["kuma", "traefik"]
    assert detail.task.cost_usd == pytest.approx(0.0412)
    assert detail.task.plan is not None and len(detail.task.plan["steps"]) == 3
    kinds = [
        (e.kind, e.event.event_type if e.event else e.pause.action if e.pause else "step")
        for e in detail.timeline
    ]
    assert kinds[:3] == [
        ("event", "task.requested"),
        ("event", "task.approved"),
        ("pause", "paused"),
    ]
    assert ("pause", "released") in kinds
    steps = [e.step for e in detail.timeline if e.step is not None]
    assert [s.step_number for s in steps] == [1, 2, 3]
    assert steps[2].action == "portainer.stack.redeploy kuma"
    # Every step has its ledger event right before it (same time, events first).
    for i, entry in enumerate(detail.timeline):
        if entry.kind == "step":
            assert detail.timeline[i - 1].kind == "event"
            assert detail.timeline[i - 1].at == entry.at
    assert detail.timeline[-1].title.startswith("task.completed")
    times = [e.at for e in detail.timeline]
    assert times == sorted(times)
    assert detail.waiting is None
    conflicted = await queries.task_detail(rpool, seeded["kuma_restart"])
    assert any(e.event and e.event.conflict_with for e in conflicted.timeline)
    assert any(e.title.endswith("(conflict)") for e in conflicted.timeline)


async def test_unknown_task_raises(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    with pytest.raises(TaskNotFound):
        await queries.task_detail(rpool, uuid4())
    # Events alone do not make a task.
    with pytest.raises(TaskNotFound):
        await queries.task_detail(rpool, seeded.orphan_task)


async def test_what_waits_and_why(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    view = await queries.pause_queue(rpool)
    assert [e.task_id for e in view.entries] == [seeded.unrequested_waiting, seeded["pending"]]
    urgent, capacity = view.entries
    assert (urgent.priority, urgent.reason, urgent.held) == (1, "manual_pause", True)
    assert urgent.required.gpu_vram_mb == 8000 and urgent.not_before is not None
    assert urgent.request_text is None  # its task.requested has not arrived yet
    assert (capacity.reason, capacity.held, capacity.agent_type) == (
        "insufficient_capacity",
        False,
        "infra",
    )
    assert capacity.required.memory_mb == 4096 and capacity.request_text == "Install grafana"
    assert [h.hold_key for h in view.holds] == [f"task:{seeded.unrequested_waiting}"]
    detail = await queries.task_detail(rpool, seeded["pending"])
    assert detail.waiting is not None and detail.waiting.priority == 2
    assert [e.title for e in detail.timeline if e.kind == "pause"] == [
        "paused: insufficient_capacity"
    ]


# --- filters ------------------------------------------------------------------------------


async def test_status_and_time_filters(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    executing = await queries.list_tasks(rpool, TaskFilter(statuses=[TaskStatus.EXECUTING]))
    assert ids(executing) == {seeded["stale"], seeded["busy"]}
    several = await queries.list_tasks(
        rpool, TaskFilter(statuses=[TaskStatus.PENDING, TaskStatus.REJECTED])
    )
    assert ids(several) == {seeded["pending"], seeded["rejected"]}
    window = await queries.list_tasks(
        rpool, TaskFilter(since=ago(days=4, hours=12), until=ago(days=2))
    )
    assert ids(window) == {seeded["kuma_restart"], seeded["dns_steps"], seeded["billing_app"]}
    completed_week = await queries.list_tasks(
        rpool, TaskFilter(statuses=[TaskStatus.COMPLETED], since=ago(days=7))
    )
    assert seeded["kuma_old"] not in ids(completed_week)
    assert len(completed_week.items) == 4
    everything = await queries.list_tasks(rpool, TaskFilter(limit=500))
    assert len(everything.items) == 14


async def test_service_any_and_all(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    any_of = await queries.list_tasks(rpool, TaskFilter(services=["dns", "billing"]))
    assert ids(any_of) == {
        seeded["dns_oom"],
        seeded["dns_steps"],
        seeded["kuma_dns_dep"],
        seeded["billing_app"],
    }
    all_of = await queries.list_tasks(
        rpool, TaskFilter(services=["kuma", "dns"], service_mode="all")
    )
    assert ids(all_of) == {seeded["kuma_dns_dep"]}
    none = await queries.list_tasks(rpool, TaskFilter(services=["nonexistent"]))
    assert none.items == []
    by_service_failed = await queries.by_service(
        rpool, "dns", TaskFilter(statuses=[TaskStatus.FAILED])
    )
    assert ids(by_service_failed) == {seeded["dns_oom"], seeded["kuma_dns_dep"]}
    with pytest.raises(InvalidArgument):
        await queries.by_service(rpool, "  ")


async def test_agent_type_and_cause(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    code = await queries.list_tasks(rpool, TaskFilter(agent_type=AgentType.CODE))
    assert ids(code) == {seeded["billing_app"]}
    dep = await queries.list_tasks(rpool, TaskFilter(error_cause=ErrorCause.DEPENDENCY))
    assert ids(dep) == {seeded["kuma_dns_dep"]}


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        # request text, plan step ("roll out") and step action ("redeploy") all count
        ("deploy_kuma", {"kuma_deploy", "kuma_rollout", "kuma_old"}),
        ("install_kuma", {"kuma_deploy", "kuma_rollout", "kuma_old"}),
        # only a step action says restart
        ("restart_kuma", {"kuma_restart"}),
        # "Bounce" in the request; "bounce coredns" only as a step action
        ("restart_dns", {"dns_oom", "dns_steps"}),
        ("update_dns", {"kuma_dns_dep"}),
        ("update_kuma", {"kuma_dns_dep"}),
        ("start_kuma", set()),  # "restart" is not "start"
        ("deploy_dns", set()),
        ("deploy_billing", {"billing_app"}),
        ("backup_kuma", {"kuma_deploy"}),  # a plan step and a step action
    ],
)
async def test_intent(rpool: asyncpg.Pool, seeded: Seeded, intent: str, expected: set[str]) -> None:
    page = await queries.list_tasks(rpool, TaskFilter(intent=intent))
    assert ids(page) == {seeded[name] for name in expected}


async def test_intent_combines_with_other_filters(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    week = await queries.list_tasks(rpool, TaskFilter(intent="deploy_kuma", since=ago(days=7)))
    assert ids(week) == {seeded["kuma_deploy"], seeded["kuma_rollout"]}
    bare_verb = await queries.list_tasks(
        rpool, TaskFilter(intent="deploy", statuses=[TaskStatus.FAILED])
    )
    assert ids(bare_verb) == {seeded["billing_app"]}
    with_service = await queries.list_tasks(
        rpool, TaskFilter(intent="restart_dns", services=["kuma", "dns"], service_mode="any")
    )
    assert ids(with_service) == {seeded["dns_oom"], seeded["dns_steps"]}


# --- orphans, stale, summary, operator actions ----------------------------------------------


async def test_orphans(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    found = await queries.orphans(rpool, older_than_s=600)
    by_task = {o.task_id: o for o in found}
    assert set(by_task) == {seeded.orphan_task, seeded["approved_waiting"]}
    assert by_task[seeded.orphan_task].kind == "no_task"
    assert by_task[seeded.orphan_task].missing == ["task.requested"]
    waiting = by_task[seeded["approved_waiting"]]
    assert (waiting.kind, waiting.event_type, waiting.task_status) == (
        "terminal_waiting",
        "task.completed",
        "approved",
    )
    assert waiting.missing == ["task.started"]
    everything = await queries.orphans(rpool, older_than_s=0.001)
    assert seeded.fresh_orphan_task in {o.task_id for o in everything}


async def test_stale(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    found = await queries.stale(rpool, stale_after_s=900)
    assert [s.task_id for s in found] == [seeded["stale"]]
    assert found[0].last_event_at == ago(hours=2)
    both = await queries.stale(rpool, stale_after_s=1)
    assert {s.task_id for s in both} == {seeded["stale"], seeded["busy"]}


async def test_summary(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    week = await queries.summary(rpool, TaskFilter(since=ago(days=7)))
    assert week.total == 13
    assert week.by_status == {
        "completed": 4,
        "failed": 4,
        "executing": 2,
        "approved": 1,
        "pending": 1,
        "rejected": 1,
    }
    assert week.failures_by_cause == {"resource": 2, "application": 1, "dependency": 1}
    top = {b.service: b.tasks for b in week.busiest_services}
    assert top["kuma"] == 4 and top["dns"] == 3
    assert week.busiest_services[0].service == "kuma"
    assert week.cost_usd == pytest.approx(0.0512)


async def test_operator_actions(rpool: asyncpg.Pool, seeded: Seeded) -> None:
    recent = await queries.operator_actions(rpool, since=ago(days=1))
    assert [(a.action, a.actor) for a in recent] == [("pause", "bob")]
    everything = await queries.operator_actions(rpool)
    assert [a.action for a in everything] == ["pause", "replay"]


# --- pagination -----------------------------------------------------------------------------


async def _insert_many(pool: asyncpg.Pool, times: list[datetime]) -> list[UUID]:
    rows = [(uuid4(), at) for at in times]
    await pool.executemany(
        """INSERT INTO tasks (task_id, status, request_text, created_at, updated_at)
           VALUES ($1, 'pending', 'generated', $2, $2)""",
        rows,
    )
    return [r[0] for r in rows]


async def test_pagination_walks_every_row_once(pool: asyncpg.Pool) -> None:
    base = NOW - timedelta(days=1)
    # 60 distinct times plus 30 rows sharing three times: the task id breaks the ties.
    times = [base + timedelta(seconds=i) for i in range(60)]
    times += [base + timedelta(seconds=s) for s in (10, 20, 30) for _ in range(10)]
    expected = set(await _insert_many(pool, times))
    seen: list[UUID] = []
    cursor = None
    pages = 0
    while True:
        page = await queries.list_tasks(pool, TaskFilter(limit=7, cursor=cursor))
        seen += [i.task_id for i in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 90
    assert set(seen) == expected
    assert pages == 13


async def test_pagination_stable_under_concurrent_inserts(pool: asyncpg.Pool) -> None:
    base = NOW - timedelta(days=1)
    original = set(await _insert_many(pool, [base + timedelta(seconds=i // 3) for i in range(150)]))
    stop = asyncio.Event()
    inserted: list[UUID] = []

    async def writer() -> None:
        step = 0
        while not stop.is_set():
            # Newer than every page, and in the middle of the range already paged.
            inserted.extend(
                await _insert_many(
                    pool, [datetime.now(UTC), base + timedelta(seconds=step % 50, microseconds=7)]
                )
            )
            step += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    seen: list[UUID] = []
    order: list[tuple[datetime, UUID]] = []
    cursor = None
    try:
        while True:
            page = await queries.list_tasks(
                pool, TaskFilter(limit=11, cursor=cursor, until=base + timedelta(days=1, hours=1))
            )
            seen += [i.task_id for i in page.items]
            order += [(i.created_at, i.task_id) for i in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            await asyncio.sleep(0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert inserted, "the writer never ran"
    assert len(seen) == len(set(seen)), "a row appeared on two pages"
    assert original <= set(seen), "a row that existed throughout was skipped"
    assert order == sorted(order, reverse=True)
