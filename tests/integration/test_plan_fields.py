"""The plan's fields end to end through RabbitMQ, the audit consumer and PostgreSQL:
the plan's SQL on projected rows, project_id, intent on open tasks, failure capture."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from consumer.queries import reads
from consumer.queries.filters import TaskFilter
from contracts import EventType, make_event
from tests.integration.test_api import api
from tests.support.processes import run_cli
from tests.support.traffic import BASE_TIME, Message, burst, publish

pytestmark = pytest.mark.usefixtures("topology")

PROJECT = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")
OTHER = uuid.UUID("0b7e4a52-93c1-4f0e-a6d2-5c8b1e9f3a74")
TRACE = 'Traceback (most recent call last):\n  File "deploy.py", line 3\nMemoryError'


class Task:
    """One task's events with fixed ids and increasing times."""

    def __init__(self, request: str, *, project: uuid.UUID | None = PROJECT) -> None:
        self.id = uuid.uuid4()
        self.t = BASE_TIME
        self.out: list[Message] = []
        self.project = project
        self.request = request

    def emit(self, kind: EventType, data: dict[str, Any], source: str = "agents/infra-01") -> None:
        self.t += timedelta(seconds=1)
        event_id = uuid.uuid5(self.id, f"{kind.value}:{len(self.out)}")
        body = make_event(kind, data, source=source, subject=self.id, id=event_id, time=self.t)
        self.out.append((kind.value, body))

    def requested(self, services: list[str] | None, steps: list[str]) -> Task:
        data: dict[str, Any] = {
            "request_text": self.request,
            "services": services,
            "plan": {"steps": steps, "estimated_duration_seconds": 60, "complexity": "low"},
            "estimated_resources": {"duration_seconds": 60, "memory_mb": 256},
        }
        if self.project is not None:
            data["project_id"] = str(self.project)
        self.emit(EventType.TASK_REQUESTED, data, "orchestrator")
        return self

    def started(self) -> Task:
        self.emit(EventType.TASK_APPROVED, {"approved_by": "alice"}, "orchestrator")
        self.emit(EventType.TASK_STARTED, {"agent_id": "infra-01", "agent_type": "infra"})
        return self

    def step(self, n: int, action: str, status: str = "completed") -> Task:
        self.emit(
            EventType.TASK_STEP,
            {
                "step_number": n,
                "agent_type": "infra",
                "action": action,
                "status": status,
                "duration_ms": 100 * n,
            },
        )
        return self

    def finished(self, touched: list[str], *, failed: bool = False) -> Task:
        resources = {
            "duration_seconds": 42,
            "cpu_time_ms": 900,
            "gpu_vram_mb_used": 512,
            "peak_memory_mb": 480,
            "agent_load_pct": 91.5,
        }
        ai = [
            {"provider": "anthropic", "model": "claude", "token_count": 10, "cost_usd": 0.25},
            {"provider": "openai", "model": "gpt", "token_count": 5, "cost_usd": 0.5},
        ]
        if not failed:
            self.emit(
                EventType.TASK_COMPLETED,
                {
                    "services_touched": touched,
                    "actual_resources": resources,
                    "external_ai_used": ai,
                    "outcome": {"success": True, "output_summary": "done", "last_lines": ["ok"]},
                },
            )
            return self
        self.emit(
            EventType.TASK_FAILED,
            {
                "services_touched": touched,
                "actual_resources": resources,
                "failed_step": 2,
                "resource_state": {"memory_mb_free": 12, "swap_used_pct": 97},
                "outcome": {
                    "success": False,
                    "error_type": "OOMKilled",
                    "error_cause": "resource",
                    "error_message": "kuma: out of memory",
                    "stack_trace": TRACE,
                    "last_lines": ["killed"],
                },
            },
        )
        return self


