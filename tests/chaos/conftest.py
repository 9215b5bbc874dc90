"""Fixtures of the chaos suite and the summary table printed at the end of the run."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from consumer.broker import Names
from consumer.core.settings import Settings
from tests.chaos import report
from tests.chaos.scenarios import Chaos


@pytest.fixture
async def chaos(
    request: pytest.FixtureRequest,
    settings: Settings,
    pool: asyncpg.Pool,
    amqp: aio_pika.abc.AbstractConnection,
    topology: AbstractChannel,
    pg_admin_url: str,
    template_db: str,
    amqp_url: str,
) -> AsyncIterator[Chaos]:
    """A scenario driver on this test's database and prefix, with a queue bound to
    ``dispatch.#`` that sees every ``dispatch.assigned`` (as an agent fleet would), and one
    bound to ``recovery.#`` that takes the recovery requests the fleet would answer (every
    publish is mandatory: without a taker they would stay pending in the outbox)."""
    dispatch = await topology.declare_queue(exclusive=True)
    await dispatch.bind(Names(settings.prefix).dispatch, routing_key="dispatch.#")
    recovery = await topology.declare_queue(exclusive=True)
    await recovery.bind(Names(settings.prefix).dispatch, routing_key="recovery.#")
    seed = sum(map(ord, request.node.name))  # repeatable fault timing per scenario and form
    driver = Chaos(settings=settings, pool=pool, amqp=amqp, dispatch=dispatch,
                   pg_admin_url=pg_admin_url, template_db=template_db, amqp_url=amqp_url,
                   seed=seed, rng=random.Random(seed))  # fmt: skip
    try:
        yield driver
    finally:
        await driver.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the chaos table; after a complete full-length run, write docs/RELIABILITY.md."""
    if not report.RESULTS:
        return
    terminalreporter.write_sep("=", "chaos summary")
    terminalreporter.write_line(report.machine())
    terminalreporter.write_line(report.table(report.RESULTS))
    rows = report.complete(report.RESULTS)
    if rows is not None:
        report.write_doc(rows)
        terminalreporter.write_line(f"written to {report.DOC}")
