"""Recovery that acts, end to end through RabbitMQ and PostgreSQL with the service running:
an agent that comes back, one that dies mid-task (the re-dispatch is taken by another),
one that never answers (failed as agent_lost), and recovery by hand (CLI and API)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.queries import reads
from contracts import EventType, make_event
from tests.integration.test_api import TOKEN, api
from tests.support.processes import run_cli
from tests.support.traffic import burst, publish, running, wait_until

pytestmark = pytest.mark.usefixtures("topology")


class Agent:
    """Sends one task's events with the current time, as a live agent would."""

    def __init__(self, task_id: uuid.UUID, agent_id: str = "infra-01") -> None:
        self.task_id = task_id
        self.agent_id = agent_id

    def event(self, kind: EventType, data: dict[str, Any], source: str | None = None) -> Any:
        body = make_event(
            kind,
            data,
            source=source or f"agents/{self.agent_id}",
            subject=self.task_id,
            time=datetime.now(UTC),
        )
        return kind.value, body

    def begin(self) -> list[Any]:
        return [
            self.event(
                EventType.TASK_REQUESTED,
                {
                    "request_text": "deploy kuma",
                    "services": ["kuma"],
                    "plan": {
                        "steps": ["pull", "start"],
                        "estimated_duration_seconds": 60,
                        "complexity": "low",
                    },
                },
                "orchestrator",
            ),
            self.event(EventType.TASK_APPROVED, {"approved_by": "alice"}, "orchestrator"),
            self.started(),
            self.step(1, "pull"),
        ]

    def started(self) -> Any:
        return self.event(
            EventType.TASK_STARTED, {"agent_id": self.agent_id, "agent_type": "infra"}
        )

    def step(self, n: int, action: str) -> Any:
        return self.event(
            EventType.TASK_STEP,
            {"step_number": n, "agent_type": "infra", "action": action, "status": "completed"},
        )

    def completed(self) -> Any:
        return self.event(
            EventType.TASK_COMPLETED,
            {
                "services_touched": ["kuma"],
                "outcome": {"success": True, "output_summary": "ok", "last_lines": []},
                "actual_resources": {
                    "duration_seconds": 3,
                    "cpu_time_ms": 1,
                    "gpu_vram_mb_used": 0,
                    "peak_memory_mb": 1,
                    "agent_load_pct": 1,
                },
            },
        )


@pytest.fixture
async def sent(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings
) -> AsyncIterator[list[dict[str, Any]]]:
    """What taskledger sends on the dispatch exchange (recovery.#, dispatch.#), decoded."""
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    exchange = await channel.get_exchange(Names(settings.prefix).dispatch)
    for key in ("recovery.#", "dispatch.#"):
        await queue.bind(exchange, routing_key=key)
    seen: list[dict[str, Any]] = []

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(orjson.loads(message.body))
        await message.ack()

    await queue.consume(take)
    yield seen
    await queue.delete(if_unused=False, if_empty=False)
    await channel.close()


def fast(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "stale_after_s": 1.0,
            "recovery_timeout_s": 1.5,
            "recovery_max_attempts": 2,
            "timer_interval_s": 0.2,
        }
    )


async def steps_of(pool: asyncpg.Pool, task_id: uuid.UUID) -> list[tuple[int, str, str | None]]:
    rows = await pool.fetch(
        "SELECT attempt, action, trigger FROM task_recoveries WHERE task_id = $1 ORDER BY id",
        task_id,
    )
    return [(r["attempt"], r["action"], r["trigger"]) for r in rows]


