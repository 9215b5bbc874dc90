"""Capacity benchmark: pause-queue entries released by capacity reports, through the CLI.

For one and for three handler processes (``taskledger run --only capacity``), each on a
fresh database and prefix:

- release rate: ``--entries`` waiting entries (10,000) are seeded straight into
  ``pause_queue`` (priorities 1..5, paused over the last hour, tables analysed as
  autovacuum would), then 100 agents report capacity whose room together covers every
  entry. Entries per second from the first report published until every entry's
  ``dispatch.assigned`` was received from ``<prefix>.dispatch`` (on the wire), and until
  the pause queue was empty (committed);
- latency: with the handlers otherwise idle, reports are published one at a time, each
  fitting exactly one waiting entry; the time from publishing the report to receiving
  that entry's ``dispatch.assigned`` (p50/p99).

Usage: python bench/capacity_release.py [--entries N] [--samples N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Bench, fresh_database  # noqa: E402
from consumer.broker import Names  # noqa: E402
from consumer.core.childenv import child_env as cli_env  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from consumer.store import db  # noqa: E402
from contracts import EventType, make_event  # noqa: E402

ENTRY_MEMORY_MB = 10
AGENTS = 100


def report(agent_id: str, agent_type: str, memory_mb: int) -> bytes:
    """A capacity report with room for ``memory_mb`` (CPU and GPU are not limiting)."""
    data = {
        "agent_id": agent_id,
        "agent_type": agent_type,
        "free": {"gpu_vram_mb": 0, "cpu_cores": 64.0, "memory_mb": memory_mb},
        "load_pct": 20.0,
        "accepting": True,
    }
    return make_event(EventType.CAPACITY_REPORTED, data, source=f"agents/{agent_id}")


async def seed(pool: asyncpg.Pool, n: int, agent_type: str) -> None:
    """Insert ``n`` waiting entries of ``agent_type`` needing ``ENTRY_MEMORY_MB`` each."""
    ids = [uuid.uuid4() for _ in range(n)]
    await pool.execute(
        """
        INSERT INTO pause_queue (task_id, work_plan_json, reason, paused_at, priority, agent_type,
                                 required_memory_mb, request_event_id)
        SELECT t, jsonb_build_object('task', t::text, 'steps', jsonb_build_array('a', 'b')),
               'insufficient_capacity', now() - (i % 3600) * interval '1 second',
               1 + i % 5, $2, $3, gen_random_uuid()
        FROM unnest($1::uuid[]) WITH ORDINALITY AS x(t, i)
        """,
        ids,
        agent_type,
        ENTRY_MEMORY_MB,
    )


class Wire:
    """Collects dispatch.assigned from ``<prefix>.dispatch`` with arrival times."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}
        self.total = 0
        self.changed = asyncio.Event()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.perf_counter()
        task = orjson.loads(message.body)["data"]["task_id"]
        self.total += 1
        self.first_seen.setdefault(task, now)
        self.changed.set()

    async def wait_for(self, count: int, seconds: float) -> None:
        """Return once ``count`` distinct tasks were seen; raise TimeoutError otherwise."""

        async def loop() -> None:
            while len(self.first_seen) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), seconds)


async def start_handlers(
    settings: Settings, channel: aio_pika.abc.AbstractChannel, n: int
) -> list[asyncio.subprocess.Process]:
    """Start ``n`` capacity handlers and wait until each consumes the queue."""
    argv = [sys.executable, "-m", "consumer.cli", "run", "--only", "capacity"]
    env = cli_env(settings, TASKLEDGER_LOG_LEVEL="WARNING")
    procs = [await asyncio.create_subprocess_exec(*argv, env=env, cwd=ROOT) for _ in range(n)]
    deadline = time.monotonic() + 60
    while True:
        queue = await channel.declare_queue(Names(settings.prefix).capacity, passive=True)
        if (queue.declaration_result.consumer_count or 0) >= n:
            return procs
        if time.monotonic() > deadline or any(p.returncode is not None for p in procs):
            raise RuntimeError("the capacity handlers did not start")
        await asyncio.sleep(0.1)


