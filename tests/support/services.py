"""Finding PostgreSQL and RabbitMQ for the tests.

Order: ``TASKLEDGER_TEST_DATABASE_URL`` / ``TASKLEDGER_TEST_AMQP_URL`` (default: the
local services); if that does not answer and a Docker engine does, a testcontainers
container; otherwise the test fails with a message saying what is missing (never a
silent skip: a suite that needs a service must not pass without it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from consumer.store.urls import asyncpg_dsn, with_database

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"

_containers: list[Any] = []
NAMES: list[str] = []  # every name unique() made this session (broker prefixes among them)
AMQP_URLS: list[str] = []  # the brokers the session used


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 3
        ):
            return True
    except OSError:
        return False


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def _missing(what: str, url: str) -> None:
    pytest.fail(
        f"{what} is not reachable at {url} and no Docker engine answers for testcontainers. "
        f"Start it (see README, 'Running the tests') or point the TASKLEDGER_TEST_* variables at one.",
        pytrace=False,
    )


def postgres_admin_url() -> str:
    """URL of a PostgreSQL server where the tests may create databases."""
    url = os.environ.get("TASKLEDGER_TEST_DATABASE_URL", DEFAULT_PG)
    if _reachable(url, 5432):
        return url
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
        _containers.append(container)
        return str(container.get_connection_url())
    _missing("PostgreSQL", url)
    raise AssertionError  # unreachable


def amqp_url() -> str:
    """URL of a RabbitMQ broker for the tests."""
    url = os.environ.get("TASKLEDGER_TEST_AMQP_URL", DEFAULT_AMQP)
    if _reachable(url, 5672):
        AMQP_URLS.append(url)
        return url
    if _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-alpine")
        container.start()
        _containers.append(container)
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        AMQP_URLS.append(f"amqp://guest:guest@{host}:{port}/")
        return AMQP_URLS[-1]
    _missing("RabbitMQ", url)
    raise AssertionError  # unreachable


def stop_containers() -> None:
    """Stop whatever testcontainers the session started."""
    while _containers:
        with suppress(Exception):
            _containers.pop().stop()


def unique(prefix: str) -> str:
    """A short random name (databases, queue prefixes), remembered for the session-end check."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    NAMES.append(name)
    return name


async def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (optionally from ``template``); return its URL."""
    conn = await asyncpg.connect(asyncpg_dsn(with_database(admin_url, "postgres")))
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name``, ending its connections."""
    conn = await asyncpg.connect(asyncpg_dsn(with_database(admin_url, "postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run(coro: Any) -> Any:
    """Run a coroutine from synchronous (session) fixture code."""
    return asyncio.run(coro)


def run_apart(coro: Any) -> Any:
    """Run a coroutine on a new event loop in another thread: safe from synchronous code
    while a test's loop is this thread's current loop (``asyncio.run`` would unset it)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
