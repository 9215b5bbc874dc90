"""Shared fixtures: real PostgreSQL and RabbitMQ, a migrated database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest

from consumer.broker import Names, declare_topology
from consumer.core.settings import Settings
from consumer.store import db
from consumer.store.migrate import upgrade
from tests.support import broker, services
from tests.support.seed import Seeded, SeededDb, seed_url

pytest_plugins = ["tests.support.leaks"]

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LEFTOVERS: list[str] = []  # what pytest_sessionfinish found in the broker


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
async def prefix(request: pytest.FixtureRequest, amqp_url: str) -> AsyncIterator[str]:
    """A random exchange/queue prefix, so runs never disturb each other. Every queue and
    exchange of it is deleted afterwards, whoever declared them (fixtures, the API, a
    ``taskledger run`` subprocess with its own retry delays)."""
    name = services.unique("tlq")
    yield name
    delays = broker.delays_of(request.node.funcargs.values())
    await broker.delete_prefix(amqp_url, name, delays)


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
) -> aio_pika.abc.AbstractChannel:
    """The declared topology for this test's prefix (the ``prefix`` fixture deletes it)."""
    channel = await amqp.channel()
    await declare_topology(channel, settings)
    return channel


@pytest.fixture
async def control_queue(
    topology: aio_pika.abc.AbstractChannel, settings: Settings
) -> aio_pika.abc.AbstractQueue:
    """A private queue bound to ``<prefix>.events`` with ``control.#``."""
    queue = await topology.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(Names(settings.prefix).events, routing_key="control.#")
    return queue


@pytest.fixture(scope="module")
def seeded_db(pg_admin_url: str, template_db: str) -> Iterator[SeededDb]:
    """One database holding the seed (tests/support/seed.py) per module: the read-only
    tests of the module share it (none may write)."""
    name = services.unique("tl_seed")
    url = services.run(services.create_database(pg_admin_url, name, template=template_db))
    yield SeededDb(url, services.run(seed_url(url)))
    services.run(services.drop_database(pg_admin_url, name))


@pytest.fixture
def seeded(seeded_db: SeededDb) -> Seeded:
    """The ids of the seeded tasks by role."""
    return seeded_db.seeded


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if queues or exchanges of this session's test prefixes remain (and
    delete them, so the broker is clean for the next run).

    Under pytest-xdist each worker checks the names it made and hands what it found to
    the controller (``workeroutput``), which fails the run (:func:`pytest_testnodedown`).
    """
    found = _leftovers()
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        worker_output["taskledger_leftovers"] = found
        return
    LEFTOVERS.extend(found)
    if LEFTOVERS and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _leftovers() -> list[str]:
    """The queues and exchanges of this process's test prefixes still in the broker
    (deleted on the way)."""
    if not services.AMQP_URLS or not services.NAMES:
        return []
    url = services.AMQP_URLS[0]
    queues, exchanges = services.run_apart(broker.leftovers(url, services.NAMES))
    if not queues and not exchanges:
        return []
    services.run_apart(broker.delete_names(url, queues, exchanges))
    return [*(f"queue {q}" for q in queues), *(f"exchange {e}" for e in exchanges)]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """Collect what an xdist worker left in the broker (see :func:`pytest_sessionfinish`)."""
    LEFTOVERS.extend(getattr(node, "workeroutput", {}).get("taskledger_leftovers", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name what the session left in the broker (see :func:`pytest_sessionfinish`)."""
    if LEFTOVERS:
        terminalreporter.write_sep("=", "ERROR: the tests left these in RabbitMQ", red=True)
        for line in LEFTOVERS:
            terminalreporter.write_line(line)
