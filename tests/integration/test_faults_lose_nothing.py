"""Faults that used to lose, poison or hide events, through real RabbitMQ and PostgreSQL.

- the database refuses our login or the database is missing: the batch is held (nothing
  acked, nothing dead-lettered) and lands once the URL is fixed;
- a header table nested thousands of levels deep: the poison alone is dead-lettered
  (reason ``invalid_headers``), every valid event around it lands;
- a batch that keeps hitting the statement timeout while the server answers is bisected:
  the slow event goes its retry way, the rest of the batch lands;
- a background loop that dies takes the service down (non-zero), never half-alive.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from consumer import dlq, outbox
from consumer.audit.handler import AuditHandler
from consumer.broker import H_ERROR, H_REASON, Names, queue_depth
from consumer.core.settings import Settings
from consumer.outbox import OutboxRelay
from consumer.runtime.handler import ServiceContext
from consumer.runtime.service import ServiceCrashed, run_service
from consumer.store import db
from consumer.store.urls import with_database
from contracts import Event, TriggerType
from tests.support.processes import run_cli
from tests.support.traffic import burst, drain_queue, ledger_count, lifecycle, publish, wait_until

pytestmark = pytest.mark.usefixtures("topology")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("fault", ["missing_database", "unknown_user"])
async def test_refused_login_holds_the_batch_until_the_url_is_fixed(
    amqp: aio_pika.abc.AbstractConnection,
    settings: Settings,
    pool: asyncpg.Pool,
    db_url: str,
    fault: str,
) -> None:
    if fault == "missing_database":
        wrong = with_database(db_url, f"tl_missing_{uuid.uuid4().hex[:8]}")
    else:
        wrong = db_url.replace("postgres@", "tl_no_such_role@", 1)
        assert wrong != db_url
    broken = settings.model_copy(
        update={"database_url": SecretStr(wrong), "shutdown_timeout_s": 1.0}
    )
    messages = lifecycle(steps=2)
    await publish(amqp, settings, messages)
    names = Names(settings.prefix)
    before = metric("taskledger_db_retries_total", handler="audit")

    stopping = asyncio.Event()
    service = asyncio.create_task(run_service(broken, only="audit", stopping=stopping))
    try:
        await wait_until(
            lambda: _true(metric("taskledger_db_retries_total", handler="audit") - before >= 3),
            timeout=30,
            what="three held retries",
        )
        assert (
            metric("taskledger_db_hold", handler="audit", taskledger_db_hold="misconfigured") == 1
        )
    finally:
        stopping.set()
        await asyncio.wait_for(service, 20)

    channel = await amqp.channel()
    try:
        assert await queue_depth(channel, names.dead) == 0, "nothing may be dead-lettered"
        assert await queue_depth(channel, names.audit) == len(messages), "nothing acked"
        for delay in settings.retry_delays_ms:
            assert await queue_depth(channel, names.retry(names.audit, delay)) == 0
    finally:
        await channel.close()

    await burst(settings)  # the URL fixed, the service restarted
    assert await ledger_count(pool) == len(messages)


async def _true(value: bool) -> bool:
    return value


async def test_header_nested_thousands_deep_is_dead_lettered_alone(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    before, after = lifecycle(steps=1), lifecycle(steps=1)
    deep: dict[str, object] = {"leaf": "x"}
    for _ in range(3000):
        deep = {"n": deep}
    poison_key, poison_body = lifecycle(steps=0)[0]
    channel = await amqp.channel(publisher_confirms=True)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # only to *encode* it here; other clients need no such thing
    try:
        await publish(amqp, settings, before)
        exchange = await channel.get_exchange(Names(settings.prefix).events)
        await exchange.publish(
            aio_pika.Message(poison_body, headers={"x-deep": deep}), routing_key=poison_key
        )
    finally:
        sys.setrecursionlimit(limit)
        await channel.close()
    await publish(amqp, settings, after)

    await burst(settings)

    assert await ledger_count(pool) == len(before) + len(after)
    dead = await drain_queue(amqp, Names(settings.prefix).dead)
    assert len(dead) == 1, [m.headers.get(H_REASON) for m in dead]
    assert dead[0].headers[H_REASON] == "invalid_headers"
    assert "x-deep" in str(dead[0].headers[H_ERROR])
    assert dead[0].body == poison_body
    kept, levels = dead[0].headers["x-deep"], 0
    while isinstance(kept, dict):
        kept, levels = kept["n"], levels + 1
    assert isinstance(kept, bytes | bytearray), "the part past the limit is kept as raw bytes"
    assert 0 < levels <= 64 and kept.endswith(b"leaf" + b"S" + (1).to_bytes(4, "big") + b"x")


class SlowOnMarker(AuditHandler):
    """The audit handler, plus a statement that always runs past the timeout when a batch
    holds the marked task: a deterministically slow batch."""

    def __init__(self, marked: uuid.UUID) -> None:
        self.marked = marked

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        if any(e.task_id == self.marked for e in events):
            await conn.execute("SET LOCAL statement_timeout = '50ms'")
            await conn.execute("SELECT pg_sleep(1)")
        await super().apply(conn, events)


async def test_a_batch_that_keeps_timing_out_is_bisected_not_held_forever(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    slow_task = uuid.uuid4()
    fine = [lifecycle(steps=1) for _ in range(3)]
    slow = lifecycle(slow_task, steps=0)[:1]
    await publish(amqp, settings, [*fine[0], *slow, *fine[1], *fine[2]])
    tuned = settings.model_copy(update={"batch_size": 50, "batch_linger_ms": 200,
                                        "db_retry_max_backoff_s": 0.2})  # fmt: skip
    names = Names(settings.prefix)
    channel = await amqp.channel()
    try:
        for _ in range(3):  # the retry delays (200 ms, 1 s) send it round twice
            await burst(tuned, handlers=[SlowOnMarker(slow_task)], timeout=90)
            dead = await drain_queue(amqp, names.dead)
            if dead:
                break
            await wait_until(lambda: queue_depth(channel, names.audit), timeout=5,
                             what="the retried message to come back")  # fmt: skip
    finally:
        await channel.close()

    assert await ledger_count(pool) == sum(len(f) for f in fine)
    assert [m.headers[H_REASON] for m in dead] == ["retries_exhausted"]
    assert "QueryCanceled" in str(dead[0].headers[H_ERROR]) or "timeout" in str(
        dead[0].headers[H_ERROR]
    )


class DiesInBackground(AuditHandler):
    """The audit handler with a background loop that fails after a moment."""

    def background(self, ctx: ServiceContext) -> Sequence[Callable[[], Awaitable[None]]]:
        async def loop() -> None:
            await asyncio.sleep(0.3)
            raise RuntimeError("timer table is gone")

        return (loop,)


@pytest.mark.parametrize("burst_mode", [False, True])
async def test_a_dead_background_loop_stops_the_whole_service(
    settings: Settings, burst_mode: bool
) -> None:
    with pytest.raises(ServiceCrashed, match="audit loop 0 crashed: RuntimeError: timer table"):
        await asyncio.wait_for(
            run_service(settings, burst=burst_mode, handlers=[DiesInBackground()]), 30
        )


async def test_same_id_with_other_content_or_source_is_an_id_conflict(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    first = lifecycle(steps=0)
    requested_key, requested = first[0]
    taken = orjson.loads(requested)["id"]
    other_task = lifecycle(steps=0)
    approved_key, approved = other_task[1]
    reused = orjson.loads(approved)
    reused["id"] = taken  # another task's approval reusing the first request's id
    other_source = orjson.loads(requested)
    other_source["source"] = "agents/impostor"
    before = metric("taskledger_id_conflicts_total")

    await publish(amqp, settings, [*first, (requested_key, requested)])  # a true re-delivery
    await publish(amqp, settings, [(approved_key, orjson.dumps(reused)),
                                   (requested_key, orjson.dumps(other_source))])  # fmt: skip
    await burst(settings)

    assert await ledger_count(pool) == len(first)
    dead = await drain_queue(amqp, Names(settings.prefix).dead)
    assert sorted(m.headers[H_REASON] for m in dead) == ["id_conflict", "id_conflict"]
    for message in dead:
        error = str(message.headers[H_ERROR])
        assert taken in error and "ledger seq" in error and "task.requested" in error
    assert metric("taskledger_id_conflicts_total") - before == 2


async def test_an_event_no_binding_takes_is_kept_in_the_dead_letters(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names(settings.prefix)
    [(_, body)] = lifecycle(steps=0)[:1]
    await publish(amqp, settings, [("agent.task.requested", body)])  # a typo'd routing key
    channel = await amqp.channel()
    try:
        await wait_until(lambda: queue_depth(channel, names.dead), timeout=10,
                         what="the unroutable event in the dead letters")  # fmt: skip
    finally:
        await channel.close()
    summary = await dlq.summary(settings)
    assert [(g.reason, g.count) for g in summary.groups] == [("unroutable", 1)]
    [letter] = (await dlq.list_dead_letters(settings, dlq.Filters())).items
    assert letter.routing_key == "agent.task.requested"

    # once something binds the key, a replay delivers it there and the dead queue is empty
    channel = await amqp.channel()
    try:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.events, routing_key="agent.#")
        result = await dlq.replay(settings, dlq.Filters())
        assert (result.replayed, result.failed) == (1, 0)
        got = await queue.get(no_ack=True, timeout=5)
        assert got.body == body and got.routing_key == "agent.task.requested"
        assert await queue_depth(channel, names.dead) == 0
    finally:
        await channel.close()
    assert await ledger_count(pool) == 0


async def test_an_unrouted_dispatch_stays_pending_until_a_queue_binds(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names(settings.prefix)
    message = outbox.dispatch_assigned(
        names, task_id=uuid.uuid4(), agent_type="gpu", agent_id=None,
        work_plan={"step": 1}, trigger=TriggerType.CAPACITY,
    )  # fmt: skip
    async with db.transaction(pool) as conn:
        await outbox.enqueue(conn, [message])
    before = metric("taskledger_outbox_unroutable_total", event_type="dispatch.assigned")
    relay = OutboxRelay(settings, pool)
    try:
        assert await relay.drain() == 0, "nothing may be marked sent that no queue took"
        assert await relay.drain() == 0
        row = await pool.fetchrow("SELECT sent_at, attempts, last_error FROM outbox")
        assert row["sent_at"] is None and row["attempts"] == 2
        assert "MessageUnroutable" in row["last_error"]
        assert (
            metric("taskledger_outbox_unroutable_total", event_type="dispatch.assigned") - (before)
            == 2
        )

        channel = await amqp.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.dispatch, routing_key="dispatch.gpu.#")
        assert await relay.drain() == 1
        got = await queue.get(no_ack=True, timeout=5)
        assert got.message_id == str(message.message_id)
        await channel.close()
    finally:
        await relay.close_broker()


@pytest.mark.parametrize(
    "variable,value",
    [("TASKLEDGER_DATABASE_URL", "postgresql://postgres:hunter2@127.0.0.1:abc/db"),
     ("TASKLEDGER_AMQP_URL", "amqp://guest:hunter2@127.0.0.1:99999/"),
     ("TASKLEDGER_DATABASE_URL", "mysql://root:hunter2@127.0.0.1/db")],
)  # fmt: skip
async def test_a_malformed_url_is_one_line_and_exit_3(
    settings: Settings, variable: str, value: str
) -> None:
    code, out, err = await run_cli(settings, "run", "--burst", timeout=60, **{variable: value})
    assert code == 3, (out, err)
    assert err.startswith("error: invalid setting ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "hunter2" not in err + out


async def test_unroutable_outbox_rows_never_hold_back_new_dispatches(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names(settings.prefix)

    def assigned(agent_type: str) -> outbox.Outgoing:
        return outbox.dispatch_assigned(
            names, task_id=uuid.uuid4(), agent_type=agent_type, agent_id=None,
            work_plan={}, trigger=TriggerType.CAPACITY,
        )  # fmt: skip

    async with db.transaction(pool) as conn:
        await outbox.enqueue(conn, [assigned("nobody") for _ in range(5)])
    channel = await amqp.channel()
    relay = OutboxRelay(settings, pool, batch_size=5)  # a batch the stuck rows fill
    try:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(names.dispatch, routing_key="dispatch.infra.#")
        assert await relay.publish_batch() == 0  # all five returned by the broker
        async with db.transaction(pool) as conn:
            await outbox.enqueue(conn, [assigned("infra")])
        assert await relay.publish_batch() == 1, "the new dispatch goes out first"
        assert await queue.get(no_ack=True, timeout=5) is not None
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 5
    finally:
        await relay.close_broker()
        await channel.close()
