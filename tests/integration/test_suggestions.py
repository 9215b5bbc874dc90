"""Suggestions after the fact, end to end through RabbitMQ, the audit consumer and
PostgreSQL: ``task.suggested`` appends, ``suggestion.resolved`` resolves, a finished task
stays frozen, and the API, the CLI and the filter show them."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from consumer.queries import reads
from consumer.queries.filters import TaskFilter
from contracts import EventType, make_event
from tests.integration.test_api import api
from tests.support.processes import run_cli
from tests.support.traffic import BASE_TIME, Message, burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")

LATER = BASE_TIME + timedelta(days=1)


def suggested(task_id: uuid.UUID, *items: tuple[str, str], at: int = 0) -> Message:
    body = make_event(
        EventType.TASK_SUGGESTED,
        {"suggestions": [{"suggestion": s, "reason": r} for s, r in items]},
        source="agents/postmortem",
        subject=task_id,
        id=uuid.uuid5(task_id, f"suggested:{at}"),
        time=LATER + timedelta(minutes=at),
    )
    return EventType.TASK_SUGGESTED.value, body


def resolved(task_id: uuid.UUID, suggestion_id: uuid.UUID, resolution: str, at: int) -> Message:
    body = make_event(
        EventType.SUGGESTION_RESOLVED,
        {"suggestion_id": str(suggestion_id), "resolution": resolution, "resolved_by": "alice"},
        source="ops/alice",
        subject=task_id,
        id=uuid.uuid5(task_id, f"resolved:{at}"),
        time=LATER + timedelta(minutes=at),
    )
    return EventType.SUGGESTION_RESOLVED.value, body


def suggestion_id(message: Message, n: int) -> uuid.UUID:
    """The id the contract gives the n-th suggestion of an event: md5('<event id>:<n>')."""
    event_id = json.loads(message[1])["id"]
    return uuid.UUID(hashlib.md5(f"{event_id}:{n}".encode(), usedforsecurity=False).hexdigest())


async def test_suggestions_after_the_fact(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    done, failed, late, plain = (uuid.uuid4() for _ in range(4))
    first = suggested(
        done,
        ("pin the image tag", "latest pulled a broken build"),
        ("add a health check", "the failure was silent"),
    )
    on_failed = suggested(failed, ("raise the memory limit", "OOMKilled at step 3"), at=1)
    early = suggested(late, ("split the task", "too many services at once"), at=2)
    await publish(
        amqp,
        settings,
        [
            *lifecycle(done),
            *lifecycle(failed, terminal="failed"),
            *lifecycle(plain),
            first,
            on_failed,
            early,
        ],
    )
    await burst(settings)
    frozen = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", done)

    # resolutions: applied, then rejected later (the latest wins); the task arrives late
    applied = resolved(done, suggestion_id(first, 1), "applied", 10)
    changed = resolved(done, suggestion_id(first, 2), "applied", 11)
    rejected = resolved(done, suggestion_id(first, 2), "rejected", 12)
    # a resolution naming another task's suggestion never applies
    stray = resolved(failed, suggestion_id(first, 1), "applied", 13)
    await publish(amqp, settings, [applied, rejected, changed, stray, *lifecycle(late, steps=1)])
    await burst(settings)

    # the finished task is untouched; the suggestions live beside it
    assert dict(await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", done)) == dict(frozen)
    detail = await reads.task_detail(pool, done)
    shown = [
        (s.suggestion, s.status, s.resolved_by, s.resolutions) for s in detail.task.suggestions
    ]
    assert shown == [
        ("pin the image tag", "applied", "alice", 1),
        ("add a health check", "rejected", "alice", 2),
    ]
    first_one = detail.task.suggestions[0]
    assert (first_one.reason, first_one.source) == (
        "latest pulled a broken build",
        "agents/postmortem",
    )
    assert first_one.created_at == LATER
    titles = [e.title for e in detail.timeline]
    assert any("pin the image tag; add a health check" in t for t in titles), titles
    assert sum("suggestion.resolved" in t for t in titles) == 3

    # the suggestion that came before its task applied once the task existed
    late_detail = await reads.task_detail(pool, late)
    assert [s.suggestion for s in late_detail.task.suggestions] == ["split the task"]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM suggestion_resolutions WHERE task_id = $1", failed
        )
        == 0
    )

    # the filter: reads, API, CLI
    with_any = await reads.list_tasks(pool, TaskFilter(has_suggestions=True))
    assert {t.task_id for t in with_any.items} == {done, failed, late}
    without = await reads.list_tasks(pool, TaskFilter(has_suggestions=False))
    assert {t.task_id for t in without.items} == {plain}
    async with api(settings) as client:
        page = await client.get(
            "/api/v1/audit/tasks", params={"has_suggestions": "true", "status": "failed"}
        )
        assert [i["task_id"] for i in page.json()["items"]] == [str(failed)]
        body = (await client.get(f"/api/v1/tasks/{done}")).json()
        assert [s["status"] for s in body["task"]["suggestions"]] == ["applied", "rejected"]
    code, out, err = await run_cli(settings, "audit", "tasks", "--no-suggestions", "--json")
    assert code == 0, err
    assert [i["task_id"] for i in json.loads(out)["items"]] == [str(plain)]
    code, out, err = await run_cli(
        settings, "audit", "timeline", str(done), COLUMNS="240", NO_COLOR="1"
    )
    assert code == 0, err
    assert "pin the image tag" in out and "rejected by alice" in out, out

    # append-only
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await pool.execute("UPDATE task_suggestions SET reason = 'x' WHERE task_id = $1", done)


async def test_bad_suggestions_are_dead_lettered_not_stored(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task = uuid.uuid4()
    body = json.loads(suggested(task, ("x", "y"))[1])
    body["data"] = {"suggestions": []}
    await publish(amqp, settings, [*lifecycle(task), ("task.suggested", json.dumps(body).encode())])
    await burst(settings)
    assert await pool.fetchval("SELECT count(*) FROM task_suggestions") == 0
    assert await pool.fetchval("SELECT count(*) FROM event_ledger WHERE task_id = $1", task) == 7
