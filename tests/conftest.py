"""Shared fixtures: real PostgreSQL and RabbitMQ, a migrated database per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest

from consumer import db
from consumer.broker import declare_topology, delete_topology
from consumer.migrate import upgrade
from consumer.settings import Settings
from tests.support import services

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server where the tests may create databases."""
    yield services.postgres_admin_url()
    services.stop_containers()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """A RabbitMQ broker."""
    return services.amqp_url()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to head once per session; tests get clones of it."""
    name = services.unique("tl_tpl")
    url = services.run(services.create_database(pg_admin_url, name))
    upgrade(url)
    yield name
    services.run(services.drop_database(pg_admin_url, name))


@pytest.fixture
async def db_url(pg_admin_url: str, template_db: str) -> AsyncIterator[str]:
    """URL of a fresh database cloned from the migrated template, dropped afterwards."""
    name = services.unique("tl_t")
    url = await services.create_database(pg_admin_url, name, template=template_db)
    yield url
    await services.drop_database(pg_admin_url, name)


@pytest.fixture
async def empty_db_url(pg_admin_url: str) -> AsyncIterator[str]:
    """URL of a fresh, empty (unmigrated) database, dropped afterwards."""
    name = services.unique("tl_e")
    url = await services.create_database(pg_admin_url, name)
    yield url
    await services.drop_database(pg_admin_url, name)


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool (owner role) on the test database."""
    p = await db.create_pool(db_url, min_size=1, max_size=4)
    yield p
    await p.close()


@pytest.fixture
def prefix() -> str:
    """A random exchange/queue prefix, so runs never disturb each other."""
    return services.unique("tlq")


@pytest.fixture
def settings(db_url: str, amqp_url: str, prefix: str) -> Settings:
    """Settings pointing at this test's database, broker and prefix."""
    return Settings(
        database_url=db_url,
        amqp_url=amqp_url,
        prefix=prefix,
        batch_linger_ms=5,
        retry_delays_ms=[200, 1000],
        shutdown_timeout_s=10,
    )


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A connection to the broker for the test's own publishing and inspection."""
    conn = await aio_pika.connect(amqp_url)
    yield conn
    await conn.close()


@pytest.fixture
async def topology(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings
) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """The declared topology for this test's prefix (deleted afterwards); a confirm channel."""
    channel = await amqp.channel()
    await declare_topology(channel, settings)
    yield channel
    cleanup = await amqp.channel()
    await delete_topology(cleanup, settings)
    await cleanup.close()


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Cancel asyncio tasks a test left behind, so they cannot leak into the next one."""
    before = asyncio.all_tasks()
    yield
    leftover = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    for task in leftover:
        task.cancel()
    if leftover:
        await asyncio.gather(*leftover, return_exceptions=True)
