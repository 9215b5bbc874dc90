"""`make demo`: migrate, run the service, feed it realistic traffic, show the result.

Every step is a real `taskledger` command (printed before it runs), so the demo doubles
as a tour of the CLI. Settings come from the environment as for the service itself
(default: the local PostgreSQL database `taskledger` and RabbitMQ on localhost).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.rule import Rule  # noqa: E402

from consumer import broker  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from consumer.simulate import WORKER_TYPES  # noqa: E402
from consumer.store import db  # noqa: E402
from contracts import EventType, make_event  # noqa: E402

console = Console()
TASKLEDGER = [sys.executable, "-m", "consumer.cli"]


def step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def cli(*args: str, check: bool = True) -> int:
    """Run `taskledger ARGS`, showing the command and its output."""
    console.print(f"[dim]$ taskledger {' '.join(args)}[/dim]")
    env = {**os.environ, "COLUMNS": str(max(console.width, 150))}  # tables need room
    code = subprocess.run([*TASKLEDGER, *args], cwd=ROOT, env=env, check=False).returncode
    if check and code != 0:
        raise SystemExit(f"`taskledger {' '.join(args)}` exited {code}")
    return code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def depths(settings: Settings) -> dict[str, int]:
    names = broker.Names(settings.prefix)
    connection = await broker.connect(settings.amqp)
    try:
        channel = await connection.channel()
        return {q: await broker.queue_depth(channel, q) for q in (names.audit, names.capacity)}
    finally:
        await connection.close()


async def wait_for_quiet(settings: Settings, what: str, timeout: float = 120) -> None:
    """Wait until both queues are empty and the ledger and outbox stop moving."""
    pool = await db.create_pool(settings.dsn, max_size=1)
    deadline = time.monotonic() + timeout
    last: tuple[int, ...] = ()
    try:
        with console.status(f"waiting for {what}"):
            while time.monotonic() < deadline:
                queued = sum((await depths(settings)).values())
                state = (
                    queued,
                    await pool.fetchval("SELECT count(*) FROM event_ledger"),
                    await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
                )
                if queued == 0 and state[2] == 0 and state == last:
                    return
                last = state
                await asyncio.sleep(1.0)
    finally:
        await pool.close()
    raise SystemExit(f"timed out waiting for {what}")


async def observe_dispatch(settings: Settings) -> str:
    """A queue bound to the dispatch exchange, so the demo can count what went out."""
    names = broker.Names(settings.prefix)
    queue_name = f"{settings.prefix}.demo.dispatched"
    connection = await broker.connect(settings.amqp)
    try:
        channel = await connection.channel()
        await broker.declare_topology(channel, settings)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.purge()
        await queue.bind(names.dispatch, routing_key="#")
    finally:
        await connection.close()
    return queue_name


async def generous_capacity(settings: Settings) -> None:
    """Every agent type reports plenty of room: what waits for capacity can go."""
    connection = await broker.connect(settings.amqp)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(broker.Names(settings.prefix).events)
        for agent_type in WORKER_TYPES:
            for n in range(2):
                agent = f"{agent_type.value}-big-{n}"
                body = make_event(EventType.CAPACITY_REPORTED, {
                    "agent_id": agent, "agent_type": agent_type.value,
                    "free": {"gpu_vram_mb": 49152, "cpu_cores": 64, "memory_mb": 262144},
                    "load_pct": 5.0, "accepting": True,
                }, source=f"agents/{agent}", time=datetime.now(UTC))  # fmt: skip
                await exchange.publish(aio_pika.Message(body), routing_key="capacity.reported")
    finally:
        await connection.close()


async def dispatched(queue_name: str, settings: Settings) -> dict[str, int]:
    """Count the dispatch.assigned messages seen, by trigger (leaves them queued)."""
    import orjson

    connection = await broker.connect(settings.amqp)
    counts: dict[str, int] = {}
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        while (message := await queue.get(fail=False, no_ack=False)) is not None:
            event = orjson.loads(message.body)
            key = event["data"].get("trigger", event["type"])
            counts[key] = counts.get(key, 0) + 1
            await message.ack()
    finally:
        await connection.close()
    return counts


async def one_waiting_task(settings: Settings) -> uuid.UUID | None:
    conn = await db.connect(settings.dsn)
    try:
        return await conn.fetchval(
            "SELECT task_id FROM pause_queue ORDER BY priority, paused_at LIMIT 1"
        )
    finally:
        await conn.close()


def main() -> None:
    settings = Settings()
    step("1. migrate")
    cli("migrate")

    step("2. start the service")
    observed = asyncio.run(observe_dispatch(settings))
    port = free_port()
    service = subprocess.Popen([*TASKLEDGER, "run", "--metrics-port", str(port)], cwd=ROOT,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    console.print(f"taskledger run (pid {service.pid}), metrics on http://127.0.0.1:{port}/metrics")
    try:
        step("3. an operator holds dispatch for a maintenance window")
        cli("pause", "--reason", "demo: maintenance window")

        step("4. agents and the orchestrator publish traffic")
        cli("simulate", "--tasks", os.environ.get("DEMO_TASKS", "300"), "--agents", "8")
        asyncio.run(wait_for_quiet(settings, "the queues to drain"))

        step("5. what waits, and why")
        cli("paused")

        step("6. the hold is lifted; then agents report capacity")
        cli("resume")
        asyncio.run(wait_for_quiet(settings, "re-admission"))
        asyncio.run(generous_capacity(settings))
        asyncio.run(wait_for_quiet(settings, "releases"))
        task = asyncio.run(one_waiting_task(settings))
        if task is not None:
            step("7. one task is forced out by hand")
            cli("resume", "--task", str(task), "--force")
            asyncio.run(wait_for_quiet(settings, "the forced dispatch"))
        cli("paused")
        counts = asyncio.run(dispatched(observed, settings))
        console.print(f"dispatch.assigned on the wire, by trigger: {counts}")

        step("8. the record")
        cli("audit", "summary")
        cli("audit", "failures", "--limit", "10")
        cli("audit", "tasks", "--service", "kuma", "--limit", "5")

        step("9. dead letters, by reason")
        cli("dlq", "summary")

        step("10. tamper evidence")
        cli("verify")
    finally:
        step("11. stop the service (SIGTERM)")
        service.send_signal(signal.SIGTERM)
        code = service.wait(60)
        console.print(f"taskledger run exited {code}")
    if code != 0:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
