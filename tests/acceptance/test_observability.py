"""Metrics on --metrics-port and JSON-line logs, from the real CLI."""

from __future__ import annotations

import socket
import urllib.request

import aio_pika
import asyncpg
import orjson
import pytest

from consumer.core.settings import Settings
from consumer.simulate import poison_messages
from tests.support.processes import Service
from tests.support.traffic import ledger_count, lifecycle, publish, wait_until

pytestmark = pytest.mark.usefixtures("topology")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_metrics_endpoint_and_json_logs(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    import random

    port = _free_port()
    messages = lifecycle(steps=2)
    service = await Service(
        settings, ("--only", "audit", "--metrics-port", str(port), "--log-json")
    ).start()
    try:
        await publish(
            amqp, settings, [*messages, *messages[:2], poison_messages(1, random.Random(1))[0]]
        )
        await wait_until(lambda: _recorded(pool, len(messages)), what="the events recorded")
        text = await wait_for_metrics(port)
        service.terminate()
        assert await service.wait(30) == 0
        log = service.log()
    finally:
        await service.close()

    for name in (
        'taskledger_events_received_total{handler="audit"}',
        'taskledger_events_applied_total{handler="audit"} 6.0',
        'taskledger_events_duplicate_total{handler="audit"} 2.0',
        'taskledger_dead_lettered_total{handler="audit",reason="invalid_json"} 1.0',
        "taskledger_batch_size_bucket",
        "taskledger_batch_flush_total",
        "taskledger_commit_seconds_bucket",
        "taskledger_event_lag_seconds_bucket",
    ):
        assert name in text, name
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines, log
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    actions = {line.get("action") for line in lines}
    assert {"start", "consume", "dead_letter", "stop"} <= actions
    dead = next(line for line in lines if line.get("action") == "dead_letter")
    assert dead["reason"] == "invalid_json" and dead["routing_key"] == "task.approved"


async def wait_for_metrics(port: int) -> str:
    """Scrape until the applied counter shows up (the server starts with the process)."""
    import asyncio

    for _ in range(100):
        try:
            text = await asyncio.to_thread(_scrape, port)
        except OSError:
            text = ""
        if "taskledger_dead_lettered_total{" in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError("metrics never showed the dead letter")


async def _recorded(pool: asyncpg.Pool, n: int) -> bool:
    return await ledger_count(pool) >= n
