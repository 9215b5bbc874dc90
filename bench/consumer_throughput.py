"""Consumer benchmark: the same backlog drained three ways, in one run.

(a) the limit: drain with aio-pika, large prefetch, multiple acks, no database (aio-pika's
    queue iterator, as the issue defines it). Also measured: the same drain through the
    aiormq channel under aio-pika that the service itself consumes from (the transport's
    ceiling); c over that is reported too, so the choice of path is visible.
(b) the baseline: the usual consumer, one transaction and one ack per message (same
    ledger and projection code, batch of one).
(c) `taskledger run --only audit --burst` as a subprocess.

Rates are events per second over the consumption span (first to last event handled), so
process start-up does not count against anyone; (c)'s wall time is printed too. Then the
latency from publish to the recording transaction at a steady 1,000 events/s (p50/p99),
and the peak RSS of the service process. Also the CPU each party spent per event (``bench/cpu.py``:
the consumer process, RabbitMQ's VM, the PostgreSQL server; (c)'s figures minus a run on
an empty queue, so start-up does not count) with the rate those CPU seconds allow on
this machine's cores: when the three share few cores, their sum, not any one of them,
bounds the drain.

Usage: python bench/consumer_throughput.py [--events N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Bench,
    fresh_database,
    publish_backlog,
    rss_of,
)
from bench.cpu import CpuSample, postmaster_of, sample  # noqa: E402
from consumer.audit.handler import AuditHandler  # noqa: E402
from consumer.broker import Names  # noqa: E402
from consumer.core.childenv import child_env as cli_env  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from consumer.ledger.inbox import record_events  # noqa: E402
from consumer.simulate import SimulationConfig, generate  # noqa: E402
from consumer.store import db  # noqa: E402
from contracts import EventType, decode, make_event  # noqa: E402


def backlog(events: int) -> list[tuple[str, bytes]]:
    """About ``events`` task events of realistic shape (only the audit queue's types)."""
    tasks = max(1, events * 100 // 740)
    messages, _ = generate(SimulationConfig(tasks=tasks, agents=8, poison=0, seed=42,
                                            dispatch_share=0, capacity_reports=0))  # fmt: skip
    return [m for m in messages if m[0].startswith("task.")][:events]


async def drain_aio_pika(settings: Settings, n: int) -> float:
    """(a) high-level aio-pika: queue iterator, ack multiple every 500. Returns events/s."""
    connection = await aio_pika.connect(settings.amqp)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        queue = await channel.declare_queue(Names(settings.prefix).audit, passive=True)
        seen = 0
        started = 0.0
        async with queue.iterator() as it:
            async for message in it:
                if seen == 0:
                    started = time.perf_counter()
                orjson.loads(message.body)
                seen += 1
                if seen % 500 == 0 or seen == n:
                    await message.ack(multiple=True)
                if seen == n:
                    break
        return n / (time.perf_counter() - started)
    finally:
        await connection.close()


async def drain_aiormq(settings: Settings, n: int) -> float:
    """(a) the aiormq channel the service uses, ack multiple every 500. Returns events/s."""
    connection = await aio_pika.connect(settings.amqp)
    try:
        channel = await connection.channel(publisher_confirms=False)
        raw = await channel.get_underlay_channel()
        await raw.basic_qos(prefetch_count=2000)
        done = asyncio.Event()
        state = {"seen": 0, "started": 0.0}

        async def on_message(message: Any) -> None:
            if state["seen"] == 0:
                state["started"] = time.perf_counter()
            orjson.loads(message.body)
            state["seen"] += 1
            if state["seen"] % 500 == 0 or state["seen"] == n:
                await raw.basic_ack(message.delivery.delivery_tag, multiple=True)
            if state["seen"] == n:
                done.set()

        await raw.basic_consume(Names(settings.prefix).audit, on_message)
        await asyncio.wait_for(done.wait(), 600)
        return n / (time.perf_counter() - state["started"])
    finally:
        await connection.close()


async def baseline(settings: Settings, n: int) -> float:
    """(b) one transaction and one ack per message. Returns events/s."""
    pool = await db.create_pool(settings.dsn, max_size=2)
    handler = AuditHandler()
    connection = await aio_pika.connect(settings.amqp)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=50)
        queue = await channel.declare_queue(Names(settings.prefix).audit, passive=True)
        seen = 0
        started = 0.0
        async with queue.iterator() as it:
            async for message in it:
                if seen == 0:
                    started = time.perf_counter()
                event = decode(message.body, routing_key=message.routing_key)
                async with db.transaction(pool) as conn:
                    await handler.apply(conn, await record_events(conn, [event]))
                await message.ack()
                seen += 1
                if seen == n:
                    break
        return n / (time.perf_counter() - started)
    finally:
        await connection.close()
        await pool.close()


def service_burst(settings: Settings, *, chain: bool = True) -> tuple[float, int, float]:
    """(c) `taskledger run --only audit --burst`; returns (wall seconds, peak RSS bytes,
    CPU seconds of the process)."""
    started = time.perf_counter()
    env = cli_env(settings, TASKLEDGER_LEDGER_CHAIN=str(chain).lower())
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli", "run", "--only", "audit", "--burst"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"taskledger run failed ({proc.returncode}):\n{err[-2000:]}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


async def postmaster(settings: Settings) -> int | None:
    """The pid of the PostgreSQL server behind ``settings`` (for its CPU time)."""
    conn = await db.connect(settings.dsn)
    try:
        return postmaster_of(str(await conn.fetchval("SHOW data_directory")))
    finally:
        await conn.close()


def cpu_per_event(before: CpuSample, after: CpuSample, own: float, n: int) -> dict[str, float]:
    """Microseconds of CPU per event: ours, the broker's, the database server's."""
    return {
        "consumer_us": round(own / n * 1e6, 1),
        "broker_us": round((after.broker - before.broker) / n * 1e6, 1),
        "database_us": round((after.database - before.database) / n * 1e6, 1),
    }


async def ledger_span(settings: Settings) -> tuple[int, float]:
    """(rows, seconds from the first to the last recording transaction)."""
    conn = await db.connect(settings.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(received_at) - min(received_at)) AS s "
            "FROM event_ledger"
        )
        return int(row["n"]), float(row["s"] or 0.0)
    finally:
        await conn.close()


