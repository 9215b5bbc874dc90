"""Pause and resume from the console, in Chromium, with the real consumer: the operator
holds all dispatch; dispatch requests wait on the pause-queue page (reason manual_pause);
resuming from the page lets them leave, and agents receive them on the wire.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection

from consumer.broker import Names
from consumer.core.settings import Settings
from contracts import EventType, make_event
from tests.e2e.browser import Browser
from tests.e2e.conftest import TOKEN
from tests.support.processes import Service
from tests.support.traffic import publish, wait_until


def dispatch_request(task: uuid.UUID, priority: int) -> tuple[str, bytes]:
    data = {
        "work_plan": {"task": str(task)},
        "required": {"gpu_vram_mb": 0, "cpu_cores": 0.5, "memory_mb": 64},
        "agent_type": "infra",
        "priority": priority,
    }
    body = make_event(EventType.DISPATCH_REQUESTED, data, source="orchestrator", subject=task)
    return "dispatch.requested", body


def capacity_report(agent_id: str) -> tuple[str, bytes]:
    data = {
        "agent_id": agent_id,
        "agent_type": "infra",
        "free": {"gpu_vram_mb": 0, "cpu_cores": 16.0, "memory_mb": 65536},
        "load_pct": 10.0,
        "accepting": True,
    }
    body = make_event(EventType.CAPACITY_REPORTED, data, source=f"agents/{agent_id}")
    return "capacity.reported", body


def waiting(browser: Browser) -> dict[str, str]:
    """Task id -> reason of every row of the pause-queue page."""
    return {
        str(row.get_attribute("data-task-id")): browser.text("pause-reason", within=row)
        for row in browser.testids("pause-row")
    }


async def test_pause_all_then_resume_from_the_page(
    settings: Settings,
    topology: AbstractChannel,
    amqp: AbstractConnection,
    pool: asyncpg.Pool,
    consumer: Service,
    console: str,
    browser: Browser,
) -> None:
    agents = await topology.declare_queue(exclusive=True)  # what an agent fleet binds
    await agents.bind(Names(settings.prefix).dispatch, routing_key="dispatch.#")
    await publish(amqp, settings, [capacity_report("infra-01")])

    async def reported() -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM agent_capacity"))

    await wait_until(reported, what="the agent's capacity report")

    browser.login(TOKEN, "/ui/pause-queue")
    browser.check("pause queue", page="pause-queue")
    browser.click("pause-hold-all", page="confirm")
    browser.fill("confirm-reason", "e2e: database maintenance")
    browser.click("confirm-submit", page="result")
    browser.reload_until(
        "/ui/pause-queue",
        lambda: [r for r in browser.testids("hold-row") if r.get_attribute("data-scope") == "all"],
        "the hold on the page",
        page="pause-queue",
    )

    tasks = [uuid.uuid4() for _ in range(3)]
    await publish(amqp, settings, [dispatch_request(t, 1 + i) for i, t in enumerate(tasks)])
    shown = browser.reload_until(
        "/ui/pause-queue",
        lambda: (w := waiting(browser)) and len(w) == 3 and w,
        "three dispatches waiting",
        page="pause-queue",
    )
    assert set(shown) == {str(t) for t in tasks}
    assert all("manual_pause" in reason for reason in shown.values()), shown
    assert browser.text("pause-count").startswith("3")
    browser.shoot("pause-queue-held")
    assert await agents.get(fail=False) is None  # held: nothing sent to the agents

    browser.click("pause-resume-all", page="confirm")
    browser.click("confirm-submit", page="result")
    browser.reload_until(
        "/ui/pause-queue",
        lambda: not browser.testids("pause-row") and not browser.testids("hold-row"),
        "the queue to empty and the hold to go",
        page="pause-queue",
    )

    sent: set[uuid.UUID] = set()

    async def all_dispatched() -> bool:
        while (message := await agents.get(no_ack=True, fail=False)) is not None:
            sent.add(uuid.UUID(orjson.loads(message.body)["data"]["task_id"]))
        return sent == set(tasks)

    await wait_until(all_dispatched, what="dispatch.assigned for the three tasks")
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM operator_actions")]
    assert actions == ["pause", "resume"]
