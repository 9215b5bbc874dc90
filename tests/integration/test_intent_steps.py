"""The intent filter's step actions (017): ``task_step_actions`` through the real consumer.

Task events with steps are published and the audit service runs in burst mode; the
intent filter must then find a task by a step action alone, keep one copy of a
re-delivered step, find a step that arrived after the task finished, never match a
multi-word synonym across two actions, and read no ``execution_logs`` partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from consumer import queries
from consumer.core.settings import Settings
from consumer.queries import TaskFilter
from consumer.queries.reads import page_args, statement
from consumer.store import db
from contracts import EventType, make_event
from tests.support.ledger import verify_db
from tests.support.traffic import BASE_TIME, Message, burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


def step(task_id: uuid.UUID, number: int, action: str, *, late: bool = False) -> Message:
    """A ``task.step`` event of ``task_id`` with a fixed id (re-publishing it re-delivers it)."""
    at = BASE_TIME + timedelta(minutes=(30 if late else 10) + number)
    event_id = uuid.uuid5(task_id, f"step:{number}:{action}")
    data = {"step_number": number, "agent_type": "infra", "action": action,
            "status": "completed", "duration_ms": 10}  # fmt: skip
    body = make_event(EventType.TASK_STEP, data, source="agents/infra-01", subject=task_id,
                      id=event_id, time=at)  # fmt: skip
    return (EventType.TASK_STEP.value, body)


def task_with_steps(task_id: uuid.UUID, actions: Sequence[str]) -> list[Message]:
    """A completed kuma task ("deploy kuma", plan ["deploy", "verify"]) with these steps
    between its start and its completion."""
    events = lifecycle(task_id, steps=0, services=("kuma",))
    steps = [step(task_id, n, a) for n, a in enumerate(actions, start=1)]
    return [*events[:-1], *steps, events[-1]]


async def intent_ids(pool: asyncpg.Pool, intent: str) -> set[uuid.UUID]:
    """The tasks the intent filter returns (one page is all of them here)."""
    page = await queries.list_tasks(pool, TaskFilter(intent=intent, limit=500))
    return {item.task_id for item in page.items}


async def actions(pool: asyncpg.Pool, task_id: uuid.UUID) -> str | None:
    """The stored step actions of a task."""
    value = await pool.fetchval("SELECT actions FROM task_step_actions WHERE task_id = $1", task_id)
    return None if value is None else str(value)


async def test_a_task_matches_an_intent_by_a_step_action_alone(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    bounced, other = uuid.uuid4(), uuid.uuid4()
    await publish(amqp, settings, task_with_steps(bounced, ["pull image", "bounce kuma container"])
                  + task_with_steps(other, ["pull image", "check kuma health"]))  # fmt: skip
    await burst(settings)

    # request "deploy kuma" and plan ["deploy", "verify"] say nothing of a restart
    assert await intent_ids(pool, "restart_kuma") == {bounced}
    assert await intent_ids(pool, "deploy_kuma") == {bounced, other}
    assert await actions(pool, bounced) == "pull image\nbounce kuma container"
    assert await actions(pool, other) == "pull image\ncheck kuma health"


async def test_a_redelivered_step_is_kept_once_and_a_late_step_is_searchable(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task_id = uuid.uuid4()
    await publish(amqp, settings, task_with_steps(task_id, ["pull image", "check kuma health"]))
    await burst(settings)
    before = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id)
    assert before["status"] == "completed"
    assert await intent_ids(pool, "restart_kuma") == set()

    # the second step again (a re-delivery: same event id), and a step after completion
    await publish(amqp, settings, [step(task_id, 2, "check kuma health"),
                                   step(task_id, 3, "reboot kuma host", late=True)])  # fmt: skip
    await burst(settings)

    assert await actions(pool, task_id) == "pull image\ncheck kuma health\nreboot kuma host"
    steps = await pool.fetch(
        "SELECT step_number FROM execution_logs WHERE task_id = $1 ORDER BY step_number", task_id
    )
    assert [r["step_number"] for r in steps] == [1, 2, 3]
    assert await intent_ids(pool, "restart_kuma") == {task_id}
    # the finished task's row is untouched (its trigger would refuse a change anyway)
    assert await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task_id) == before


async def test_a_multi_word_synonym_never_spans_two_actions(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    split, whole = uuid.uuid4(), uuid.uuid4()
    # "roll back" is a synonym of rollback ("roll[ _-]?back"): "roll" ending one action and
    # "back" starting the next are joined by a newline, which the pattern does not cross
    await publish(amqp, settings, task_with_steps(split, ["roll", "back kuma config up"])
                  + task_with_steps(whole, ["roll back kuma"]))  # fmt: skip
    await burst(settings)

    assert await actions(pool, split) == "roll\nback kuma config up"
    assert await intent_ids(pool, "rollback_kuma") == {whole}


async def test_the_intent_query_reads_no_execution_logs(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    await publish(amqp, settings, task_with_steps(uuid.uuid4(), ["bounce kuma container"]))
    await burst(settings)
    f = TaskFilter(intent="restart_kuma", since=BASE_TIME - timedelta(days=7))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(db.q("read_custom_plans"))  # as the queries run
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + statement("audit_tasks"), *page_args(f)
        )
    # the pool decodes json itself; a plain connection would return the text
    relations = set(_relations(orjson.loads(plan) if isinstance(plan, str) else plan))
    assert "task_step_actions" in relations, relations
    assert not {r for r in relations if r.startswith("execution_logs")}, relations


def _relations(node: Any) -> list[str]:
    """Every relation an EXPLAIN (FORMAT JSON) plan names."""
    found: list[str] = []
    if isinstance(node, dict):
        if "Relation Name" in node:
            found.append(node["Relation Name"])
        for value in node.values():
            found.extend(_relations(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_relations(value))
    return found


async def test_verify_replays_steps_without_touching_the_stored_actions(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    """verify re-projects the steps into a scratch copy of execution_logs (no trigger):
    the stored actions are neither appended to nor reported."""
    task_id = uuid.uuid4()
    await publish(amqp, settings, task_with_steps(task_id, ["pull image", "bounce kuma"]))
    await burst(settings)
    report = await verify_db(settings)
    assert report.ok, report.findings
    assert await actions(pool, task_id) == "pull image\nbounce kuma"
