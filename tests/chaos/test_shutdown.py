"""SIGTERM in the middle of a PostgreSQL outage: a bounded, clean stop.

DESIGN §4 (audit consumer, 7): on SIGTERM the consumer stops taking deliveries, finishes
what it can within ``shutdown_timeout_s`` and exits 0. While PostgreSQL is away, what it
holds cannot be committed: it must give it up unacknowledged (the broker delivers it
again to whoever consumes next) and still exit within the budget, not retry forever.
"""

from __future__ import annotations

import aio_pika
import asyncpg
import pytest
from pydantic import SecretStr

from consumer.core.settings import Settings
from tests.chaos.scenarios import proxy_for, via
from tests.support.processes import Service
from tests.support.traffic import burst, ledger_count, lifecycle, publish, wait_until

pytestmark = pytest.mark.usefixtures("topology")

BUDGET_S = 2.0


async def test_sigterm_during_a_postgres_outage_stops_within_the_budget(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    proxy = await proxy_for(settings.dsn, 5432)
    try:
        proxied = settings.model_copy(update={"database_url": SecretStr(via(settings.dsn, proxy))})
        env = {
            "TASKLEDGER_SHUTDOWN_TIMEOUT_S": str(BUDGET_S),
            "TASKLEDGER_DB_RETRY_MAX_BACKOFF_S": "0.2",
        }
        service = await Service(proxied, ("--only", "audit"), env).start()
        try:
            await wait_until(lambda: _has(service, "action=consume "), what="consuming")
            proxy.cut()
            messages = lifecycle(steps=1)
            await publish(amqp, settings, messages)
            await wait_until(lambda: _has(service, "action=db_retry"), what="a held batch")
            service.terminate()
            code = await service.wait(BUDGET_S + 8)
            assert code == 0, service.log()[-3000:]
        finally:
            await service.close()
    finally:
        await proxy.stop()
    # nothing was lost: what it gave up is delivered again
    await burst(settings)
    assert await ledger_count(pool) == len(messages)


async def _has(service: Service, marker: str) -> bool:
    assert service.proc is not None and service.proc.returncode is None, service.log()[-3000:]
    return marker in service.log()
