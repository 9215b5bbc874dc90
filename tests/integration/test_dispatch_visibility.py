"""What happened to a dispatch request, seen by the orchestrator (issue 14, item 6).

Requests and reports go through RabbitMQ and a burst run of the service (both handlers);
the decisions are then read back through the query layer, the CLI (`taskledger audit
timeline`, `taskledger audit dispatches`) and the HTTP API (`/api/v1/tasks/{id}`,
`/api/v1/dispatches`), against real PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import pytest

from consumer.admission.handler import CapacityHandler
from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.http.app import create_app
from consumer.queries import reads
from consumer.queries.dispatches import dispatches
from tests.support.processes import run_cli
from tests.support.traffic import burst, lifecycle, publish
from tests.support.traffic import capacity_report as report
from tests.support.traffic import dispatch_request as request

pytestmark = pytest.mark.asyncio


@dataclass
class Story:
    """Three requests: admitted at once, paused then released, paused then cancelled."""

    admitted: uuid.UUID
    released: uuid.UUID
    cancelled: uuid.UUID


@pytest.fixture
async def story(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: aio_pika.abc.AbstractChannel,
) -> Story:
    """infra-01 has room for one 600 MB request: A goes at once, B and C wait; C's task is
    rejected (cancelled by the timer); infra-01 reports again and B is released to it."""
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    agents = await topology.declare_queue(exclusive=True)  # what the agent fleet binds
    await agents.bind(Names(settings.prefix).dispatch, routing_key="dispatch.#")
    await publish(amqp, settings, [report(), request(a), request(b), request(c, priority=4)])
    await burst(settings, only=None)
    await publish(amqp, settings, lifecycle(c, terminal="rejected"))
    await burst(settings, only=None)
    await CapacityHandler(settings).cancel_finished(pool)  # (or the burst timer did)
    await publish(amqp, settings, [report()])
    await burst(settings, only=None)
    sent = []
    while (message := await agents.get(no_ack=True, fail=False)) is not None:
        sent.append(orjson.loads(message.body)["data"])
    assert [(d["task_id"], d["trigger"]) for d in sent] == [
        (str(a), "immediate"),
        (str(b), "capacity"),
    ]
    return Story(admitted=a, released=b, cancelled=c)


def pauses(detail: Any) -> list[tuple[str, str | None, str | None, str | None]]:
    """(action, reason, trigger, agent) of the pause lines of a timeline."""
    return [
        (e.pause.action, e.pause.reason, e.pause.trigger, e.pause.agent_id)
        for e in detail.timeline
        if e.pause is not None
    ]


async def test_every_decision_is_on_the_timeline(pool: asyncpg.Pool, story: Story) -> None:
    admitted = await reads.task_detail(pool, story.admitted)
    assert admitted.task is None  # dispatch only: no task.requested, still a timeline
    assert pauses(admitted) == [("released", None, "immediate", "infra-01")]
    assert [e.title for e in admitted.timeline] == [
        "dispatch.requested from orchestrator",
        "admitted (immediate), agent infra-01",
    ]
    released = await reads.task_detail(pool, story.released)
    assert pauses(released) == [
        ("paused", "insufficient_capacity", None, None),
        ("released", "insufficient_capacity", "capacity", "infra-01"),
    ]
    cancelled = await reads.task_detail(pool, story.cancelled)
    assert cancelled.task is not None and cancelled.task.status == "rejected"
    assert pauses(cancelled) == [
        ("paused", "insufficient_capacity", None, None),
        ("released", "insufficient_capacity", "cancelled", None),
    ]
    assert any(e.title.startswith("cancelled") for e in cancelled.timeline)


async def test_dispatches_lists_each_request_with_its_fate(
    pool: asyncpg.Pool, story: Story
) -> None:
    page = await dispatches(pool)
    by_task = {d.task_id: d for d in page.items}
    assert set(by_task) == {story.admitted, story.released, story.cancelled}
    assert (by_task[story.admitted].status, by_task[story.admitted].trigger) == (
        "assigned",
        "immediate",
    )
    assert by_task[story.admitted].agent_id == "infra-01"
    assert by_task[story.admitted].message_id is not None
    b = by_task[story.released]
    assert (b.status, b.trigger, b.agent_id, b.reason) == (
        "assigned",
        "capacity",
        "infra-01",
        "insufficient_capacity",
    )
    assert b.paused_at is not None and b.waited_s is not None
    assert (by_task[story.cancelled].status, by_task[story.cancelled].priority) == (
        "cancelled",
        4,
    )
    assert [d.task_id for d in (await dispatches(pool, status="cancelled")).items] == [
        story.cancelled
    ]
    assert {d.task_id for d in (await dispatches(pool, agent="infra-01")).items} == {
        story.admitted,
        story.released,
    }
    assert (await dispatches(pool, status="waiting")).items == []
    first = await dispatches(pool, limit=2)
    assert len(first.items) == 2 and first.next_cursor
    rest = await dispatches(pool, limit=2, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert {d.task_id for d in first.items + rest.items} == set(by_task)


async def test_a_waiting_request_is_listed_as_waiting(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    topology: aio_pika.abc.AbstractChannel,
) -> None:
    task = uuid.uuid4()
    await publish(amqp, settings, [request(task)])  # no agent reported: it waits
    await burst(settings, only=None)
    [entry] = (await dispatches(pool, status="waiting")).items
    assert (entry.task_id, entry.reason, entry.agent_id) == (
        task,
        "insufficient_capacity",
        None,
    )
    detail = await reads.task_detail(pool, task)
    assert detail.waiting is not None
    assert [e.title for e in detail.timeline][-1] == "paused: insufficient_capacity"


async def test_cli_timeline_and_dispatches(settings: Settings, story: Story) -> None:
    code, out, err = await run_cli(
        settings, "audit", "timeline", str(story.admitted), COLUMNS="200"
    )
    assert code == 0, err
    assert "no task.requested recorded yet" in out
    assert "admitted (immediate)" in out and "infra-01" in out

    code, out, err = await run_cli(
        settings, "audit", "timeline", str(story.released), COLUMNS="200"
    )
    assert code == 0, err
    assert "released (capacity)" in out

    code, out, err = await run_cli(
        settings, "audit", "dispatches", "--status", "assigned", "--since", "1h", "--json"
    )
    assert code == 0, err
    listed = orjson.loads(out)["items"]
    assert {(d["task_id"], d["trigger"], d["agent_id"]) for d in listed} == {
        (str(story.admitted), "immediate", "infra-01"),
        (str(story.released), "capacity", "infra-01"),
    }
    code, out, err = await run_cli(
        settings, "audit", "dispatches", "--agent", "infra-01", COLUMNS="200"
    )
    assert code == 0, err
    assert str(story.released) in out and str(story.cancelled) not in out

    code, _, err = await run_cli(settings, "audit", "dispatches", "--agent", " ")
    assert code == 2 and "agent" in err and "Traceback" not in err
    code, _, err = await run_cli(settings, "audit", "timeline", str(uuid.uuid4()))
    assert code == 4, err


@asynccontextmanager
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app (lifespan run, so the pool exists)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskledger.test") as c:
            yield c


async def test_api_task_and_dispatches(settings: Settings, story: Story) -> None:
    async with api(settings) as client:
        r = await client.get(f"/api/v1/tasks/{story.admitted}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["task"] is None
        [decision] = [e["pause"] for e in body["timeline"] if e["pause"] is not None]
        assert (decision["trigger"], decision["agent_id"]) == ("immediate", "infra-01")

        r = await client.get("/api/v1/dispatches", params={"status": "cancelled"})
        assert r.status_code == 200, r.text
        assert [d["task_id"] for d in r.json()["items"]] == [str(story.cancelled)]

        r = await client.get("/api/v1/dispatches", params={"agent": "infra-01", "limit": 1})
        first = r.json()
        assert r.status_code == 200 and len(first["items"]) == 1 and first["next_cursor"]
        r = await client.get(
            "/api/v1/dispatches",
            params={"agent": "infra-01", "limit": 1, "cursor": first["next_cursor"]},
        )
        second = r.json()
        assert second["next_cursor"] is None
        assert {first["items"][0]["task_id"], second["items"][0]["task_id"]} == {
            str(story.admitted),
            str(story.released),
        }

        r = await client.get("/api/v1/dispatches", params={"since": "1h", "status": "waiting"})
        assert r.status_code == 200 and r.json()["items"] == []
        for bad in ({"status": "lost"}, {"agent": " "}, {"cursor": "nope"}, {"since": "x"}):
            r = await client.get("/api/v1/dispatches", params=bad)
            assert r.status_code == 422, (bad, r.text)
        r = await client.get(f"/api/v1/tasks/{uuid.uuid4()}")
        assert r.status_code == 404