async def test_plan_sql_project_and_intent_on_projected_tasks(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    pending = Task("Deploy uptime kuma").requested(["kuma"], ["pull image", "start container"])
    # no services requested: the plan step names the service
    planned = Task("Install the monitoring stack", project=None).requested(
        None, ["install kuma", "verify"]
    )
    executing = Task("Roll out kuma 2").requested(["kuma"], ["deploy"]).started().step(1, "pull")
    done = (
        Task("Deploy kuma", project=OTHER)
        .requested(["kuma"], ["deploy"])
        .started()
        .step(1, "deploy")
        .finished(["kuma"])
    )
    unrelated = Task("Deploy dns").requested(["dns"], ["deploy dns"])
    finished_elsewhere = (
        Task("Deploy kuma mirror")
        .requested(["kuma"], ["deploy kuma"])
        .started()
        .step(1, "deploy")
        .finished(["dns"])
    )
    restart = Task("Restart kuma").requested(["kuma"], ["restart kuma"])
    tasks = [pending, planned, executing, done, unrelated, finished_elsewhere, restart]
    await publish(amqp, settings, [m for t in tasks for m in t.out])
    await burst(settings)

    # 3. project_id is a UUID column, filterable in the reads, the API and the CLI
    assert await pool.fetchval("SELECT project_id FROM tasks WHERE task_id = $1", done.id) == OTHER
    ours = await reads.list_tasks(pool, TaskFilter(project_id=PROJECT))
    assert {t.task_id for t in ours.items} == {t.id for t in tasks if t.project == PROJECT}
    # 4. intent: pending (services requested), pending (plan step), executing, completed
    found = await reads.list_tasks(pool, TaskFilter(intent="deploy_kuma"))
    assert {t.task_id for t in found.items} == {pending.id, planned.id, executing.id, done.id}
    both = await reads.list_tasks(pool, TaskFilter(intent="deploy_kuma", project_id=PROJECT))
    assert {t.task_id for t in both.items} == {pending.id, executing.id}

    async with api(settings) as client:
        response = await client.get(
            "/api/v1/audit/tasks",
            params={"intent": "deploy_kuma", "project_id": str(PROJECT), "status": "executing"},
        )
        assert response.status_code == 200, response.text
        assert [i["task_id"] for i in response.json()["items"]] == [str(executing.id)]
        bad = await client.get("/api/v1/audit/tasks", params={"project_id": "homelab"})
        assert bad.status_code in (400, 422), bad.text

    code, out, err = await run_cli(settings, "audit", "tasks", "--project", str(OTHER), "--json")
    assert code == 0, err
    assert [i["task_id"] for i in json.loads(out)["items"]] == [str(done.id)]
    code, out, err = await run_cli(settings, "audit", "tasks", "--project", "homelab")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--project" in err, err

    # 2. the plan's queries 3 and 4 on the projected rows
    row = await pool.fetchrow(
        "SELECT (actual_resources->>'duration_seconds')::int AS secs,"
        " (actual_resources->>'gpu_vram_mb_used')::int AS gpu,"
        " external_ai_used->>'model' AS model,"
        " (external_ai_used->>'cost_usd')::numeric AS cost FROM tasks WHERE task_id = $1",
        done.id,
    )
    assert (row["secs"], row["gpu"], row["model"], row["cost"]) == (
        42,
        512,
        "claude, gpt",
        Decimal("0.75"),
    )
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE external_ai_used IS NOT NULL") == 2
    step = await pool.fetchrow(
        "SELECT log_id, timestamp FROM execution_logs WHERE task_id = $1", executing.id
    )
    assert step["log_id"] == uuid.uuid5(executing.id, "task.step:3")
    assert step["timestamp"] == BASE_TIME + timedelta(seconds=4)


async def test_failure_capture_end_to_end_and_on_the_timeline(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    task = (
        Task("Deploy kuma")
        .requested(["kuma"], ["pull image", "start container"])
        .started()
        .step(1, "pull image")
        .step(2, "start container", "failed")
        .finished(["kuma"], failed=True)
    )
    await publish(amqp, settings, task.out)
    await burst(settings)

    row = await pool.fetchrow("SELECT * FROM tasks WHERE task_id = $1", task.id)
    assert row["status"] == "failed"
    assert row["error_message"] == "kuma: out of memory"
    assert (row["error_cause"], row["error_type"]) == ("resource", "OOMKilled")
    assert row["outcome"]["stack_trace"] == TRACE
    assert row["resource_state"] == {"memory_mb_free": 12, "swap_used_pct": 97}
    assert row["plan"]["steps"] == ["pull image", "start container"]
    assert (row["agent_id"], row["agent_type"]) == ("infra-01", "infra")
    assert row["failed_step"] == 2

    detail = await reads.task_detail(pool, task.id)
    failed = [e for e in detail.timeline if e.failure is not None]
    assert len(failed) == 1
    capture = failed[0].failure
    assert capture is not None
    assert failed[0].event is not None and failed[0].event.event_type == "task.failed"
    assert "resource/OOMKilled at step 2: kuma: out of memory" in failed[0].title
    assert (capture.failed_step, capture.failed_action) == (2, "start container")
    assert capture.stack_trace == TRACE
    assert capture.resource_state == {"memory_mb_free": 12, "swap_used_pct": 97}
    assert (capture.agent_id, capture.agent_type) == ("infra-01", "infra")
    assert capture.plan is not None and capture.plan["complexity"] == "low"

    async with api(settings) as client:
        body = (await client.get(f"/api/v1/tasks/{task.id}")).json()
    shown = [e for e in body["timeline"] if e.get("failure")]
    assert shown and shown[0]["failure"]["stack_trace"] == TRACE

    code, out, err = await run_cli(
        settings, "audit", "timeline", str(task.id), COLUMNS="240", NO_COLOR="1"
    )
    assert code == 0, err
    for text in (
        "failed at step 2 (start container) on infra agent infra-01",
        "memory_mb_free=12",
        "plan: pull image / start container",
        "MemoryError",
    ):
        assert text in out, out