async def stop_handlers(procs: list[asyncio.subprocess.Process]) -> None:
    """SIGTERM, then wait (kill whatever does not stop)."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def wait_db_empty(pool: asyncpg.Pool, agent_type: str, seconds: float) -> float:
    """Poll until no entry of ``agent_type`` waits; returns when (perf_counter)."""
    deadline = time.perf_counter() + seconds
    sql = "SELECT count(*) FROM pause_queue WHERE agent_type = $1"
    while await pool.fetchval(sql, agent_type):
        if time.perf_counter() > deadline:
            raise TimeoutError("entries still waiting")
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def publish(exchange: aio_pika.abc.AbstractExchange, bodies: list[bytes]) -> None:
    """Publish capacity reports persistently, waiting for the confirms."""
    await asyncio.gather(
        *(
            exchange.publish(
                aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="capacity.reported",
            )
            for b in bodies
        )
    )


async def run_once(handlers: int, entries: int, samples: int) -> dict[str, Any]:
    """One run with ``handlers`` processes on a fresh database and prefix."""
    async with fresh_database() as settings:
        pool = await db.create_pool(settings.dsn, min_size=1, max_size=2)
        connection = await aio_pika.connect(settings.amqp)
        procs: list[asyncio.subprocess.Process] = []
        try:
            channel = await connection.channel(publisher_confirms=True)
            names = Names(settings.prefix)
            wire = Wire()
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(names.dispatch, routing_key="dispatch.#")
            await queue.consume(wire.on_message, no_ack=True)
            events = await channel.get_exchange(names.events)
            await seed(pool, entries, "infra")
            await seed(pool, samples, "research")
            await pool.execute("ANALYZE pause_queue")
            procs = await start_handlers(settings, channel, handlers)

            room = -(-entries // AGENTS) * ENTRY_MEMORY_MB
            started = time.perf_counter()
            await publish(events, [report(f"infra-{i:04}", "infra", room) for i in range(AGENTS)])
            db_done = await wait_db_empty(pool, "infra", 600)
            await wire.wait_for(entries, 600)
            wire_done = max(wire.first_seen.values())
            duplicates = wire.total - entries

            latencies: list[float] = []
            for i in range(samples):
                seen = len(wire.first_seen)
                sent = time.perf_counter()
                await publish(events, [report(f"research-{i:04}", "research", ENTRY_MEMORY_MB)])
                await wire.wait_for(seen + 1, 30)
                latencies.append((max(wire.first_seen.values()) - sent) * 1000)
        finally:
            await stop_handlers(procs)
            await connection.close()
            await pool.close()
    q = statistics.quantiles(latencies, n=100)
    return {
        "handlers": handlers,
        "entries": entries,
        "released_per_s_wire": entries / (wire_done - started),
        "released_per_s_committed": entries / (db_done - started),
        "seconds_to_wire": wire_done - started,
        "duplicates_on_wire": duplicates,
        "latency_samples": len(latencies),
        "latency_p50_ms": q[49],
        "latency_p99_ms": q[98],
    }


async def main(entries: int, samples: int) -> dict[str, Any]:
    bench = Bench("capacity_release")
    results: dict[str, Any] = {"entries": entries, "agents": AGENTS}
    rows: list[tuple[str, str]] = []
    for handlers in (1, 3):
        r = await run_once(handlers, entries, samples)
        results[f"handlers_{handlers}"] = r
        label = f"{handlers} handler{'s' if handlers > 1 else ''}"
        rows += [
            (f"{label}: released/s, on the wire (committed)",
             f"{r['released_per_s_wire']:,.0f} ({r['released_per_s_committed']:,.0f})"),
            (f"{label}: report -> dispatch.assigned p50 / p99",
             f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} ms"),
            (f"{label}: duplicates on the wire", str(r["duplicates_on_wire"])),
        ]  # fmt: skip
    bench.report(results, rows)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument("--quick", action="store_true", help="2,000 entries, 50 samples")
    args = parser.parse_args()
    if args.quick:
        asyncio.run(main(2_000, 50))
    else:
        asyncio.run(main(args.entries, args.samples))
