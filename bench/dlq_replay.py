"""Dead-letter benchmark: look at and replay a large dead queue.

Fills ``<prefix>.dead`` (fresh database, random prefix) with ``--messages`` dead letters
(20,000 by default) made the way the consumer makes them, then measures:

- a read-only pass (``dlq summary``): messages per second looked at, every one left in
  the queue in order;
- ``dlq replay`` of all of them to a scratch quorum queue: messages per second, each
  one confirmed at the destination before it is acked in the dead queue.

Run:  .venv/bin/python bench/dlq_replay.py [--messages 20000]
Needs PostgreSQL and RabbitMQ (TASKLEDGER_TEST_DATABASE_URL, a server where it may
create databases, and TASKLEDGER_TEST_AMQP_URL; local defaults). Everything it creates is
removed afterwards; the figures go to bench/results/dlq_replay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Bench, fresh_database  # noqa: E402
from consumer import dlq  # noqa: E402
from consumer.broker import Names, dead_letter_headers, queue_depth  # noqa: E402
from consumer.core.settings import Settings  # noqa: E402
from contracts import EventType, make_event  # noqa: E402
from contracts.examples import EXAMPLES  # noqa: E402

WINDOW = 500


async def fill(settings: Settings, count: int, *, body_bytes: int = 0) -> None:
    """Publish ``count`` consumer-style dead letters to the dlx, with confirms; bodies are
    padded with JSON whitespace to ``body_bytes`` when given."""
    names = Names(settings.prefix)
    connection = await aio_pika.connect(settings.amqp)
    try:
        channel = await connection.channel()
        dlx = await channel.get_exchange(names.dlx)
        step = EXAMPLES[EventType.TASK_STEP]
        for start in range(0, count, WINDOW):
            batch = []
            for _ in range(start, min(start + WINDOW, count)):
                body = make_event(
                    EventType.TASK_STEP, step, source="agents/a1", subject=uuid.uuid4()
                )
                body += b" " * max(0, body_bytes - len(body))
                headers = dead_letter_headers(
                    None,
                    reason="retries_exhausted",
                    error="DataError: value out of range",
                    source_queue=names.audit,
                    routing_key="task.step",
                    exchange=names.events,
                )
                message = aio_pika.Message(
                    body,
                    headers=headers,
                    message_id=uuid.uuid4().hex,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                batch.append(dlx.publish(message, routing_key="task.step"))
            await asyncio.gather(*batch)
        await wait_depth(channel, names.dead, count)
    finally:
        await connection.close()


async def wait_depth(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> None:
    """Wait (bounded) until ``queue`` holds ``count`` messages."""

    async def poll() -> None:
        while True:
            if await queue_depth(channel, queue) == count:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 120)


async def measure(count: int) -> dict[str, Any]:
    """Fill, look, replay; return the figures."""
    async with fresh_database() as settings:
        names = Names(settings.prefix)
        scratch = f"{settings.prefix}.bench.scratch"
        connection = await aio_pika.connect(settings.amqp)
        channel = await connection.channel()
        await channel.declare_queue(scratch, durable=True, arguments={"x-queue-type": "quorum"})
        try:
            started = time.perf_counter()
            await fill(settings, count)
            fill_s = time.perf_counter() - started

            started = time.perf_counter()
            summary = await dlq.summary(settings)
            summary_s = time.perf_counter() - started
            assert summary.scanned == count, summary

            started = time.perf_counter()
            result = await dlq.replay(settings, dlq.Filters(), to_queue=scratch, actor="bench")
            replay_s = time.perf_counter() - started
            assert (result.replayed, result.failed) == (count, 0), result
            await wait_depth(channel, scratch, count)
            # acks settle in a quorum queue asynchronously: wait (bounded) for the count
            await wait_depth(channel, names.dead, 0)
        finally:
            await channel.queue_delete(scratch)
            await connection.close()
    return {
        "messages": count,
        "fill_per_s": count / fill_s,
        "summary_seconds": summary_s,
        "summary_per_s": count / summary_s,
        "replay_seconds": replay_s,
        "replay_per_s": count / replay_s,
        "replay_window": dlq.REPLAY_WINDOW,
    }


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20_000, help="dead letters to replay")
    args = parser.parse_args()
    results = asyncio.run(measure(args.messages))
    Bench("dlq_replay").report(
        results,
        [
            ("dead letters", f"{results['messages']:,}"),
            ("read-only pass (summary)", f"{results['summary_per_s']:,.0f} msg/s"),
            ("replay, confirm then ack", f"{results['replay_per_s']:,.0f} msg/s"),
            ("replay wall time", f"{results['replay_seconds']:.1f} s"),
        ],
    )


if __name__ == "__main__":
    main()