async def latency(settings: Settings, rate: int, seconds: int) -> dict[str, float]:
    """Publish at ``rate``/s for ``seconds`` to a running service; publish→record latency."""
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for with a bounded wait()
        [sys.executable, "-m", "consumer.cli", "run", "--only", "audit"],
        env=cli_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    total = rate * seconds
    try:
        await asyncio.sleep(2.0)  # let it connect before the clock starts
        connection = await aio_pika.connect(settings.amqp)
        channel = await connection.channel(publisher_confirms=False)
        exchange = await channel.get_exchange(Names(settings.prefix).events)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(total):
            task_id = uuid.uuid4()
            body = make_event(EventType.TASK_REQUESTED, {"request_text": f"latency probe {i}"},
                              source="orchestrator", subject=task_id, time=datetime.now(UTC))  # fmt: skip
            await exchange.publish(aio_pika.Message(body), routing_key="task.requested")
            delay = start + (i + 1) / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await connection.close()
        conn = await db.connect(settings.dsn)
        try:
            for _ in range(300):
                if await conn.fetchval("SELECT count(*) FROM event_ledger") >= total:
                    break
                await asyncio.sleep(0.1)
            lags = [r[0] for r in await conn.fetch(
                "SELECT extract(epoch FROM received_at - event_time) * 1000 FROM event_ledger")]  # fmt: skip
        finally:
            await conn.close()
        rss = rss_of(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    lags_f = sorted(float(x) for x in lags)
    q = statistics.quantiles(lags_f, n=100)
    return {"events": len(lags_f), "p50_ms": q[49], "p99_ms": q[98], "max_ms": lags_f[-1],
            "rss_bytes": rss}  # fmt: skip


async def main(events: int, latency_seconds: int) -> dict[str, Any]:
    bench = Bench("consumer")
    messages = backlog(events)
    n = len(messages)
    results: dict[str, Any] = {"events": n}
    async with fresh_database() as settings:
        pm = await postmaster(settings)
        await publish_backlog(settings, messages)
        before, own = sample(pm), time.process_time()
        results["a_aio_pika"] = await drain_aio_pika(settings, n)
        results["a_cpu"] = cpu_per_event(before, sample(pm), time.process_time() - own, n)
        await publish_backlog(settings, messages)
        results["a_aiormq"] = await drain_aiormq(settings, n)
    async with fresh_database() as settings:
        await publish_backlog(settings, messages)
        results["b_baseline"] = await baseline(settings, n)
    async with fresh_database() as settings:  # start-up and idle exit alone, to subtract
        before = sample(pm)
        _, _, idle_own = service_burst(settings)
        await asyncio.sleep(0.5)  # the server reaps the exited backends
        idle = cpu_per_event(before, sample(pm), idle_own, 1)
    async with fresh_database() as settings:
        await publish_backlog(settings, messages)
        before = sample(pm)
        wall, rss, own = service_burst(settings)
        await asyncio.sleep(0.5)
        used = cpu_per_event(before, sample(pm), own, 1)
        results["c_cpu"] = {k: round((used[k] - idle[k]) / n, 1) for k in used}
        rows, span = await ledger_span(settings)
        distinct = len({orjson.loads(b)["id"] for _, b in messages})
        assert rows == distinct, f"ledger has {rows} rows, expected {distinct}"
        results["c_service"] = n / span
        results["c_wall_seconds"] = wall
        results["c_peak_rss_bytes"] = rss
    async with fresh_database() as settings:
        await publish_backlog(settings, messages)
        service_burst(settings, chain=False)
        _, span = await ledger_span(settings)
        results["c_service_without_chain"] = n / span
    async with fresh_database() as settings:
        results["latency"] = await latency(settings, 1000, latency_seconds)
    limit = results["a_aio_pika"]
    results["a_limit"] = limit
    results["c_over_a"] = results["c_service"] / limit
    cores = os.cpu_count() or 1
    per_event = sum(results["c_cpu"].values())  # can come out <= 0 on a tiny, noisy run
    results["c_cpu_bound"] = cores * 1e6 / per_event if per_event > 0 else float("nan")
    results["c_over_transport"] = results["c_service"] / results["a_aiormq"]
    results["c_over_b"] = results["c_service"] / results["b_baseline"]
    results["chain_cost"] = 1 - results["c_service"] / results["c_service_without_chain"]
    bench.report(results, [
        ("(a) limit, aio-pika queue iterator", f"{results['a_aio_pika']:,.0f} ev/s"),
        ("(a') transport ceiling, aiormq channel", f"{results['a_aiormq']:,.0f} ev/s"),
        ("(b) baseline, 1 tx + 1 ack per message", f"{results['b_baseline']:,.0f} ev/s"),
        ("(c) taskledger run --burst", f"{results['c_service']:,.0f} ev/s "
                                       f"(wall {wall:.1f}s incl. start-up)"),
        ("(c) without the hash chain", f"{results['c_service_without_chain']:,.0f} ev/s "
                                       f"(chain costs {results['chain_cost']:.0%}, target <= 10%)"),
        ("c/a (target >= 0.90)", f"{results['c_over_a']:.2f}"),
        ("CPU per event, µs: consumer / broker / database",
         " / ".join(f"{results['c_cpu'][k]:.0f}" for k in ("consumer_us", "broker_us", "database_us"))
         + f" (the limit: {results['a_cpu']['consumer_us']:.0f} / {results['a_cpu']['broker_us']:.0f} / -)"),
        (f"what {cores} cores allow for (c), from its CPU per event",
         f"{results['c_cpu_bound']:,.0f} ev/s ({results['c_cpu_bound'] / limit:.2f} of the limit)"),
        ("c/a' (no target; the transport's ceiling)", f"{results['c_over_transport']:.2f}"),
        ("c/b (target >= 6)", f"{results['c_over_b']:.1f}"),
        ("publish->record p50 / p99 at 1,000 ev/s (target p99 <= 100 ms)",
         f"{results['latency']['p50_ms']:.1f} / {results['latency']['p99_ms']:.1f} ms"),
        ("peak RSS, burst drain / steady (target <= 200 MB)",
         f"{rss / 2**20:.0f} / {results['latency']['rss_bytes'] / 2**20:.0f} MB"),
    ])  # fmt: skip
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="5,000 events, 5 s of latency")
    args = parser.parse_args()
    if args.quick:
        asyncio.run(main(5_000, 5))
    else:
        asyncio.run(main(args.events, 20))
