"""Any arrival order, with any duplicates, ends in the rows of the natural order.

Shuffled, duplicated sequences for many tasks go through real RabbitMQ into a fresh
database each time, and the projection is compared with the one the natural order gave.
"""

from __future__ import annotations

import random
import uuid

import aio_pika
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from consumer.broker import declare_topology, delete_topology
from consumer.core.settings import Settings
from consumer.store import db
from tests.support import services
from tests.support.traffic import Message, burst, lifecycle, publish, snapshot

TERMINALS = ("completed", "failed", "rejected", "none")


def _tasks(seed: int, n: int) -> list[list[Message]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        terminal = TERMINALS[i % len(TERMINALS)]
        events = lifecycle(uuid.UUID(int=rng.getrandbits(128)), steps=rng.randint(0, 4),
                           terminal=terminal if terminal != "none" else "completed")  # fmt: skip
        if terminal == "none":
            events = events[:-1]  # still executing
        out.append(events)
    return out


async def _project(
    pg_admin_url: str, template: str, amqp_url: str, messages: list[Message]
) -> dict:
    name = services.unique("tl_h")
    url = await services.create_database(pg_admin_url, name, template=template)
    settings = Settings(database_url=url, amqp_url=amqp_url, prefix=services.unique("tlh"),
                        batch_size=int(random.Random(len(messages)).choice((1, 7, 50))),
                        batch_linger_ms=2)  # fmt: skip
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, settings)
        await publish(connection, settings, messages)
        await burst(settings)
        pool = await db.create_pool(url)
        try:
            return await snapshot(pool)
        finally:
            await pool.close()
    finally:
        channel = await connection.channel()
        await delete_topology(channel, settings)
        await connection.close()
        await services.drop_database(pg_admin_url, name)


TASKS = _tasks(seed=11, n=24)
NATURAL: list[Message] = [m for task in TASKS for m in task]


@hsettings(max_examples=6, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
async def test_any_order_with_duplicates_gives_the_natural_projection(
    data: st.DataObject, pg_admin_url: str, template_db: str, amqp_url: str
) -> None:
    # the expected rows: natural order, once each (computed once, cached on the function)
    cache = test_any_order_with_duplicates_gives_the_natural_projection.__dict__
    if "expected" not in cache:
        cache["expected"] = await _project(pg_admin_url, template_db, amqp_url, NATURAL)
    expected = cache["expected"]
    assert {t["status"] for t in expected["tasks"]} == {
        "completed",
        "failed",
        "rejected",
        "executing",
    }

    order = data.draw(st.permutations(range(len(NATURAL))), label="order")
    dupes = data.draw(st.lists(st.integers(0, len(NATURAL) - 1), max_size=40), label="duplicates")
    shuffled = [NATURAL[i] for i in order]
    for i, original in enumerate(dupes):
        shuffled.insert((i * 7919) % (len(shuffled) + 1), NATURAL[original])

    assert await _project(pg_admin_url, template_db, amqp_url, shuffled) == expected
