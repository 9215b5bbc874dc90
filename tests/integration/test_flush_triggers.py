"""TriggerType: only what goes on the wire; batch flush triggers recorded on the ledger
chain where an operator sees them (``taskledger audit flushes``), end to end through
RabbitMQ and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import aio_pika
import asyncpg
import pytest

from consumer.core.settings import Settings
from consumer.queries import reads
from consumer.runtime.batcher import FlushTrigger
from contracts import DISPATCH_TRIGGERS, TriggerType, json_schemas
from tests.support.processes import run_cli
from tests.support.traffic import burst, lifecycle, publish

pytestmark = pytest.mark.usefixtures("topology")


def test_the_wire_enum_is_what_goes_on_the_wire() -> None:
    assert {t.value for t in TriggerType} == {"immediate", "capacity", "timeout", "manual"}
    assert frozenset(TriggerType) == DISPATCH_TRIGGERS
    schema = json_schemas()["dispatch.assigned.json"]
    assert json.dumps(schema).count('"end_of_source"') == 0
    assert {t.value for t in FlushTrigger} == {"count", "timeout", "end_of_source"}
    assert "condition" in (TriggerType.__doc__ or "")  # the contract says why not


async def test_flush_triggers_are_recorded_on_the_chain(
    amqp: aio_pika.abc.AbstractConnection, settings: Settings, pool: asyncpg.Pool
) -> None:
    # 7 events per task, batches of 5: full batches flush on count, the rest on linger
    # time or when the burst drains the queue
    settings = settings.model_copy(update={"batch_size": 5})
    messages = [m for _ in range(3) for m in lifecycle(uuid.uuid4(), steps=2)]
    await publish(amqp, settings, messages)
    await burst(settings)

    links = await pool.fetch("SELECT trigger, cardinality(seqs) AS n FROM ledger_chain")
    assert sum(r["n"] for r in links) == len(messages)
    triggers = {r["trigger"] for r in links}
    assert "count" in triggers
    assert triggers <= {"count", "timeout", "end_of_source"}
    assert all(r["n"] == 5 for r in links if r["trigger"] == "count")

    counted = await reads.flushes(pool)
    assert sum(c.events for c in counted) == len(messages)
    assert {c.trigger for c in counted} == triggers
    code, out, err = await run_cli(settings, "audit", "flushes", "--json")
    assert code == 0, err
    assert {r["trigger"]: r["batches"] for r in json.loads(out)} == {
        c.trigger: c.batches for c in counted
    }
    code, _, err = await run_cli(settings, "audit", "flushes", "--since", "yesterday-ish")
    assert code == 2 and len(err.strip().splitlines()) == 1
