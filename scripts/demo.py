"""`make demo`: migrate, run the service, feed it realistic traffic, show the result.

Every step is a real `taskledger` command (printed before it runs), so the demo doubles
as a tour of the CLI. Settings come from the environment as for the service itself
(default: the local PostgreSQL database `taskledger` and RabbitMQ on localhost).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.rule import Rule  # noqa: E402
from rich.table import Table  # noqa: E402

from consumer import broker  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from consumer.producer import Publisher  # noqa: E402
from consumer.simulate import WORKER_TYPES  # noqa: E402
from consumer.store import db  # noqa: E402
from contracts import EventType  # noqa: E402

console = Console()
wide = Console(width=max(console.width, 120))  # the demo's own tables need room
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


OBSERVER_TTL_MS = 15 * 60 * 1000
"""The observer queue expires this long after its last use, even if the demo is killed."""


async def observe_dispatch(settings: Settings) -> str:
    """A queue bound to the dispatch exchange, so the demo can count what went out.

    Not durable, and it expires (``x-expires``) once unused: the demo deletes it at the
    end (:func:`remove_observer`); if the demo dies first, the broker does. A durable
    leftover of an older demo is deleted first (it would collect every later dispatch).
    """
    names = broker.Names(settings.prefix)
    queue_name = f"{settings.prefix}.demo.dispatched"
    connection = await broker.connect(settings.amqp)
    try:
        channel = await connection.channel()
        await broker.declare_topology(channel, settings)
        await channel.queue_delete(queue_name)
        queue = await channel.declare_queue(
            queue_name, durable=False, arguments={"x-expires": OBSERVER_TTL_MS}
        )
        await queue.bind(names.dispatch, routing_key="#")
    finally:
        await connection.close()
    return queue_name


async def remove_observer(settings: Settings, queue_name: str) -> None:
    """Delete the observer queue (the end of the demo)."""
    connection = await broker.connect(settings.amqp)
    try:
        channel = await connection.channel()
        await channel.queue_delete(queue_name)
    finally:
        await connection.close()


async def generous_capacity(settings: Settings) -> None:
    """Every agent type reports plenty of room: what waits for capacity can go."""
    for agent_type in WORKER_TYPES:
        for n in range(2):
            agent = f"{agent_type.value}-big-{n}"
            source = f"agents/{agent}"
            async with Publisher(settings.amqp, source=source, prefix=settings.prefix) as pub:
                await pub.publish(EventType.CAPACITY_REPORTED, {
                    "agent_id": agent, "agent_type": agent_type.value,
                    "free": {"gpu_vram_mb": 49152, "cpu_cores": 64, "memory_mb": 262144},
                    "load_pct": 5.0, "accepting": True,
                }, time=datetime.now(UTC))  # fmt: skip


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


PAUSED_ROWS = 8
"""Rows of the pause queue the demo shows; the rest is summarised."""

TRIGGERS = {
    "immediate": "admitted on arrival: an agent had room and no hold applied",
    "capacity": "waited, then released by a capacity report that covered it",
    "timeout": "waited, then released when its resume_after / not_before time came",
    "manual": "released by an operator: `taskledger resume` lifted the hold while an agent "
    "had room, or `resume --task ID --force` pushed it out",
}


def show_paused() -> None:
    """`taskledger paused`, summarised: counts by reason and agent type, the first rows."""
    console.print("[dim]$ taskledger paused --json   (summarised below; the full table is "
                  "`taskledger paused`)[/dim]")  # fmt: skip
    done = subprocess.run([*TASKLEDGER, "paused", "--json"], cwd=ROOT, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"`taskledger paused --json` exited {done.returncode}: {done.stderr}")
    view = json.loads(done.stdout)
    entries, holds = view["entries"], view["holds"]
    console.print(f"{len(entries)} dispatch requests wait; {len(holds)} operator hold(s)")
    if entries:
        summary = Table(title="why they wait", title_justify="left")
        for name in ("reason", "agent type", "waiting"):
            summary.add_column(name, justify="right" if name == "waiting" else "left")
        counts = Counter((e["reason"], e["agent_type"]) for e in entries)
        for (reason, agent_type), n in sorted(counts.items()):
            summary.add_row(reason, agent_type, str(n))
        wide.print(summary)
        first = Table(title=f"the first {min(PAUSED_ROWS, len(entries))} (most urgent first)",
                      title_justify="left")  # fmt: skip
        for name in ("task", "reason", "priority", "needs"):
            first.add_column(name, no_wrap=name == "task")
        for e in entries[:PAUSED_ROWS]:
            r = e["required"]
            needs = f"{e['agent_type']}: {r['cpu_cores']:g} CPU, {r['memory_mb']} MB RAM"
            if r["gpu_vram_mb"]:
                needs += f", {r['gpu_vram_mb']} MB VRAM"
            first.add_row(e["task_id"], e["reason"], str(e["priority"]), needs)
        wide.print(first)
        if len(entries) > PAUSED_ROWS:
            console.print(f"... and {len(entries) - PAUSED_ROWS} more")
    for h in holds:
        console.print(f"hold: {h['scope']} {h.get('task_id') or ''} {h.get('reason') or ''}")


def show_triggers(counts: dict[str, int]) -> None:
    """The dispatch.assigned messages seen on the wire, by trigger, each explained."""
    table = Table(title=f"dispatch.assigned on the wire: {sum(counts.values())} messages, by "
                        "what released them", title_justify="left")  # fmt: skip
    table.add_column("trigger")
    table.add_column("messages", justify="right")
    table.add_column("meaning")
    for trigger, n in sorted(counts.items(), key=lambda item: -item[1]):
        table.add_row(trigger, str(n), TRIGGERS.get(trigger, "(another outbound type)"))
    wide.print(table)
    console.print(
        "The simulated requests were all published during the operator's hold, so each one "
        "waited first; the trigger says what let it go. Requests still waiting need more "
        "than the agents have left: each release reserves its resources on the agent until "
        "that agent reports again."
    )


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
        show_paused()

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
        show_paused()
        show_triggers(asyncio.run(dispatched(observed, settings)))

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
        asyncio.run(remove_observer(settings, observed))
        console.print(f"removed the demo's observer queue {observed}")
    if code != 0:
        raise SystemExit(code)
    show_console_hint()


def show_console_hint() -> None:
    """The demo's last lines: how to look at its data in the ops console."""
    step("12. look around in the ops console")
    token = "your TASKLEDGER_API_TOKEN" if os.environ.get("TASKLEDGER_API_TOKEN") else "demo"
    console.print(
        "The demo's record stays in its database. To browse it (dead letters, failures, "
        "tasks, the pause queue, the operator actions), run\n\n"
        "    make console\n\n"
        "and open http://127.0.0.1:8080/ui/ (it serves until Ctrl-C; the token for the "
        f"dead letters and the actions is {token}).",
        highlight=False,
    )


if __name__ == "__main__":
    main()