async def test_agents_that_come_back_die_and_never_answer(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    sent: list[dict[str, Any]],
) -> None:
    settings = fast(settings)
    back, dies, lost = (Agent(uuid.uuid4()) for _ in range(3))
    async with running(settings, only=None):
        await publish(amqp, settings, [*back.begin(), *dies.begin(), *lost.begin()])

        async def asked(agent: Agent, attempt: int) -> bool:
            return (attempt, "requested", "timeout") in await steps_of(pool, agent.task_id)

        for agent in (back, dies, lost):
            await wait_until(lambda a=agent: asked(a, 1), timeout=20, what="recovery request")
        # the one that comes back answers with a step: resumed, then it finishes
        await publish(amqp, settings, [back.step(2, "start")])
        await wait_until(lambda: _has(pool, back.task_id, "resumed"), timeout=20, what="resumed")
        await publish(amqp, settings, [back.completed()])
        # the one that dies: its re-dispatch is taken by another agent
        await wait_until(
            lambda: _has(pool, dies.task_id, "redispatched"), timeout=20, what="redispatch"
        )
        other = Agent(dies.task_id, "infra-02")
        await publish(amqp, settings, [other.started(), other.step(1, "pull")])
        await wait_until(lambda: _has(pool, dies.task_id, "resumed"), timeout=20, what="resumed")
        await publish(amqp, settings, [other.completed()])
        # the one that never answers: re-dispatched, asked again, then failed as agent_lost

        async def lost_failed() -> bool:
            status = await pool.fetchval(
                "SELECT error_cause FROM tasks WHERE task_id = $1", lost.task_id
            )
            return bool(status == "agent_lost")

        await wait_until(lost_failed, timeout=30, what="agent_lost failure")
        await wait_until(
            lambda: _status(pool, back.task_id, dies.task_id), timeout=20, what="completions"
        )

    assert await steps_of(pool, back.task_id) == [(1, "requested", "timeout"), (1, "resumed", None)]
    assert await steps_of(pool, dies.task_id) == [
        (1, "requested", "timeout"),
        (2, "redispatched", "timeout"),
        (2, "resumed", None),
    ]
    assert await steps_of(pool, lost.task_id) == [
        (1, "requested", "timeout"),
        (2, "redispatched", "timeout"),
        (2, "requested", "timeout"),
        (2, "failed", "timeout"),
    ]
    row = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", dies.task_id)
    assert (row["status"], row["agent_id"]) == ("completed", "infra-02")
    row = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", lost.task_id)
    assert (row["status"], row["error_type"], row["failed_step"]) == ("failed", "AgentLost", 1)

    # what went out: requests carry the task, the attempt and the last step
    requests = [m for m in sent if m["type"] == "task.recovery_requested"]
    first = next(m for m in requests if m["data"]["task_id"] == str(lost.task_id))
    assert first["data"]["attempt"] == 1
    assert first["data"]["last_step"]["step_number"] == 1
    assert first["data"]["last_step"]["action"] == "pull"
    assert {m["data"]["attempt"] for m in requests if m["subject"] == str(lost.task_id)} == {1, 2}
    again = [m for m in sent if m["type"] == "dispatch.assigned"]
    assert {(m["data"]["task_id"], m["data"]["trigger"]) for m in again} == {
        (str(dies.task_id), "timeout"),
        (str(lost.task_id), "timeout"),
    }

    # attempts on the timeline
    detail = await reads.task_detail(pool, lost.task_id)
    titles = [e.title for e in detail.timeline if e.kind == "recovery"]
    assert titles == [
        "recovery requested (timeout), attempt 1",
        "recovery redispatched (timeout), attempt 2",
        "recovery requested (timeout), attempt 2",
        "recovery failed (timeout), attempt 2",
    ]


async def _has(pool: asyncpg.Pool, task_id: uuid.UUID, action: str) -> bool:
    return any(a == action for _, a, _ in await steps_of(pool, task_id))


async def _status(pool: asyncpg.Pool, *task_ids: uuid.UUID) -> bool:
    statuses = await pool.fetch("SELECT status FROM tasks WHERE task_id = ANY($1)", task_ids)
    return [r["status"] for r in statuses] == ["completed"] * len(task_ids)


async def test_recover_by_hand_cli_and_api(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    agent, other = Agent(uuid.uuid4()), Agent(uuid.uuid4())
    await publish(amqp, settings, [*agent.begin(), *other.begin()])
    await burst(settings)

    code, out, err = await run_cli(settings, "recover", str(agent.task_id), "--redispatch")
    assert code == 0, err
    assert "redispatched (manual), attempt 2" in out
    code, _, err = await run_cli(settings, "recover", str(agent.task_id), "--redispatch", "--fail")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, _, err = await run_cli(settings, "recover", "not-a-uuid")
    assert code == 2 and "not a UUID" in err
    code, _, err = await run_cli(settings, "recover", str(uuid.uuid4()))
    assert code != 0 and "no task" in err and "Traceback" not in err

    async with api(settings) as client:
        denied = await client.post(
            f"/api/v1/tasks/{other.task_id}/recover",
            json={"action": "fail"},
            headers={"Authorization": "Bearer nope"},
        )
        assert denied.status_code == 403
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await client.post(
            f"/api/v1/tasks/{other.task_id}/recover", json={"action": "fail"}, headers=auth
        )
        assert response.status_code == 202, response.text
        assert response.json()["action"] == "failed"
        again = await client.post(f"/api/v1/tasks/{other.task_id}/recover", json={}, headers=auth)
        assert again.status_code == 422, again.text

    assert await steps_of(pool, agent.task_id) == [(2, "redispatched", "manual")]
    assert await steps_of(pool, other.task_id) == [(1, "failed", "manual")]
    actions = await pool.fetch(
        "SELECT actor, params FROM operator_actions WHERE action = 'recover'"
    )
    assert len(actions) == 2
    queued = await pool.fetch("SELECT event_type FROM outbox ORDER BY id")
    assert [r["event_type"] for r in queued][-2:] == ["dispatch.assigned", "task.failed"]

    # the relay publishes the failure; the audit side records it
    async with running(settings, only=None):

        async def failed() -> bool:
            cause = await pool.fetchval(
                "SELECT error_cause FROM tasks WHERE task_id = $1", other.task_id
            )
            return bool(cause == "agent_lost")

        await wait_until(failed, timeout=20, what="manual agent_lost failure")
    message = await pool.fetchval(
        "SELECT error_message FROM tasks WHERE task_id = $1", other.task_id
    )
    assert "failed by an operator" in message
