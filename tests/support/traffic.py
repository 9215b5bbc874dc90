"""Helpers to publish traffic, run the service in-process, and compare projections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg

from consumer.broker import Names
from consumer.core.settings import Settings
from consumer.runtime.handler import Handler
from consumer.runtime.service import run_service
from contracts import EventType, make_event

Message = tuple[str, bytes]

BASE_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def lifecycle(
    task_id: uuid.UUID | None = None,
    *,
    steps: int = 3,
    terminal: str = "completed",
    start: datetime = BASE_TIME,
    services: Sequence[str] = ("kuma", "dns"),
) -> list[Message]:
    """One task's events in natural order, with fixed ids and increasing times."""
    task_id = task_id or uuid.uuid4()
    t = start
    out: list[Message] = []

    def emit(kind: EventType, data: dict[str, Any], source: str = "agents/infra-01") -> None:
        nonlocal t
        t += timedelta(seconds=1)
        event_id = uuid.uuid5(task_id, f"{kind.value}:{len(out)}")
        out.append(
            (
                kind.value,
                make_event(kind, data, source=source, subject=task_id, id=event_id, time=t),
            )
        )

    emit(EventType.TASK_REQUESTED, {"request_text": f"deploy {services[0]}", "services": list(services),
                                    "plan": {"steps": ["deploy", "verify"], "estimated_duration_seconds": 60,
                                             "complexity": "low"}}, "orchestrator")  # fmt: skip
    if terminal == "rejected":
        emit(EventType.TASK_REJECTED, {"reason": "not now"}, "orchestrator")
        return out
    emit(EventType.TASK_APPROVED, {"approved_by": "alice"}, "orchestrator")
    emit(EventType.TASK_STARTED, {"agent_id": "infra-01", "agent_type": "infra"})
    for n in range(1, steps + 1):
        emit(EventType.TASK_STEP, {"step_number": n, "agent_type": "infra", "action": f"step {n}",
                                   "status": "completed", "output_summary": "x" * 700,
                                   "duration_ms": 10 * n})  # fmt: skip
    resources = {"duration_seconds": 12, "cpu_time_ms": 900, "gpu_vram_mb_used": 0,
                 "peak_memory_mb": 128, "agent_load_pct": 40.0}  # fmt: skip
    if terminal == "completed":
        emit(EventType.TASK_COMPLETED, {
            "services_touched": list(services), "actual_resources": resources,
            "outcome": {"success": True, "output_summary": "done", "last_lines": ["ok"]},
            "external_ai_used": [{"provider": "anthropic", "model": "m", "token_count": 10, "cost_usd": 0.25},
                                 {"provider": "openai", "model": "n", "token_count": 5, "cost_usd": 0.5}],
        })  # fmt: skip
    elif terminal == "failed":
        emit(EventType.TASK_FAILED, {
            "services_touched": list(services), "actual_resources": resources, "failed_step": max(steps, 1),
            "outcome": {"success": False, "error_type": "OOMKilled", "error_cause": "resource",
                        "error_message": "out of memory", "last_lines": ["killed"]},
        })  # fmt: skip
    return out


def dispatch_request(task_id: uuid.UUID, *, mem: int = 600, priority: int = 3) -> Message:
    """A ``dispatch.requested`` message for ``task_id`` (infra, ``mem`` MB)."""
    data = {
        "work_plan": {"task": f"work {task_id}"},
        "required": {"gpu_vram_mb": 0, "cpu_cores": 1, "memory_mb": mem},
        "agent_type": "infra",
        "priority": priority,
    }
    body = make_event(EventType.DISPATCH_REQUESTED, data, source="orchestrator", subject=task_id)
    return EventType.DISPATCH_REQUESTED.value, body


def capacity_report(agent_id: str = "infra-01", *, mem: int = 1000) -> Message:
    """A ``capacity.reported`` message: ``mem`` MB free, usable."""
    data = {
        "agent_id": agent_id,
        "agent_type": "infra",
        "free": {"gpu_vram_mb": 0, "cpu_cores": 8, "memory_mb": mem},
        "load_pct": 10.0,
        "accepting": True,
    }
    body = make_event(EventType.CAPACITY_REPORTED, data, source=f"agents/{agent_id}")
    return EventType.CAPACITY_REPORTED.value, body


async def publish(
    connection: aio_pika.abc.AbstractConnection, settings: Settings, messages: Sequence[Message]
) -> None:
    """Publish persistently to the events exchange and wait for every confirm."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(Names(settings.prefix).events)
        for i in range(0, len(messages), 200):
            await asyncio.gather(*(
                exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                 routing_key=key)
                for key, body in messages[i : i + 200]
            ))  # fmt: skip
    finally:
        await channel.close()


async def burst(settings: Settings, *, only: str | None = "audit", timeout: float = 60,
                handlers: Sequence[Handler] | None = None) -> None:  # fmt: skip
    """Run the service in-process until its queues are empty."""
    await asyncio.wait_for(run_service(settings, only=only, burst=True, handlers=handlers), timeout)


@asynccontextmanager
async def running(settings: Settings, *, only: str | None = "audit") -> Any:
    """Run the service in the background for the duration of the block; stop it after."""
    stopping = asyncio.Event()
    task = asyncio.create_task(run_service(settings, only=only, stopping=stopping))
    try:
        yield task
    finally:
        stopping.set()
        await asyncio.wait_for(task, settings.shutdown_timeout_s + 10)


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30, what: str = "condition"
) -> None:
    """Poll ``check`` until true; fail with ``what`` after ``timeout`` seconds."""

    async def loop() -> None:
        while not await check():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def snapshot(
    pool: asyncpg.Pool, task_ids: Sequence[uuid.UUID] | None = None
) -> dict[str, Any]:
    """The projected rows (tasks and execution_logs) without surrogate keys or receipt times."""
    where = "WHERE task_id = ANY($1::uuid[])" if task_ids is not None else ""
    args = [list(task_ids)] if task_ids is not None else []
    tasks = await pool.fetch(f"SELECT * FROM tasks {where} ORDER BY task_id", *args)
    logs = await pool.fetch(
        f"SELECT * FROM execution_logs {where} ORDER BY task_id, event_id", *args
    )
    return {
        "tasks": [dict(r) for r in tasks],
        "logs": [{k: v for k, v in r.items() if k != "recorded_at"} for r in logs],
    }


async def drain_queue(
    connection: aio_pika.abc.AbstractConnection, queue_name: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take (and ack) every message currently in ``queue_name``."""
    channel = await connection.channel()
    out = []
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        while (message := await queue.get(fail=False, no_ack=False)) is not None:
            await message.ack()
            out.append(message)
    finally:
        await channel.close()
    return out


async def collect(
    queue: aio_pika.abc.AbstractQueue, n: int, within: float = 10
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Wait (bounded) for exactly ``n`` messages on ``queue`` and acknowledge them."""
    got: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def consume() -> None:
        async with queue.iterator() as it:
            async for message in it:
                await message.ack()
                got.append(message)
                if len(got) == n:
                    return

    await asyncio.wait_for(consume(), within)
    return got


async def ledger_count(pool: asyncpg.Pool) -> int:
    """Rows in the event ledger."""
    return int(await pool.fetchval("SELECT count(*) FROM event_ledger"))
