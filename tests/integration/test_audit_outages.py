"""PostgreSQL or RabbitMQ going away: nothing lost, nothing acked early, resume by itself.

The faults are injected through a TCP proxy the test starts in front of the service;
the machine's PostgreSQL and RabbitMQ are never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from consumer.broker import Names, queue_depth
from consumer.core.settings import Settings
from tests.support.proxy import Proxy
from tests.support.traffic import drain_queue, ledger_count, lifecycle, publish, running, wait_until

pytestmark = pytest.mark.usefixtures("topology")


def _via(url: str, proxy: Proxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def _proxy_for(url: str, default_port: int) -> Proxy:
    parts = urlsplit(url)
    return await Proxy(parts.hostname or "127.0.0.1", parts.port or default_port).start()


@pytest.fixture
async def pg_proxy(db_url: str) -> AsyncIterator[Proxy]:
    proxy = await _proxy_for(db_url, 5432)
    yield proxy
    await proxy.stop()


@pytest.fixture
async def amqp_proxy(amqp_url: str) -> AsyncIterator[Proxy]:
    proxy = await _proxy_for(amqp_url, 5672)
    yield proxy
    await proxy.stop()


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_postgres_down_holds_batches_and_resumes(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool, pg_proxy: Proxy
) -> None:
    proxied = settings.model_copy(update={"database_url": SecretStr(_via(settings.dsn, pg_proxy)),
                                          "db_retry_max_backoff_s": 0.3})  # fmt: skip
    first, second = lifecycle(steps=2), lifecycle(steps=2)
    retries_before = _metric("taskledger_db_retries_total", handler="audit")
    async with running(proxied):
        await publish(amqp, settings, first)
        await wait_until(lambda: _count_is(pool, len(first)), what="the first task recorded")
        pg_proxy.cut()
        await publish(amqp, settings, second)
        await wait_until(
            lambda: _retried_since(retries_before), what="the consumer to hold and retry its batch"
        )
        # nothing of the second task was recorded, acknowledged or dead-lettered meanwhile
        assert await ledger_count(pool) == len(first)
        channel = await amqp.channel()
        assert await queue_depth(channel, Names(settings.prefix).dead) == 0
        pg_proxy.restore()
        await wait_until(lambda: _count_is(pool, len(first) + len(second)), what="recovery")
    assert await drain_queue(amqp, Names(settings.prefix).dead) == []
    channel = await amqp.channel()
    assert await queue_depth(channel, Names(settings.prefix).audit) == 0


async def test_postgres_slow_still_records_everything(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool, pg_proxy: Proxy
) -> None:
    pg_proxy.restore(latency_s=0.05)
    proxied = settings.model_copy(update={"database_url": SecretStr(_via(settings.dsn, pg_proxy))})
    messages = [m for _ in range(5) for m in lifecycle(steps=3)]
    async with running(proxied):
        await publish(amqp, settings, messages)
        await wait_until(lambda: _count_is(pool, len(messages)), timeout=60, what="slow commits")
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'") == 5


async def test_broker_connection_cut_reconnects_and_absorbs_redeliveries(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool, amqp_proxy: Proxy
) -> None:
    proxied = settings.model_copy(update={"amqp_url": SecretStr(_via(settings.amqp, amqp_proxy))})
    batches = [[m for _ in range(4) for m in lifecycle(steps=2)] for _ in range(3)]
    expected = 0
    reconnects_before = _metric("taskledger_broker_reconnects_total", handler="audit")
    async with running(proxied):
        for messages in batches:
            await publish(amqp, settings, messages)
            expected += len(messages)
            amqp_proxy.cut()  # mid-stream: acks in flight are lost, deliveries come again
            await asyncio.sleep(0.05)
            amqp_proxy.restore()
            await wait_until(lambda n=expected: _count_is(pool, n), timeout=45, what="reconnect")
    assert _metric("taskledger_broker_reconnects_total", handler="audit") > reconnects_before
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'") == 12
    assert await drain_queue(amqp, Names(settings.prefix).dead) == []


async def _count_is(pool: asyncpg.Pool, n: int) -> bool:
    return await ledger_count(pool) == n


async def _retried_since(before: float) -> bool:
    return _metric("taskledger_db_retries_total", handler="audit") > before
