"""CloudEvents interop through real RabbitMQ and PostgreSQL, with the official Python SDK.

Events are built with the SDK (``cloudevents.core``) and turned into messages by its
RabbitMQ binding (structured mode, binary mode with ``ce-`` headers) and its AMQP binding
(binary mode with ``cloudEvents_`` application properties, sent as AMQP headers);
aio-pika only carries them. The ledger must hold a binary event exactly as its
structured twin (so a replay of one is a duplicate of the other), refuse what the
contract refuses in either mode, and what taskledger sends must be read back by the
SDK's auto-detecting reader and match the exported schema.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import jsonschema_rs
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from cloudevents.core.bindings import amqp as ce_amqp
from cloudevents.core.bindings import rabbitmq as ce_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from consumer import outbox
from consumer.broker import H_REASON, Names
from consumer.core.settings import Settings
from consumer.outbox import OutboxRelay
from consumer.store import db
from contracts import SCHEMA_DIR, DeadLetterReason, DecodeError, EventType, TriggerType, decode
from contracts.examples import EXAMPLES, example_event
from tests.support.dead_letters import drain
from tests.support.traffic import burst


def sdk_event(event_type: EventType, *, task_id: uuid.UUID, **extra: Any) -> CloudEvent:
    """A contract v1 event built with the SDK (``schemaversion`` is an extension)."""
    data = copy.deepcopy(EXAMPLES[event_type])
    attributes: dict[str, Any] = {
        "type": event_type.value,
        "source": "agents/infra-01",
        "id": str(uuid.uuid4()),
        "subject": str(task_id),
        "time": datetime.now(UTC),
        "schemaversion": 1,
        "datacontenttype": "application/json",
        **extra,
    }
    return CloudEvent(attributes=attributes, data=data)


async def send(
    amqp: AbstractConnection,
    settings: Settings,
    routing_key: str,
    body: bytes,
    *,
    headers: dict[str, Any] | None = None,
    content_type: str | None = None,
) -> None:
    """aio-pika as the transport: publish with a confirm to the events exchange."""
    channel = await amqp.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(Names(settings.prefix).events)
        message = aio_pika.Message(body, headers=headers, content_type=content_type)
        await exchange.publish(message, routing_key=routing_key, mandatory=True)
    finally:
        await channel.close()


async def send_rabbitmq(
    amqp: AbstractConnection, settings: Settings, message: ce_rabbitmq.RabbitMQMessage, key: str
) -> None:
    await send(amqp, settings, key, message.body, headers=dict(message.headers),
               content_type=message.content_type)  # fmt: skip


async def envelopes(pool: asyncpg.Pool) -> dict[str, Any]:
    rows = await pool.fetch("SELECT event_id, envelope::text AS envelope FROM event_ledger")
    return {str(r["event_id"]): orjson.loads(r["envelope"]) for r in rows}


async def test_structured_and_binary_twins_are_one_event(
    amqp: AbstractConnection, topology: AbstractChannel, settings: Settings, pool: asyncpg.Pool
) -> None:
    task = uuid.uuid4()
    started = sdk_event(EventType.TASK_STARTED, task_id=task)
    step = sdk_event(EventType.TASK_STEP, task_id=task)
    structured = ce_rabbitmq.to_structured_event(started)
    binary = ce_rabbitmq.to_binary_event(started)
    assert binary.headers["ce-schemaversion"] == "1"  # every header is a string
    assert structured.content_type == "application/cloudevents+json"

    requested = sdk_event(EventType.TASK_REQUESTED, task_id=task, source="orchestrator")

    # the structured original, its binary replay, and binary-only events
    await send_rabbitmq(amqp, settings, ce_rabbitmq.to_binary_event(requested), "task.requested")
    await send_rabbitmq(amqp, settings, structured, "task.started")
    await send_rabbitmq(amqp, settings, binary, "task.started")
    await send_rabbitmq(amqp, settings, ce_rabbitmq.to_binary_event(step), "task.step")
    await burst(settings)

    stored = await envelopes(pool)
    assert set(stored) == {requested.get_id(), started.get_id(), step.get_id()}
    assert stored[started.get_id()] == orjson.loads(structured.body)
    # the binary-only event is stored as the SDK would have written it in structured mode
    assert stored[step.get_id()] == orjson.loads(ce_rabbitmq.to_structured_event(step).body)
    assert stored[step.get_id()]["schemaversion"] == 1
    assert await drain(amqp, Names(settings.prefix).dead) == []  # a duplicate, no id_conflict
    # projected like any event: the binary step is in the task's execution log
    row = await pool.fetchrow("SELECT status, agent_id FROM tasks WHERE task_id = $1", task)
    assert (row["status"], row["agent_id"]) == ("executing", "infra-01")
    logs = await pool.fetch("SELECT step_number FROM execution_logs WHERE task_id = $1", task)
    assert [r["step_number"] for r in logs] == [EXAMPLES[EventType.TASK_STEP]["step_number"]]


async def test_amqp_binding_application_properties(
    amqp: AbstractConnection, topology: AbstractChannel, settings: Settings, pool: asyncpg.Pool
) -> None:
    task = uuid.uuid4()
    # the AMQP binding writes `time` as an AMQP timestamp in milliseconds: whole ms here
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    event = sdk_event(EventType.TASK_APPROVED, task_id=task, time=when)
    message = ce_amqp.to_binary(event, JSONFormat())
    assert message.application_properties["cloudEvents_schemaversion"] == 1
    await send(amqp, settings, "task.approved", message.application_data,
               headers=dict(message.application_properties),
               content_type=message.properties["content-type"])  # fmt: skip
    # the `cloudEvents:` spelling, strings only
    colon = sdk_event(EventType.TASK_APPROVED, task_id=uuid.uuid4())
    headers = {f"cloudEvents:{k}": v for k, v in ce_rabbitmq.to_binary_event(colon).headers.items()}
    headers = {k.replace("cloudEvents:ce-", "cloudEvents:"): v for k, v in headers.items()}
    await send(amqp, settings, "task.approved", orjson.dumps(colon.get_data()), headers=headers,
               content_type="application/json; charset=utf-8")  # fmt: skip
    await burst(settings)

    stored = await envelopes(pool)
    assert stored[event.get_id()]["time"] == "2026-01-02T03:04:05.678000Z"
    assert stored[event.get_id()]["schemaversion"] == 1
    assert stored[event.get_id()]["data"] == EXAMPLES[EventType.TASK_APPROVED]
    assert stored[colon.get_id()]["datacontenttype"] == "application/json; charset=utf-8"
    assert await drain(amqp, Names(settings.prefix).dead) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ce-schemaversion": "2"}, DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION),
        ({"ce-schemaversion": "one"}, DeadLetterReason.SCHEMA_VIOLATION),
        ({"ce-type": "task.exploded"}, DeadLetterReason.UNKNOWN_EVENT_TYPE),
        ({"ce-subject": "not-a-uuid"}, DeadLetterReason.SCHEMA_VIOLATION),
        ({"ce-time": "2026-01-02 03:04:05"}, DeadLetterReason.SCHEMA_VIOLATION),
    ],
)
async def test_binary_mode_is_as_strict_as_structured(
    amqp: AbstractConnection,
    topology: AbstractChannel,
    settings: Settings,
    pool: asyncpg.Pool,
    change: dict[str, str],
    reason: DeadLetterReason,
) -> None:
    message = ce_rabbitmq.to_binary_event(sdk_event(EventType.TASK_STARTED, task_id=uuid.uuid4()))
    headers = {**message.headers, **change}
    await send(amqp, settings, "task.started", message.body, headers=headers,
               content_type=message.content_type)  # fmt: skip
    await burst(settings)
    assert await envelopes(pool) == {}
    [dead] = await drain(amqp, Names(settings.prefix).dead)
    assert dead.headers[H_REASON] == reason.value
    assert dead.body == message.body  # the message as it came, not the converted form


def test_binary_body_that_is_not_json_is_invalid_json() -> None:
    message = ce_rabbitmq.to_binary_event(sdk_event(EventType.TASK_STARTED, task_id=uuid.uuid4()))
    with pytest.raises(DecodeError) as caught:
        decode(b"{nope", "task.started", headers=message.headers, content_type="application/json")
    assert caught.value.reason == DeadLetterReason.INVALID_JSON


async def test_what_we_send_reads_back_with_the_sdk(
    topology: AbstractChannel, settings: Settings, pool: asyncpg.Pool
) -> None:
    queue = await topology.declare_queue(exclusive=True)
    await queue.bind(Names(settings.prefix).dispatch, routing_key="#")
    task = uuid.uuid4()
    sent = outbox.dispatch_assigned(
        Names(settings.prefix), task_id=task, agent_type="infra", agent_id="infra-01",
        work_plan={"steps": ["pull", "apply"]}, trigger=TriggerType.CAPACITY,
    )  # fmt: skip
    async with db.transaction(pool) as conn:
        await outbox.enqueue(conn, [sent])
    relay = OutboxRelay(settings, pool)
    try:
        assert await relay.drain() == 1
    finally:
        await relay.close_broker()
    message = await queue.get(no_ack=True, timeout=10)
    assert message.content_type == "application/cloudevents+json"

    read = ce_rabbitmq.from_rabbitmq_event(
        ce_rabbitmq.RabbitMQMessage(
            headers=dict(message.headers or {}),  # type: ignore[arg-type]
            content_type=message.content_type,
            body=message.body,
        )
    )
    assert read.get_type() == "dispatch.assigned"
    assert read.get_id() == str(sent.message_id)
    assert read.get_subject() == str(task)
    assert read.get_data() == {
        "task_id": str(task), "agent_id": "infra-01",
        "work_plan": {"steps": ["pull", "apply"]}, "trigger": "capacity",
    }  # fmt: skip
    schema = json.loads((SCHEMA_DIR / "dispatch.assigned.json").read_text())
    as_written = json.loads(JSONFormat().write(read))
    jsonschema_rs.validator_for(schema).validate(as_written)
    assert decode(JSONFormat().write(read)).type == EventType.DISPATCH_ASSIGNED


def test_stray_ce_headers_without_specversion_leave_structured_mode_alone() -> None:
    body = example_event(EventType.TASK_APPROVED)
    event = decode(body, "task.approved", headers={"ce-traceparent": "00-abc"},
                   content_type="application/json")  # fmt: skip
    assert event.body == body


def test_an_attribute_named_twice_is_refused() -> None:
    message = ce_rabbitmq.to_binary_event(sdk_event(EventType.TASK_STARTED, task_id=uuid.uuid4()))
    headers = {**message.headers, "cloudEvents_id": str(uuid.uuid4())}
    with pytest.raises(DecodeError) as caught:
        decode(message.body, "task.started", headers=headers, content_type="application/json")
    assert caught.value.reason == DeadLetterReason.SCHEMA_VIOLATION
    assert "twice" in caught.value.message
